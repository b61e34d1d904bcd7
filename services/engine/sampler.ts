/**
 * Token sampling from a next-token log-probability vector: greedy, or
 * temperature with optional top-k and top-p (nucleus) filtering, driven by a
 * seeded PRNG so a generation is reproducible from its seed.
 */
import { InvalidArgumentError } from "./errors.js";

export interface SamplingOptions {
  /** 0 (default) is greedy decoding. */
  temperature?: number;
  /** Keep the k most likely tokens; 0 or absent keeps all. */
  topK?: number;
  /** Keep the smallest set of tokens whose probability reaches p; 1 or absent keeps all. */
  topP?: number;
  /** PRNG seed (32-bit); the same seed gives the same samples. */
  seed?: number;
}

/** mulberry32: small, fast, and good enough for sampling. */
function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function validateSampling(o: SamplingOptions): Required<SamplingOptions> {
  const temperature = o.temperature ?? 0;
  const topK = o.topK ?? 0;
  const topP = o.topP ?? 1;
  const seed = o.seed ?? 0;
  if (!Number.isFinite(temperature) || temperature < 0) throw new InvalidArgumentError("E_INVALID_ARGUMENT", `temperature must be >= 0, got ${temperature}`);
  if (!Number.isInteger(topK) || topK < 0) throw new InvalidArgumentError("E_INVALID_ARGUMENT", `topK must be a non-negative integer, got ${topK}`);
  if (!Number.isFinite(topP) || topP <= 0 || topP > 1) throw new InvalidArgumentError("E_INVALID_ARGUMENT", `topP must be in (0, 1], got ${topP}`);
  if (!Number.isInteger(seed)) throw new InvalidArgumentError("E_INVALID_ARGUMENT", `seed must be an integer, got ${seed}`);
  return { temperature, topK, topP, seed };
}

export class Sampler {
  readonly #options: Required<SamplingOptions>;
  readonly #random: () => number;

  constructor(options: SamplingOptions = {}) {
    this.#options = validateSampling(options);
    this.#random = mulberry32(this.#options.seed);
  }

  /** Temperature 0: the most likely token (ties: the lowest id), no random draws. */
  get greedy(): boolean {
    return this.#options.temperature === 0;
  }

  /**
   * Moves on as if `n` tokens had been sampled (each sample draws one random
   * number; greedy draws none): a generation resumed after `n` recorded
   * tokens continues exactly as it would have.
   */
  skip(n: number): void {
    if (this.#options.temperature === 0) return;
    for (let i = 0; i < n; i++) this.#random();
  }

  /** Picks a token id from `logprobs` (natural-log probabilities over the vocabulary). */
  sample(logprobs: Float32Array): number {
    const { temperature, topK, topP } = this.#options;
    if (logprobs.length === 0) throw new InvalidArgumentError("E_INVALID_ARGUMENT", "cannot sample from an empty distribution");
    if (temperature === 0) return argmax(logprobs);

    // Candidates sorted by probability (ties broken by id, so order is stable).
    let ids = Array.from(logprobs.keys()).sort((a, b) => logprobs[b]! - logprobs[a]! || a - b);
    if (topK > 0 && topK < ids.length) ids = ids.slice(0, topK);

    const scaled = ids.map((id) => logprobs[id]! / temperature);
    const max = scaled[0]!;
    const weights = scaled.map((v) => Math.exp(v - max));
    let total = weights.reduce((s, w) => s + w, 0);

    if (topP < 1) {
      let cumulative = 0;
      let keep = 0;
      while (keep < weights.length) {
        cumulative += weights[keep]! / total;
        keep++;
        if (cumulative >= topP) break;
      }
      ids = ids.slice(0, keep);
      weights.length = keep;
      total = weights.reduce((s, w) => s + w, 0);
    }

    let r = this.#random() * total;
    for (let i = 0; i < ids.length; i++) {
      r -= weights[i]!;
      if (r < 0) return ids[i]!;
    }
    return ids[ids.length - 1]!;
  }
}

export function argmax(values: Float32Array): number {
  let best = 0;
  for (let i = 1; i < values.length; i++) if (values[i]! > values[best]!) best = i;
  return best;
}
