/**
 * services/grpc/grpc-status.ts: every worker and engine error class maps to
 * its documented gRPC status, the retry hint travels as a trailer, a status
 * from a forwarded call is kept, and nothing known becomes UNKNOWN.
 */
import { Metadata, status as Status } from "@grpc/grpc-js";
import { describe, expect, it } from "vitest";

import {
  BackendUnavailableError,
  CapacityError,
  EngineError,
  type EngineErrorCode,
  InvalidArgumentError,
  ModelLoadError,
  SessionNotFoundError,
  SnapshotError,
} from "../../services/engine/errors.js";
import { RETRY_AFTER_KEY, retryAfterMs, toGrpcFailure } from "../../services/grpc/grpc-status.js";
import {
  InvalidRequestError,
  LimitExceededError,
  OwnerUnavailableError,
  ServiceError,
  SessionMissingError,
  ShuttingDownError,
} from "../../services/worker/errors.js";

describe("toGrpcFailure", () => {
  it.each([
    ["InvalidRequestError", new InvalidRequestError("bad"), Status.INVALID_ARGUMENT],
    ["SessionMissingError", new SessionMissingError("s"), Status.NOT_FOUND],
    ["LimitExceededError", new LimitExceededError("too many"), Status.RESOURCE_EXHAUSTED],
    ["OwnerUnavailableError", new OwnerUnavailableError("moving"), Status.UNAVAILABLE],
    ["ShuttingDownError", new ShuttingDownError(), Status.UNAVAILABLE],
    ["a DEADLINE ServiceError", new ServiceError("DEADLINE", "late"), Status.DEADLINE_EXCEEDED],
    ["InvalidArgumentError", new InvalidArgumentError("E_INVALID_ARGUMENT", "bad id"), Status.INVALID_ARGUMENT],
    ["SessionNotFoundError", new SessionNotFoundError("E_SESSION_NOT_FOUND", "gone"), Status.NOT_FOUND],
    ["CapacityError", new CapacityError("E_CAPACITY", "full"), Status.RESOURCE_EXHAUSTED],
    ["a corrupt snapshot", new SnapshotError("E_SNAPSHOT_CORRUPT", "checksum"), Status.DATA_LOSS],
    ["a snapshot of another model", new SnapshotError("E_SNAPSHOT_MISMATCH", "model hash"), Status.INTERNAL],
    ["ModelLoadError", new ModelLoadError("E_MODEL_FORMAT", "bad file"), Status.INTERNAL],
    ["BackendUnavailableError", new BackendUnavailableError("E_BACKEND_UNAVAILABLE", "no cuda"), Status.INTERNAL],
    ["a closed engine", new EngineError("E_DISPOSED", "closed"), Status.UNAVAILABLE],
    ["a plain Error", new Error("boom"), Status.INTERNAL],
    ["a thrown string", "boom", Status.INTERNAL],
  ])("%s", (_name, err, code) => {
    const failure = toGrpcFailure(err);
    expect(failure.code).toBe(code);
    expect(failure.details).toContain(err instanceof Error ? err.message : String(err));
  });

  it("maps every engine error code to a status other than UNKNOWN or OK", () => {
    const codes: EngineErrorCode[] = [
      "E_IO",
      "E_MODEL_CONFIG",
      "E_MODEL_FORMAT",
      "E_MISSING_TENSOR",
      "E_TENSOR_SHAPE",
      "E_UNSUPPORTED_MODEL",
      "E_INVALID_ARGUMENT",
      "E_SESSION_NOT_FOUND",
      "E_SNAPSHOT_CORRUPT",
      "E_SNAPSHOT_MISMATCH",
      "E_BUSY",
      "E_BACKEND_UNAVAILABLE",
      "E_CAPACITY",
      "E_DISPOSED",
      "E_OUT_OF_MEMORY",
      "E_TOKENIZER",
      "E_INTERNAL",
    ];
    for (const code of codes) expect([Status.UNKNOWN, Status.OK]).not.toContain(toGrpcFailure(new EngineError(code, code)).code);
  });

  it("puts the owner's retry hint in the retry-after-ms trailer", () => {
    const failure = toGrpcFailure(new OwnerUnavailableError("partition 3 is moving", 1200));
    expect(failure.metadata.get(RETRY_AFTER_KEY)).toEqual(["1200"]);
    expect(retryAfterMs(failure)).toBe(1200);
    expect(retryAfterMs(toGrpcFailure(new ShuttingDownError()))).toBe(0);
  });

  it("keeps the status of an error that already carries one (a forwarded call)", () => {
    const trailers = new Metadata();
    trailers.set(RETRY_AFTER_KEY, "300");
    const forwarded = Object.assign(new Error("14 UNAVAILABLE: owner moving"), { code: Status.UNAVAILABLE, details: "owner moving", metadata: trailers });
    const failure = toGrpcFailure(forwarded);
    expect(failure).toMatchObject({ code: Status.UNAVAILABLE, details: "owner moving" });
    expect(retryAfterMs(failure)).toBe(300);
  });

  it("maps an abort to CANCELLED and a timeout to DEADLINE_EXCEEDED", () => {
    expect(toGrpcFailure(new DOMException("stop", "AbortError")).code).toBe(Status.CANCELLED);
    expect(toGrpcFailure(new DOMException("late", "TimeoutError")).code).toBe(Status.DEADLINE_EXCEEDED);
  });
});
