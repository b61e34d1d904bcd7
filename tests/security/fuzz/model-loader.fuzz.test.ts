/**
 * The native model loader (safetensors, config.json) under damaged files,
 * written to a temporary directory and loaded through Engine.load: damaged
 * safetensors headers (byte flips, a forged header length, truncation) and
 * config.json with keys removed or set to hostile values (negative, huge,
 * wrong types). Every case either loads a model that can run a step, or is
 * rejected with a ModelLoadError/EngineError with a message; the process
 * never crashes or hangs (a crash fails the whole file).
 */
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import fc from "fast-check";
import { afterAll, describe, expect, it } from "vitest";

import { Engine, EngineError } from "../../../services/engine/index.js";
import { modelDir } from "../../helpers/fixtures.js";
import { CaseCounter, RUNS, timeoutFor } from "./fuzz-settings.js";

const counter = new CaseCounter();
const base = existsSync("/dev/shm") ? "/dev/shm" : tmpdir();
const dir = mkdtempSync(join(base, "streamsink-fuzz-model-"));
afterAll(() => {
  counter.report("model-loader");
  rmSync(dir, { recursive: true, force: true });
});

const source = modelDir("pythia");
const weights = readFileSync(join(source, "model.safetensors"));
const headerLength = Number(weights.readBigUInt64LE(0));
const config = JSON.parse(readFileSync(join(source, "config.json"), "utf8")) as Record<string, unknown>;
copyFileSync(join(source, "tokenizer.json"), join(dir, "tokenizer.json"));

async function loadOrReject(): Promise<void> {
  let engine: Engine | undefined;
  try {
    engine = await Engine.load(dir, { backend: "cpu", threads: 1 });
    const session = await engine.openSession({ policy: "sinks", sinks: 2, window: 6 });
    await session.append([1, 2, 3]);
    await session.close();
  } catch (err) {
    if (!(err instanceof EngineError)) throw err;
    expect(err.message.length).toBeGreaterThan(0);
  } finally {
    await engine?.close();
  }
}

const hostile = fc.oneof(
  fc.integer({ min: -4, max: 4 }),
  fc.constantFrom(0, -1, 2 ** 31, 2 ** 53, 1e300, 0.5, null, "64", true, [], {}),
  fc.jsonValue({ maxDepth: 2 }),
);

describe("fuzz: model loader", () => {
  it(`damaged safetensors header: ${RUNS} cases`, { timeout: timeoutFor(RUNS, 30) }, async () => {
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(
          fc.array(fc.tuple(fc.nat(8 + headerLength - 1), fc.integer({ min: 1, max: 255 })), { minLength: 1, maxLength: 4 }).map((flips) => ({ flips })),
          fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }).map((length) => ({ length })),
          fc.nat(weights.length - 1).map((cut) => ({ cut })),
        ),
        async (damage) => {
          counter.hit("safetensors");
          let file = Buffer.from(weights);
          if ("flips" in damage) for (const [i, x] of damage.flips) file[i] = file[i]! ^ x;
          if ("length" in damage) file.writeBigUInt64LE(damage.length, 0);
          if ("cut" in damage) file = file.subarray(0, damage.cut);
          writeFileSync(join(dir, "model.safetensors"), file);
          await loadOrReject();
        },
      ),
      { numRuns: RUNS },
    );
  });

  it(`hostile config.json: ${RUNS} cases`, { timeout: timeoutFor(RUNS, 30) }, async () => {
    writeFileSync(join(dir, "model.safetensors"), weights);
    const keys = [...Object.keys(config), "num_key_value_heads", "head_dim", "rotary_pct", "streamsink"];
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.tuple(fc.constantFrom(...keys), fc.option(hostile, { nil: undefined })), { minLength: 1, maxLength: 3 }),
        fc.option(fc.string({ maxLength: 40 }), { nil: undefined }),
        async (edits, rawText) => {
          counter.hit("config");
          const c: Record<string, unknown> = { ...config };
          for (const [key, value] of edits) {
            if (value === undefined) delete c[key];
            else c[key] = value;
          }
          writeFileSync(join(dir, "config.json"), rawText ?? JSON.stringify(c));
          await loadOrReject();
        },
      ),
      { numRuns: RUNS },
    );
  });
});
