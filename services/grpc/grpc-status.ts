/**
 * The one place that turns errors into gRPC statuses. Service errors
 * (worker/errors.ts) and engine errors (engine/errors.ts) are mapped by their
 * `code` through exhaustive tables, so a new code does not compile until it
 * has a status here. Only a failure nobody anticipated becomes INTERNAL;
 * nothing known becomes UNKNOWN.
 */
import { Metadata, status as Status } from "@grpc/grpc-js";

import { EngineError, type EngineErrorCode } from "../engine/errors.js";
import { OwnerUnavailableError, ServiceError, type ServiceErrorCode } from "../worker/errors.js";

/** Trailer with a suggested wait before retrying an UNAVAILABLE call, in milliseconds. */
export const RETRY_AFTER_KEY = "retry-after-ms";

const SERVICE_STATUS: Record<ServiceErrorCode, Status> = {
  INVALID_REQUEST: Status.INVALID_ARGUMENT,
  SESSION_NOT_FOUND: Status.NOT_FOUND,
  LIMIT_EXCEEDED: Status.RESOURCE_EXHAUSTED,
  OWNER_UNAVAILABLE: Status.UNAVAILABLE,
  SHUTTING_DOWN: Status.UNAVAILABLE,
  DEADLINE: Status.DEADLINE_EXCEEDED,
  UNAUTHENTICATED: Status.UNAUTHENTICATED,
  PERMISSION_DENIED: Status.PERMISSION_DENIED,
};

const ENGINE_STATUS: Record<EngineErrorCode, Status> = {
  // A model that fails to load is a fault of the worker, not of the request.
  E_IO: Status.INTERNAL,
  E_MODEL_CONFIG: Status.INTERNAL,
  E_MODEL_FORMAT: Status.INTERNAL,
  E_MISSING_TENSOR: Status.INTERNAL,
  E_TENSOR_SHAPE: Status.INTERNAL,
  E_UNSUPPORTED_MODEL: Status.INTERNAL,
  E_TOKENIZER: Status.INTERNAL,
  E_BACKEND_UNAVAILABLE: Status.INTERNAL,
  E_INTERNAL: Status.INTERNAL,
  E_INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
  E_SESSION_NOT_FOUND: Status.NOT_FOUND,
  // The snapshot bytes are damaged: the session's state is lost.
  E_SNAPSHOT_CORRUPT: Status.DATA_LOSS,
  // A snapshot from another model or format version: a deployment fault.
  E_SNAPSHOT_MISMATCH: Status.INTERNAL,
  E_CAPACITY: Status.RESOURCE_EXHAUSTED,
  E_OUT_OF_MEMORY: Status.RESOURCE_EXHAUSTED,
  // Transient: the engine is busy or being closed (shutdown); another try may succeed.
  E_BUSY: Status.UNAVAILABLE,
  E_DISPOSED: Status.UNAVAILABLE,
};

/** A gRPC status as grpc-js handlers take it (callback error, stream 'error'). */
export interface GrpcFailure {
  code: Status;
  details: string;
  metadata: Metadata;
}

/** grpc-js's client-side error (e.g. from a call forwarded to the owner): its status is kept. */
function carriesGrpcStatus(err: unknown): err is Error & GrpcFailure {
  if (!(err instanceof Error)) return false;
  const e = err as Error & Partial<GrpcFailure>;
  return typeof e.code === "number" && Status[e.code] !== undefined && typeof e.details === "string" && e.metadata instanceof Metadata;
}

export function toGrpcFailure(err: unknown): GrpcFailure {
  const metadata = new Metadata();
  if (err instanceof ServiceError) {
    if (err instanceof OwnerUnavailableError) metadata.set(RETRY_AFTER_KEY, String(err.retryAfterMs));
    return { code: SERVICE_STATUS[err.code], details: err.message, metadata };
  }
  if (err instanceof EngineError) return { code: ENGINE_STATUS[err.code] ?? Status.INTERNAL, details: err.message, metadata };
  if (carriesGrpcStatus(err)) return { code: err.code, details: err.details, metadata: err.metadata };
  if (err instanceof Error && err.name === "AbortError") return { code: Status.CANCELLED, details: "the call was cancelled", metadata };
  if (err instanceof Error && err.name === "TimeoutError") return { code: Status.DEADLINE_EXCEEDED, details: "deadline exceeded", metadata };
  const message = err instanceof Error ? err.message : String(err);
  return { code: Status.INTERNAL, details: `internal error: ${message}`, metadata };
}

/** The retry hint of a failure, in milliseconds; 0 when it has none. */
export function retryAfterMs(failure: { metadata?: Metadata | null }): number {
  const value = failure.metadata?.get(RETRY_AFTER_KEY)[0];
  const ms = typeof value === "string" ? Number(value) : NaN;
  return Number.isFinite(ms) && ms > 0 ? Math.round(ms) : 0;
}
