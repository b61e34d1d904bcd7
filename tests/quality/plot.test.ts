/**
 * The plots of docs/REPRODUCTION.md: `streamsink score --out/--plot/--compare`
 * and the plot module (NLL along the stream, sink metric by layer).
 */
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, describe, expect, it } from "vitest";

import { nllCurve, pointSpacing, renderSinkMetricPlot } from "../../services/cli/plot.js";

const ROOT = join(import.meta.dirname, "..", "..");
const CLI = join(ROOT, "dist", "services", "cli", "main.js");
const tmp = mkdtempSync(join(tmpdir(), "streamsink-plot-"));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe("plot helpers", () => {
  it("picks round spacings", () => {
    expect(pointSpacing(13029, 13)).toBe(1000);
    expect(pointSpacing(13029, 7)).toBe(2000);
    expect(pointSpacing(1300, 10)).toBe(200);
  });

  it("averages the NLL of the tokens that end at each point", () => {
    const lp = Array.from({ length: 10 }, (_, i) => -(i + 1)); // NLL 1..10
    expect(nllCurve(lp, 5)).toEqual([
      [2, 1.5],
      [4, 3.5],
      [6, 5.5],
      [8, 7.5],
      [10, 9.5],
    ]);
    expect(nllCurve(lp, 5, 4)[2]).toEqual([6, 4.5]); // tokens 3..6
  });

  it("draws the sink metric by layer with the uniform baseline", () => {
    const svg = renderSinkMetricPlot([
      { model: "models/a", sink_token: null, layers: 2, attn_to_first_mean: [0.01, 0.2], attn_to_first_max_head: [0.02, 0.5], uniform_baseline: 0.0114 },
      { model: "models/b", sink_token: 1, layers: 2, attn_to_first_mean: [0.3, 0.6], uniform_baseline: 0.0114 },
    ]);
    expect(svg).toContain("<svg");
    expect(svg).toContain("a: mean over heads");
    expect(svg).toContain("b (sink token): mean over heads");
    expect(svg).toContain("uniform attention (no sink)");
  });
});

describe("streamsink score --out / --plot / --compare", () => {
  it("writes a report with logprobs and draws this run beside earlier ones", () => {
    const text = join(tmp, "t.txt");
    writeFileSync(text, readFileSync(join(ROOT, "tests", "quality", "data", "mobydick-heldout-1k4.txt"), "utf8").slice(0, 1500));
    const model = join(ROOT, "models", "streamsink-llama-7m");
    const report = join(tmp, "window.json");
    execFileSync("node", [CLI, "score", "--model", model, "--text", text, "--policy", "window", "--window", "64", "--out", report]);
    const r = JSON.parse(readFileSync(report, "utf8")) as { policy: string; logprobs: number[]; tokens: number };
    expect(r.policy).toBe("window");
    expect(r.logprobs.length).toBe(r.tokens - 1);
    const svgPath = join(tmp, "f.svg");
    execFileSync("node", [CLI, "score", "--model", model, "--text", text, "--policy", "sinks", "--sinks", "4", "--window", "60", "--plot", svgPath, "--compare", report, "--plot-points", "4"]);
    const svg = readFileSync(svgPath, "utf8");
    expect(svg).toContain("window 0+64");
    expect(svg).toContain("sinks 4+60");
    expect((svg.match(/<polyline/g) ?? []).length).toBe(2);
  });

  it("refuses --compare without --plot", () => {
    const model = join(ROOT, "models", "streamsink-llama-7m");
    expect(() =>
      execFileSync("node", [CLI, "score", "--model", model, "--text", join(ROOT, "tests", "quality", "data", "mobydick-heldout-1k4.txt"), "--compare", "x.json"], { stdio: "pipe" }),
    ).toThrow(/--compare, --moving-average and --plot-points need --plot/);
  });
});
