/**
 * Service errors: one class per kind, each with a stable `code`, mapped to a
 * gRPC status in exactly one place (grpc-status.ts). Engine errors are mapped
 * there too.
 */

export type ServiceErrorCode =
  | "INVALID_REQUEST"
  | "SESSION_NOT_FOUND"
  | "LIMIT_EXCEEDED"
  | "OWNER_UNAVAILABLE"
  | "SHUTTING_DOWN"
  | "DEADLINE";

export class ServiceError extends Error {
  override readonly name: string = "ServiceError";
  constructor(
    readonly code: ServiceErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The request is malformed: empty or oversized input, bad ids, bad options. */
export class InvalidRequestError extends ServiceError {
  override readonly name = "InvalidRequestError";
  constructor(message: string, options?: { cause?: unknown }) {
    super("INVALID_REQUEST", message, options);
  }
}

export class SessionMissingError extends ServiceError {
  override readonly name = "SessionMissingError";
  constructor(session: string) {
    super("SESSION_NOT_FOUND", `no session "${session}"`);
  }
}

/** A queue, session count or size limit was hit. */
export class LimitExceededError extends ServiceError {
  override readonly name = "LimitExceededError";
  constructor(message: string) {
    super("LIMIT_EXCEEDED", message);
  }
}

/** The session's owner is moving (rebalance) or unreachable; retry. */
export class OwnerUnavailableError extends ServiceError {
  override readonly name = "OwnerUnavailableError";
  constructor(
    message: string,
    readonly retryAfterMs = 500,
  ) {
    super("OWNER_UNAVAILABLE", message);
  }
}

export class ShuttingDownError extends ServiceError {
  override readonly name = "ShuttingDownError";
  constructor() {
    super("SHUTTING_DOWN", "the worker is shutting down");
  }
}
