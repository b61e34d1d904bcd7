import { describe, expect, it } from "vitest";

import { argmax, InvalidArgumentError, Sampler } from "../../services/engine/index.js";

const logp = (probs: number[]) => Float32Array.from(probs.map((p) => Math.log(p)));

describe("Sampler", () => {
  it("is greedy at temperature 0", () => {
    const s = new Sampler();
    expect(s.sample(logp([0.1, 0.6, 0.3]))).toBe(1);
    expect(argmax(logp([0.5, 0.2, 0.3]))).toBe(0);
  });

  it("top-k 1 is greedy at any temperature", () => {
    const s = new Sampler({ temperature: 2, topK: 1, seed: 3 });
    for (let i = 0; i < 50; i++) expect(s.sample(logp([0.2, 0.1, 0.7]))).toBe(2);
  });

  it("top-p keeps the smallest set reaching p", () => {
    const s = new Sampler({ temperature: 1, topP: 0.75, seed: 11 });
    const seen = new Set<number>();
    for (let i = 0; i < 500; i++) seen.add(s.sample(logp([0.5, 0.3, 0.15, 0.05])));
    expect([...seen].sort()).toEqual([0, 1]);
  });

  it("follows the distribution at temperature 1", () => {
    const s = new Sampler({ temperature: 1, seed: 5 });
    const counts = [0, 0, 0];
    const n = 20000;
    for (let i = 0; i < n; i++) counts[s.sample(logp([0.2, 0.5, 0.3]))]!++;
    expect(counts[0]! / n).toBeCloseTo(0.2, 1);
    expect(counts[1]! / n).toBeCloseTo(0.5, 1);
  });

  it("is reproducible from its seed", () => {
    const draw = (seed: number) => {
      const s = new Sampler({ temperature: 1, seed });
      return Array.from({ length: 64 }, () => s.sample(logp([0.25, 0.25, 0.25, 0.25])));
    };
    expect(draw(42)).toEqual(draw(42));
    expect(draw(42)).not.toEqual(draw(43));
  });

  it("rejects bad options", () => {
    expect(() => new Sampler({ temperature: -1 })).toThrow(InvalidArgumentError);
    expect(() => new Sampler({ topP: 0 })).toThrow(InvalidArgumentError);
    expect(() => new Sampler({ topK: 1.5 })).toThrow(InvalidArgumentError);
    expect(() => new Sampler({ seed: Number.NaN })).toThrow(InvalidArgumentError);
  });
});
