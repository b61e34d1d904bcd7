/**
 * Kafka input record decoding under hostile input: any key and value bytes
 * either decode to a well-formed op or are rejected with MalformedRecordError
 * (which the worker dead-letters with its message); nothing else escapes. A
 * decoded op always satisfies the invariants the worker relies on, and
 * encoding any op the worker logs decodes back to the same op.
 */
import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";

import { decodeInputRecord, decodeOutputRecord, encodeInputRecord, MalformedRecordError } from "../../../services/worker/kafka/record-codec.js";
import type { SessionOp } from "../../../services/worker/operations.js";
import { CaseCounter, RUNS, timeoutFor } from "./fuzz-settings.js";

const MAX = 4096;
const counter = new CaseCounter();
afterAll(() => counter.report("kafka-records"));

const jsonValue = fc.jsonValue({ maxDepth: 3 });
/** Objects shaped like input records, with each field sometimes of the wrong type. */
const recordLike = fc.record(
  {
    v: fc.oneof(fc.constant(1), jsonValue),
    type: fc.oneof(fc.constantFrom("append", "generate", "close"), jsonValue),
    request_id: fc.oneof(fc.string({ maxLength: 140 }), jsonValue),
    session: fc.oneof(fc.string({ maxLength: 10 }), jsonValue),
    tenant: fc.oneof(fc.constantFrom("acme", "beta", ""), fc.string({ maxLength: 8 }), jsonValue),
    text: fc.oneof(fc.string({ maxLength: 64 }), jsonValue),
    tokens: fc.oneof(fc.array(fc.oneof(fc.integer(), fc.double(), jsonValue), { maxLength: 20 }), jsonValue),
    max_new_tokens: fc.oneof(fc.integer({ min: -5, max: 1 << 21 }), fc.double(), jsonValue),
    logprobs: fc.oneof(fc.boolean(), jsonValue),
    stop: fc.oneof(fc.array(fc.string({ maxLength: 5 }), { maxLength: 4 }), jsonValue),
    sampling: fc.oneof(
      fc.record({ temperature: fc.oneof(fc.double(), jsonValue), top_p: fc.oneof(fc.double(), jsonValue), top_k: fc.oneof(fc.integer(), jsonValue), seed: fc.oneof(fc.integer(), jsonValue) }, { requiredKeys: [] }),
      jsonValue,
    ),
    config: fc.oneof(
      fc.record({ policy: fc.oneof(fc.constantFrom("sinks", "window", "dense", "recompute", "bogus"), jsonValue), sinks: fc.oneof(fc.integer(), jsonValue), window: fc.oneof(fc.integer(), jsonValue) }, { requiredKeys: [] }),
      jsonValue,
    ),
  },
  { requiredKeys: [] },
);

function checkOp(op: SessionOp, key: string, record?: Record<string, unknown>): void {
  expect(op.session).toBe(key);
  if (typeof record?.tenant === "string") expect(key.startsWith(`${record.tenant}/`)).toBe(true);
  expect(typeof op.requestId).toBe("string");
  expect(op.requestId.length).toBeGreaterThan(0);
  if (op.kind === "append") {
    const hasText = op.input.text !== undefined;
    const hasTokens = op.input.tokens !== undefined;
    expect(hasText !== hasTokens).toBe(true);
    for (const t of op.input.tokens ?? []) expect(Number.isInteger(t) && t >= 0).toBe(true);
  } else if (op.kind === "generate") {
    expect(Number.isInteger(op.maxNewTokens) && op.maxNewTokens >= 0).toBe(true);
    for (const s of op.stop ?? []) expect(typeof s).toBe("string");
  } else expect(op.kind).toBe("close");
}

function decodeOrReject(key: Buffer | null, value: Buffer | null, record?: Record<string, unknown>): void {
  try {
    const op = decodeInputRecord(key, value, MAX);
    checkOp(op, key!.toString("utf8"), record);
  } catch (err) {
    if (!(err instanceof MalformedRecordError)) throw err;
    expect(err.message.length).toBeGreaterThan(0);
  }
}

describe("fuzz: Kafka record decoding", () => {
  it("regression: an output record that is JSON but not an object is not ours (it threw a TypeError)", () => {
    for (const value of ["null", "5", "[]", '"x"', "true"]) expect(decodeOutputRecord(Buffer.from(value))).toBeUndefined();
  });

  it(`raw bytes: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    fc.assert(
      fc.property(fc.option(fc.uint8Array({ maxLength: 300 })), fc.option(fc.uint8Array({ maxLength: 600 })), (key, value) => {
        counter.hit("raw bytes");
        decodeOrReject(key ? Buffer.from(key) : null, value ? Buffer.from(value) : null);
      }),
      { numRuns: RUNS },
    );
  });

  it(`record-shaped JSON: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    fc.assert(
      fc.property(fc.oneof(fc.string({ minLength: 0, maxLength: 300 }), fc.constantFrom("acme/s", "beta/s", "s")), recordLike, (key, record) => {
        counter.hit("record-shaped JSON");
        decodeOrReject(Buffer.from(key), Buffer.from(JSON.stringify(record)), record);
      }),
      { numRuns: RUNS },
    );
  });

  it(`mutated valid records: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    const valid = Buffer.from(JSON.stringify({ v: 1, type: "generate", request_id: "r", max_new_tokens: 4, text: "hi", stop: ["x"], sampling: { temperature: 0.5, seed: 1 } }));
    fc.assert(
      fc.property(fc.array(fc.tuple(fc.nat(valid.length - 1), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 8 }), (flips) => {
        counter.hit("mutated valid records");
        const v = Buffer.from(valid);
        for (const [i, b] of flips) v[i] = b;
        decodeOrReject(Buffer.from("s"), v);
      }),
      { numRuns: RUNS },
    );
  });

  it(`output records from arbitrary bytes never throw: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 300 }).map((b) => Buffer.from(b)), jsonValue.map((j) => Buffer.from(JSON.stringify(j)))), (value) => {
        counter.hit("output records");
        decodeOutputRecord(value);
      }),
      { numRuns: RUNS },
    );
  });

  it(`every op the worker logs round-trips: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    const op = fc.oneof(
      fc.record({
        kind: fc.constant("append" as const),
        session: fc.constant("s"),
        requestId: fc.string({ minLength: 1, maxLength: 128 }),
        input: fc.oneof(fc.record({ text: fc.string({ maxLength: 200 }) }), fc.record({ tokens: fc.array(fc.nat(50000), { maxLength: 50 }) })),
      }),
      fc.record({
        kind: fc.constant("generate" as const),
        session: fc.constant("s"),
        requestId: fc.string({ minLength: 1, maxLength: 128 }),
        maxNewTokens: fc.nat(1 << 20),
        stop: fc.array(fc.string({ minLength: 1, maxLength: 8 }), { maxLength: 4 }),
      }),
      fc.record({ kind: fc.constant("close" as const), session: fc.constant("s"), requestId: fc.string({ minLength: 1, maxLength: 128 }) }),
    );
    fc.assert(
      fc.property(op, (o) => {
        counter.hit("round-trip");
        const value = encodeInputRecord(o as SessionOp);
        fc.pre(value.length <= MAX);
        expect(decodeInputRecord(Buffer.from("s"), value, MAX)).toEqual(o);
      }),
      { numRuns: RUNS },
    );
  });
});
