/**
 * Kafka record formats (docs/kafka-records.md): decoding input records into
 * SessionOps with a reason for every rejection (the record then goes to the
 * dead-letter topic), and encoding SessionEvents as output records.
 */
import type { SessionEvent, SessionOp } from "../operations.js";

export const RECORD_VERSION = 1;

export class MalformedRecordError extends Error {
  override readonly name = "MalformedRecordError";
  readonly code = "MALFORMED_RECORD";
}

type Json = Record<string, unknown>;

function fail(reason: string): never {
  throw new MalformedRecordError(reason);
}

function optString(o: Json, key: string, max: number): string | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "string") fail(`"${key}" must be a string`);
  if (v.length > max) fail(`"${key}" is longer than ${max} characters`);
  return v;
}

function optInt(o: Json, key: string, min: number, max: number): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isInteger(v) || v < min || v > max) fail(`"${key}" must be an integer from ${min} to ${max}`);
  return v;
}

function optNumber(o: Json, key: string): number | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "number" || !Number.isFinite(v)) fail(`"${key}" must be a finite number`);
  return v;
}

function optObject(o: Json, key: string): Json | undefined {
  const v = o[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== "object" || Array.isArray(v)) fail(`"${key}" must be an object`);
  return v as Json;
}

function input(o: Json, what: string): { text?: string; tokens?: number[] } {
  const text = optString(o, "text", 1 << 22);
  const raw = o.tokens;
  let tokens: number[] | undefined;
  if (raw !== undefined && raw !== null) {
    if (!Array.isArray(raw)) fail(`"tokens" must be an array of token ids`);
    if (raw.length > 1 << 20) fail(`"tokens" has more than ${1 << 20} entries`);
    raw.forEach((t, i) => {
      if (typeof t !== "number" || !Number.isInteger(t) || t < 0 || t > 0x7fffffff) fail(`"tokens"[${i}] is not a token id`);
    });
    tokens = raw as number[];
  }
  if (text !== undefined && tokens !== undefined) fail(`${what}: give "text" or "tokens", not both`);
  return { ...(text !== undefined ? { text } : {}), ...(tokens !== undefined ? { tokens } : {}) };
}

/**
 * Decodes an input record. `key` is the session id; the value is a JSON
 * object with `v`, `type` (append | generate | close) and `request_id`.
 */
export function decodeInputRecord(key: Buffer | null, value: Buffer | null, maxBytes: number): SessionOp {
  if (!key || key.length === 0) fail("missing record key (the session id)");
  if (key.length > 256) fail("record key (session id) longer than 256 bytes");
  const session = key.toString("utf8");
  if (!value || value.length === 0) fail("empty record value");
  if (value.length > maxBytes) fail(`record value of ${value.length} bytes exceeds the limit of ${maxBytes}`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString("utf8"));
  } catch (err) {
    fail(`value is not JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) fail("value is not a JSON object");
  const o = parsed as Json;
  if (o.v !== RECORD_VERSION) fail(`unsupported record version ${JSON.stringify(o.v)} (expected ${RECORD_VERSION})`);
  const requestId = optString(o, "request_id", 128);
  if (!requestId) fail(`missing "request_id"`);
  const named = optString(o, "session", 256);
  if (named !== undefined && named !== session) fail(`"session" (${named}) does not match the record key (${session})`);
  // A tenant's session key is "<tenant>/<id>" (services/security/tenant.ts); a record that names its
  // tenant must be keyed inside it, so a mislabelled record is dead-lettered rather than applied.
  const tenant = optString(o, "tenant", 63);
  if (tenant !== undefined && !session.startsWith(`${tenant}/`)) fail(`"tenant" (${tenant}) does not match the record key: a tenant's records are keyed "${tenant}/<session id>"`);
  const cfg = optObject(o, "config");
  let config: SessionOp["config"];
  if (cfg) {
    const policy = optString(cfg, "policy", 16);
    if (policy !== undefined && !["sinks", "window", "recompute", "dense"].includes(policy)) fail(`unknown policy "${policy}"`);
    const sinks = optInt(cfg, "sinks", 0, 1024);
    const window = optInt(cfg, "window", 1, 1 << 20);
    config = {
      ...(policy !== undefined ? { policy: policy as "sinks" } : {}),
      ...(sinks !== undefined ? { sinks } : {}),
      ...(window !== undefined ? { window } : {}),
    };
  }
  const base = { session, requestId, ...(config ? { config } : {}) };
  switch (o.type) {
    case "append": {
      const inp = input(o, "append");
      if (inp.text === undefined && inp.tokens === undefined) fail(`append needs "text" or "tokens"`);
      const logprobs = o.logprobs;
      if (logprobs !== undefined && typeof logprobs !== "boolean") fail(`"logprobs" must be true or false`);
      return { kind: "append", ...base, input: inp, ...(logprobs ? { logprobs: true } : {}) };
    }
    case "generate": {
      const maxNewTokens = optInt(o, "max_new_tokens", 0, 1 << 20);
      if (maxNewTokens === undefined) fail(`generate needs "max_new_tokens"`);
      const s = optObject(o, "sampling");
      const sampling = s
        ? {
            ...(optNumber(s, "temperature") !== undefined ? { temperature: optNumber(s, "temperature")! } : {}),
            ...(optNumber(s, "top_p") !== undefined ? { topP: optNumber(s, "top_p")! } : {}),
            ...(optInt(s, "top_k", 0, 1 << 20) !== undefined ? { topK: optInt(s, "top_k", 0, 1 << 20)! } : {}),
            ...(optInt(s, "seed", 0, 0xffffffff) !== undefined ? { seed: optInt(s, "seed", 0, 0xffffffff)! } : {}),
          }
        : undefined;
      const stopRaw = o.stop;
      if (stopRaw !== undefined && (!Array.isArray(stopRaw) || stopRaw.some((x) => typeof x !== "string"))) fail(`"stop" must be an array of strings`);
      const prompt = input(o, "generate");
      return {
        kind: "generate",
        ...base,
        maxNewTokens,
        ...(prompt.text !== undefined || prompt.tokens !== undefined ? { prompt } : {}),
        ...(sampling ? { sampling } : {}),
        ...(stopRaw ? { stop: stopRaw as string[] } : {}),
      };
    }
    case "close":
      return { kind: "close", ...base };
    default:
      fail(`unknown "type" ${JSON.stringify(o.type)} (append, generate, close)`);
  }
}

/** Encodes an op as an input record value (gRPC calls are logged this way). */
export function encodeInputRecord(op: SessionOp): Buffer {
  const base: Json = { v: RECORD_VERSION, type: op.kind, request_id: op.requestId, ...(op.config ? { config: op.config } : {}) };
  if (op.kind === "append") Object.assign(base, op.input, op.logprobs ? { logprobs: true } : {});
  if (op.kind === "generate") {
    Object.assign(base, op.prompt ?? {}, { max_new_tokens: op.maxNewTokens });
    if (op.sampling) {
      const s = op.sampling;
      base.sampling = {
        ...(s.temperature !== undefined ? { temperature: s.temperature } : {}),
        ...(s.topP !== undefined ? { top_p: s.topP } : {}),
        ...(s.topK !== undefined ? { top_k: s.topK } : {}),
        ...(s.seed !== undefined ? { seed: s.seed } : {}),
      };
    }
    if (op.stop) base.stop = op.stop;
  }
  return Buffer.from(JSON.stringify(base));
}

/**
 * Output record value. `seq` numbers the records of one request from 0, so
 * (session, request_id, seq) identifies a record and a duplicate after a
 * failover is recognisable.
 */
export function encodeOutputRecord(event: SessionEvent, seq: number): Buffer {
  const base = { v: RECORD_VERSION, session: event.session, request_id: event.requestId, seq };
  switch (event.kind) {
    case "appended":
      return Buffer.from(
        JSON.stringify({ ...base, type: "appended", tokens: event.tokens, tokens_seen: event.tokensSeen, ...(event.logprobs ? { logprobs: event.logprobs } : {}) }),
      );
    case "token":
      return Buffer.from(JSON.stringify({ ...base, type: "token", index: event.index, token: event.token, text: event.text }));
    case "finished":
      return Buffer.from(
        JSON.stringify({
          ...base,
          type: "finished",
          reason: event.reason,
          prompt_tokens: event.promptTokens,
          generated_tokens: event.generatedTokens,
          text: event.text,
        }),
      );
    case "closed":
      return Buffer.from(JSON.stringify({ ...base, type: "closed", existed: event.existed }));
  }
}

export function encodeErrorRecord(session: string, requestId: string, seq: number, code: string, message: string): Buffer {
  return Buffer.from(JSON.stringify({ v: RECORD_VERSION, session, request_id: requestId, seq, type: "error", code, message }));
}

/** A decoded output record: the event, or the error of a request that failed. */
export type OutputRecord =
  | { seq: number; requestId: string; session: string; event: SessionEvent }
  | { seq: number; requestId: string; session: string; error: { code: string; message: string } };

/** Decodes an output record value; undefined when it is not one of ours. */
export function decodeOutputRecord(value: Buffer | null): OutputRecord | undefined {
  if (!value) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString("utf8"));
  } catch {
    return undefined;
  }
  // JSON "null", a number or an array is not a record (found by the fuzz tests: "null" threw).
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return undefined;
  const o = parsed as Json;
  if (o.v !== RECORD_VERSION || typeof o.request_id !== "string" || typeof o.session !== "string" || typeof o.seq !== "number") return undefined;
  const base = { seq: o.seq, requestId: o.request_id, session: o.session };
  const ev = { session: o.session, requestId: o.request_id };
  switch (o.type) {
    case "appended":
      return {
        ...base,
        event: {
          kind: "appended",
          ...ev,
          tokens: o.tokens as number[],
          tokensSeen: o.tokens_seen as number,
          ...(Array.isArray(o.logprobs) ? { logprobs: (o.logprobs as Array<number | null>).map((v) => (v === null ? Number.NaN : v)) } : {}),
        },
      };
    case "token":
      return { ...base, event: { kind: "token", ...ev, index: o.index as number, token: o.token as number, text: o.text as string } };
    case "finished":
      return {
        ...base,
        event: {
          kind: "finished",
          ...ev,
          reason: o.reason as "length" | "stop" | "cancelled",
          promptTokens: o.prompt_tokens as number,
          generatedTokens: o.generated_tokens as number,
          text: o.text as string,
        },
      };
    case "closed":
      return { ...base, event: { kind: "closed", ...ev, existed: o.existed === true } };
    case "error":
      return { ...base, error: { code: String(o.code), message: String(o.message) } };
    default:
      return undefined;
  }
}
