/**
 * Engine errors. Native failures arrive as Errors with a string `code`
 * (native/src/errors.cpp); they are rewrapped here into one class per kind so
 * callers use `instanceof`, and the service maps codes to gRPC status codes in
 * one place.
 */

export type EngineErrorCode =
  | "E_IO"
  | "E_MODEL_CONFIG"
  | "E_MODEL_FORMAT"
  | "E_MISSING_TENSOR"
  | "E_TENSOR_SHAPE"
  | "E_UNSUPPORTED_MODEL"
  | "E_INVALID_ARGUMENT"
  | "E_SESSION_NOT_FOUND"
  | "E_SNAPSHOT_CORRUPT"
  | "E_SNAPSHOT_MISMATCH"
  | "E_BUSY"
  | "E_BACKEND_UNAVAILABLE"
  | "E_CAPACITY"
  | "E_DISPOSED"
  | "E_OUT_OF_MEMORY"
  | "E_TOKENIZER"
  | "E_INTERNAL";

export class EngineError extends Error {
  override readonly name: string = "EngineError";
  constructor(
    readonly code: EngineErrorCode,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
  }
}

/** The model directory cannot be used: bad config, checkpoint or tokenizer. */
export class ModelLoadError extends EngineError {
  override readonly name = "ModelLoadError";
}

/** A caller passed a bad value: token id, policy, sizes, options. */
export class InvalidArgumentError extends EngineError {
  override readonly name = "InvalidArgumentError";
}

export class SessionNotFoundError extends EngineError {
  override readonly name = "SessionNotFoundError";
}

/** A session snapshot is corrupt, truncated, or from another model or version. */
export class SnapshotError extends EngineError {
  override readonly name = "SnapshotError";
}

/** A session reached a configured limit (e.g. a dense session's maximum length). */
export class CapacityError extends EngineError {
  override readonly name = "CapacityError";
}

export class BackendUnavailableError extends EngineError {
  override readonly name = "BackendUnavailableError";
}

const classes: Partial<Record<EngineErrorCode, new (code: EngineErrorCode, message: string, options?: { cause?: unknown }) => EngineError>> = {
  E_IO: ModelLoadError,
  E_MODEL_CONFIG: ModelLoadError,
  E_MODEL_FORMAT: ModelLoadError,
  E_MISSING_TENSOR: ModelLoadError,
  E_TENSOR_SHAPE: ModelLoadError,
  E_UNSUPPORTED_MODEL: ModelLoadError,
  E_TOKENIZER: ModelLoadError,
  E_INVALID_ARGUMENT: InvalidArgumentError,
  E_SESSION_NOT_FOUND: SessionNotFoundError,
  E_SNAPSHOT_CORRUPT: SnapshotError,
  E_SNAPSHOT_MISMATCH: SnapshotError,
  E_CAPACITY: CapacityError,
  E_BACKEND_UNAVAILABLE: BackendUnavailableError,
};

/** Wraps anything thrown by the addon into the matching EngineError subclass. */
export function fromNative(err: unknown): EngineError {
  if (err instanceof EngineError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  if (typeof code === "string" && code.startsWith("E_")) {
    const Cls = classes[code as EngineErrorCode] ?? EngineError;
    return new Cls(code as EngineErrorCode, message, { cause: err });
  }
  return new EngineError("E_INTERNAL", message, { cause: err });
}
