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
  | "DEADLINE"
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED";

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
  constructor(
    message: string,
    /** Which limit (a metric label): sessions, queue, input_tokens, new_tokens, rate, streams, ... */
    readonly limit = "other",
  ) {
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

/** The call carries no credentials, or credentials that do not verify. */
export class UnauthenticatedError extends ServiceError {
  override readonly name = "UnauthenticatedError";
  constructor(message: string) {
    super("UNAUTHENTICATED", message);
  }
}

/** The caller is known but may not do this (a read-only token writing, a client posing as a worker). */
export class PermissionDeniedError extends ServiceError {
  override readonly name = "PermissionDeniedError";
  constructor(message: string) {
    super("PERMISSION_DENIED", message);
  }
}
