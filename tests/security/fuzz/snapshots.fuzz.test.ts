/**
 * Snapshot decoding under damage: the service envelope (snapshot-store.ts)
 * and the engine's session codec (native session_codec, through
 * Engine.importSession). Any truncation, extension or byte flips of a real
 * snapshot either decode to exactly the original (a flip that changed
 * nothing) or are rejected with CorruptSnapshotError / an EngineError;
 * the process never crashes and a restored session is never larger than its
 * cache.
 */
import fc from "fast-check";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine, EngineError } from "../../../services/engine/index.js";
import { CorruptSnapshotError, decodeEnvelope, encodeEnvelope } from "../../../services/worker/snapshot-store.js";
import { loadGolden, modelDir } from "../../helpers/fixtures.js";
import { CaseCounter, RUNS, timeoutFor } from "./fuzz-settings.js";

const counter = new CaseCounter();
afterAll(() => counter.report("snapshots"));
const ids = loadGolden("llama-gqa").cases[0]!.ids;

/** Damage: flips at positions, then a cut or an extension. */
const damage = (length: number) =>
  fc.record({
    flips: fc.array(fc.tuple(fc.nat(Math.max(0, length - 1)), fc.integer({ min: 1, max: 255 })), { maxLength: 6 }),
    cut: fc.option(fc.nat(length), { nil: undefined }),
    extra: fc.uint8Array({ maxLength: 16 }),
  });

function apply(bytes: Uint8Array, d: { flips: Array<[number, number]>; cut: number | undefined; extra: Uint8Array }): Buffer {
  let b = Buffer.from(bytes);
  for (const [i, x] of d.flips) b[i] = b[i]! ^ x;
  if (d.cut !== undefined) b = b.subarray(0, d.cut);
  return Buffer.concat([b, Buffer.from(d.extra)]);
}

describe("fuzz: snapshot decoding", () => {
  let engine: Engine;
  let snapshot: Uint8Array;
  let envelope: Buffer;

  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu", threads: 1 });
    const session = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "model" });
    await session.append(ids.slice(0, 50));
    snapshot = await session.export();
    await session.close();
    envelope = encodeEnvelope(snapshot, { session: "s", inputOffset: "41" } as never);
  });

  afterAll(async () => {
    await engine?.close();
  });

  it(`service envelope: ${RUNS} cases`, { timeout: timeoutFor(RUNS) }, () => {
    fc.assert(
      fc.property(
        fc.oneof(
          damage(512).map((d) => apply(envelope, d)),
          fc.uint8Array({ maxLength: 128 }).map((b) => Buffer.from(b)),
        ),
        (bytes) => {
          counter.hit("envelope");
          try {
            const { bytes: inner } = decodeEnvelope(bytes);
            // Only damage past the digest (in the engine bytes) gets through; the engine checks those.
            expect(inner.length).toBeLessThanOrEqual(bytes.length);
          } catch (err) {
            if (!(err instanceof CorruptSnapshotError)) throw err;
          }
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`engine session codec: ${RUNS} cases`, { timeout: timeoutFor(RUNS, 20) }, async () => {
    const original = Buffer.from(snapshot);
    await fc.assert(
      fc.asyncProperty(damage(original.length), async (d) => {
        counter.hit("engine codec");
        const bytes = apply(original, d);
        try {
          const session = await engine.importSession(bytes);
          const info = await session.info();
          await session.close();
          expect(bytes.equals(original)).toBe(true);
          expect(info.cacheFill).toBeLessThanOrEqual(info.capacity);
        } catch (err) {
          if (!(err instanceof EngineError)) throw err;
          expect(["E_SNAPSHOT_CORRUPT", "E_SNAPSHOT_MISMATCH", "E_INVALID_ARGUMENT"]).toContain(err.code);
        }
      }),
      { numRuns: RUNS },
    );
  });
});
