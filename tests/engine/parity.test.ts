/**
 * Parity with the reference: per-token log-probs of every architecture under
 * every cache policy against tools/golden/make_golden.py (Hugging Face
 * transformers in fp32, with the StreamingLLM cache re-implemented on top of
 * it). Tolerance: max abs error 1e-4 on log-probs.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine } from "../../services/engine/index.js";
import { loadGolden, MODEL_NAMES, modelDir } from "../helpers/fixtures.js";

const TOLERANCE = 1e-4;

for (const name of MODEL_NAMES) {
  describe(`parity: ${name}`, () => {
    const golden = loadGolden(name);
    let engine: Engine;
    beforeAll(async () => {
      engine = await Engine.load(modelDir(name), { backend: "cpu" });
    });
    afterAll(async () => engine.close());

    it("loads the architecture the golden file names", () => {
      expect(engine.info.architecture).toBe(golden.architecture);
    });

    for (const c of golden.cases) {
      const label = c.policy === "dense" ? "dense" : `${c.policy} ${c.sinks}+${c.window}`;
      it(`${label}: ${c.ids.length} tokens, max |error| <= ${TOLERANCE}`, async () => {
        const session = await engine.openSession({ policy: c.policy, sinks: c.sinks, window: c.window, sinkToken: "none" });
        // Uneven chunks exercise chunked prefill against token-by-token golden values.
        const got: number[] = [];
        const chunks = [1, 7, 32, 3, 64];
        let i = 0;
        for (let k = 0; i < c.ids.length; k++) {
          const n = chunks[k % chunks.length]!;
          const r = await session.append(c.ids.slice(i, i + n), { logprobs: true });
          got.push(...r.logprobs!);
          i += n;
        }
        await session.close();
        expect(Number.isNaN(got[0])).toBe(true);
        const scored = got.slice(1);
        expect(scored).toHaveLength(c.logprobs.length);
        let maxErr = 0;
        for (let j = 0; j < scored.length; j++) maxErr = Math.max(maxErr, Math.abs(scored[j]! - c.logprobs[j]!));
        expect(maxErr).toBeLessThanOrEqual(TOLERANCE);
      });
    }
  });
}
