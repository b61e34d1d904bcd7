import { describe, expect, it } from "vitest";

import { isGpuBench, isTorchBench, renderGpuBenchPlot } from "../../services/cli/plot.js";

const bench = {
  gpu: "Test GPU",
  copy_bandwidth_bytes_per_s: 3e12,
  decode: [
    { shape: "llama2-7b", batch: 1, ms_per_step: 6.5, tokens_per_s: 154, fraction_of_roofline: 0.73 },
    { shape: "llama2-7b", batch: 32, ms_per_step: 33, tokens_per_s: 970, fraction_of_roofline: 0.48 },
  ],
  sinks_vs_recompute: [
    { cache: 256, sinks_ms: 6.3, recompute_ms: 11.5 },
    { cache: 4096, sinks_ms: 7.3, recompute_ms: 169 },
  ],
};
const torch = {
  gpu: "Test GPU",
  transformers: "5.17.0",
  results: [
    { batch: 1, ms_per_step: 37.9, tokens_per_s: 26.4 },
    { batch: 32, ms_per_step: 208, tokens_per_s: 154 },
  ],
  recompute: [
    { window: 256, ms_per_token: 18.2 },
    { window: 4096, ms_per_token: 125 },
  ],
};

describe("GPU benchmark plot", () => {
  it("recognises the two report kinds and nothing else", () => {
    expect(isGpuBench(bench)).toBe(true);
    expect(isTorchBench(torch)).toBe(true);
    expect(isGpuBench(torch)).toBe(false);
    expect(isTorchBench(bench)).toBe(false);
  });

  it("draws roofline, latency and throughput panels with the baseline", () => {
    const svg = renderGpuBenchPlot(bench, torch);
    expect(svg.startsWith("<svg")).toBe(true);
    for (const label of ["streamsink llama2-7b", "streamsink sinks", "streamsink recompute", "PyTorch recompute", "PyTorch + transformers"])
      expect(svg).toContain(label);
    expect(svg).toContain("3.00 TB/s");
    expect(svg.match(/<polyline/g)).toHaveLength(6);
  });

  it("draws only the roofline panel without latency data or a baseline", () => {
    const svg = renderGpuBenchPlot({ ...bench, sinks_vs_recompute: [] });
    expect(svg.match(/<polyline/g)).toHaveLength(1);
    expect(svg).not.toContain("PyTorch");
  });
});
