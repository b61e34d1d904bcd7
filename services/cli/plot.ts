/**
 * Plots for the quality write-up (docs/REPRODUCTION.md), drawn with svg-plot:
 *
 *  - per-token NLL against stream position (the paper's Figure 3) from
 *    `streamsink score --json --logprobs` reports: each point is the mean NLL
 *    of the `window` tokens that end at that position;
 *  - the attention-to-first-token metric by layer from the `sink_metric.json`
 *    files that tools/train/sink_metric.py writes into a model directory.
 *
 * `streamsink score --plot FILE.svg` uses the first; `runPlot` (the `plot`
 * command, also runnable as `node dist/services/cli/plot.js`) takes either
 * kind of input file.
 */
import { readFile, writeFile } from "node:fs/promises";
import { basename } from "node:path";
import { parseArgs } from "node:util";
import { pathToFileURL } from "node:url";

import { renderSvg, type Panel, type Series } from "./svg-plot.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const PLOT_USAGE = `usage: streamsink plot --out FILE.svg [--title TEXT] [--moving-average N] [--points K] [--first N] INPUT...

  Each INPUT is either a score report written by \`streamsink score --json --logprobs\`
  (drawn as NLL against stream position at up to K round positions, default 10, each
  point the mean NLL of the N tokens ending there; N defaults to the spacing), or a model's
  sink_metric.json (tools/train/sink_metric.py; drawn as attention to the first
  token by layer). All inputs must be of one kind. --first N draws only the first N
  predictions of each report.
  A GPU benchmark report (streamsink_gpu bench --out) plus, optionally, the PyTorch
  baseline's report (tools/bench/torch_streaming.py --out) draws fraction of the
  bandwidth roofline by batch, sinks vs recompute by cache size, and decode
  throughput against the PyTorch StreamingLLM cache.`;

/** What plotNll needs from a score report. */
export interface NllRun {
  label: string;
  logprobs: number[];
}

export interface NllPlotOptions {
  title?: string;
  /** Tokens averaged per point (default: the spacing between points). */
  movingAverage?: number;
  /** Points per curve (default 10; svg-plot labels every x it draws). */
  points?: number;
  caption?: string;
}

/** A round spacing (1, 2 or 5 times a power of ten) giving at most `points` positions up to `n`. */
export function pointSpacing(n: number, points: number): number {
  let mag = 10 ** Math.floor(Math.log10(Math.max(1, n / points)));
  for (;;) {
    for (const m of [1, 2, 5]) if (Math.floor(n / (m * mag)) <= points) return m * mag;
    mag *= 10;
  }
}

/**
 * Mean NLL of the `window` predictions that end at each multiple of a round
 * spacing (at most `points` of them; window defaults to the spacing).
 * logprobs[i] predicts token i+1, so a point at x covers the predictions made
 * after x tokens of the stream at most.
 */
export function nllCurve(logprobs: number[], points: number, window?: number): Array<[number, number]> {
  const n = logprobs.length;
  if (n === 0) return [];
  const step = pointSpacing(n, Math.max(1, points));
  const w = Math.max(1, window ?? step);
  const prefix = new Float64Array(n + 1);
  for (let i = 0; i < n; i++) prefix[i + 1] = prefix[i]! - logprobs[i]!;
  const out: Array<[number, number]> = [];
  for (let end = step; end <= n; end += step) {
    const start = Math.max(0, end - w);
    out.push([end, (prefix[end]! - prefix[start]!) / (end - start)]);
  }
  if (out.length === 0) out.push([n, prefix[n]! / n]);
  return out;
}

export function renderNllPlot(runs: NllRun[], opts: NllPlotOptions = {}): string {
  const points = opts.points ?? 10;
  const n = Math.max(...runs.map((r) => r.logprobs.length));
  const w = opts.movingAverage ?? pointSpacing(n, points);
  const series: Series[] = runs.map((r) => ({ label: r.label, points: nllCurve(r.logprobs, points, w) }));
  const panel: Panel = {
    title: opts.title ?? "Per-token NLL along the stream",
    xLabel: "stream position (tokens)",
    yLabel: `NLL (nats), mean of the last ${w} tokens`,
    series,
  };
  return renderSvg([panel], opts.caption ?? `streamsink score --logprobs; each point averages the ${w} tokens ending there`);
}

/** Curve label of a score report: policy and cache, and the model when asked. */
export function reportLabel(r: { policy: string; sinks: number; window: number; sink_token: number | null; model?: string }, withModel = false): string {
  const cache = r.policy === "dense" ? "dense" : r.policy === "recompute" ? `recompute ${r.window}` : `${r.policy} ${r.sinks}+${r.window}`;
  const tok = r.sink_token !== null ? ", sink token" : "";
  return `${withModel && r.model ? basename(r.model) + ": " : ""}${cache}${tok}`;
}

export interface SinkMetricFile {
  model: string;
  sink_token: number | null;
  layers: number;
  attn_to_first_mean: number[];
  attn_to_first_max_head?: number[];
  uniform_baseline: number;
}

export function renderSinkMetricPlot(files: SinkMetricFile[], title?: string): string {
  const series: Series[] = [];
  for (const f of files) {
    const name = basename(f.model) + (f.sink_token !== null ? " (sink token)" : "");
    series.push({ label: `${name}: mean over heads`, points: f.attn_to_first_mean.map((v, i) => [i, 100 * v]) });
    if (f.attn_to_first_max_head)
      series.push({ label: `${name}: strongest head`, points: f.attn_to_first_max_head.map((v, i) => [i, 100 * v]) });
  }
  const f0 = files[0]!;
  series.push({ label: "uniform attention (no sink)", points: f0.attn_to_first_mean.map((_, i) => [i, 100 * f0.uniform_baseline]) });
  const panel: Panel = {
    title: title ?? "Attention to the first token, by layer",
    xLabel: "layer",
    yLabel: "% of attention (queries at positions >= 16)",
    series,
  };
  return renderSvg([panel], "tools/train/sink_metric.py on held-out text (position 0: the sink token, if any)");
}

interface ScoreReportLike {
  model: string;
  policy: string;
  sinks: number;
  window: number;
  sink_token: number | null;
  logprobs?: number[];
}

/** streamsink_gpu bench --out. */
export interface GpuBenchReport {
  gpu: string;
  copy_bandwidth_bytes_per_s: number;
  decode: Array<{ shape: string; batch: number; ms_per_step: number; tokens_per_s: number; fraction_of_roofline: number }>;
  sinks_vs_recompute?: Array<{ cache: number; sinks_ms: number; recompute_ms: number }>;
}

/** tools/bench/torch_streaming.py --out. */
export interface TorchBenchReport {
  gpu: string;
  results: Array<{ batch: number; ms_per_step: number; tokens_per_s: number }>;
  recompute?: Array<{ window: number; ms_per_token: number }>;
}

export const isGpuBench = (x: unknown): x is GpuBenchReport =>
  typeof x === "object" && x !== null && Array.isArray((x as GpuBenchReport).decode) && "copy_bandwidth_bytes_per_s" in x;
export const isTorchBench = (x: unknown): x is TorchBenchReport =>
  typeof x === "object" && x !== null && Array.isArray((x as TorchBenchReport).results) && "transformers" in x;

export function renderGpuBenchPlot(bench: GpuBenchReport, torch?: TorchBenchReport, title?: string): string {
  const shapes = [...new Set(bench.decode.map((d) => d.shape))];
  const perShape = (f: (d: GpuBenchReport["decode"][number]) => number): Series[] =>
    shapes.map((shape) => ({
      label: `streamsink ${shape}`,
      points: bench.decode.filter((d) => d.shape === shape).map((d): [number, number] => [d.batch, f(d)]),
    }));
  const roofline: Panel = {
    title: title ?? `Decode, cache 4+2044 (${bench.gpu})`,
    xLabel: "concurrent sessions (batch)",
    yLabel: "fraction of bandwidth roofline",
    logX: true,
    series: perShape((d) => d.fraction_of_roofline),
  };
  const panels: Panel[] = [roofline];
  if (bench.sinks_vs_recompute?.length) {
    const series: Series[] = [
      { label: "streamsink sinks", points: bench.sinks_vs_recompute.map((r): [number, number] => [r.cache, r.sinks_ms]) },
      { label: "streamsink recompute", points: bench.sinks_vs_recompute.map((r): [number, number] => [r.cache, r.recompute_ms]) },
    ];
    if (torch?.recompute?.length)
      series.push({ label: "PyTorch recompute", points: torch.recompute.map((r): [number, number] => [r.window, r.ms_per_token]) });
    panels.push({ title: "Per-token latency, Llama-2-7B shape, batch 1", xLabel: "cache size (tokens)", yLabel: "ms per token", logX: true, logY: true, series });
  }
  if (torch?.results.length) {
    const llama = bench.decode.filter((d) => d.shape === shapes[0]);
    panels.push({
      title: "StreamingLLM decode throughput",
      xLabel: "concurrent sessions (batch)",
      yLabel: "tokens per second",
      logX: true,
      logY: true,
      series: [
        { label: `streamsink ${shapes[0]}`, points: llama.map((d): [number, number] => [d.batch, d.tokens_per_s]) },
        { label: "PyTorch + transformers", points: torch.results.map((r): [number, number] => [r.batch, r.tokens_per_s]) },
      ],
    });
  }
  return renderSvg(panels, `streamsink_gpu bench, bf16, roofline = weight + cache bytes per step at the measured copy bandwidth (${(bench.copy_bandwidth_bytes_per_s / 1e12).toFixed(2)} TB/s)`);
}

export async function runPlot(argv: string[]): Promise<void> {
  const { values, positionals } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: true,
    options: {
      out: { type: "string" },
      title: { type: "string" },
      "moving-average": { type: "string" },
      points: { type: "string" },
      first: { type: "string" },
    },
  });
  if (!values.out) throw new UsageError("--out FILE.svg is required");
  if (positionals.length === 0) throw new UsageError("give at least one input file");
  const inputs: unknown[] = [];
  for (const p of positionals) {
    try {
      inputs.push(JSON.parse(await readFile(p, "utf8")));
    } catch (err) {
      throw new UsageError(`${p}: not a readable JSON file (${(err as Error).message})`);
    }
  }
  const isMetric = (x: unknown) => typeof x === "object" && x !== null && Array.isArray((x as SinkMetricFile).attn_to_first_mean);
  const isReport = (x: unknown) => typeof x === "object" && x !== null && Array.isArray((x as ScoreReportLike).logprobs);
  let svg: string;
  const gpu = inputs.find(isGpuBench);
  if (gpu && inputs.every((x) => isGpuBench(x) || isTorchBench(x)) && inputs.filter(isGpuBench).length === 1) {
    svg = renderGpuBenchPlot(gpu, inputs.find(isTorchBench), values.title);
  } else if (inputs.every(isMetric)) {
    svg = renderSinkMetricPlot(inputs as SinkMetricFile[], values.title);
  } else if (inputs.every(isReport)) {
    const reports = inputs as ScoreReportLike[];
    const manyModels = new Set(reports.map((r) => r.model)).size > 1;
    const first = parseIntFlag("first", values.first, 1);
    svg = renderNllPlot(
      reports.map((r) => ({ label: reportLabel(r, manyModels), logprobs: first ? r.logprobs!.slice(0, first) : r.logprobs! })),
      {
        ...(values.title ? { title: values.title } : {}),
        ...(values["moving-average"] ? { movingAverage: parseIntFlag("moving-average", values["moving-average"], 1)! } : {}),
        ...(values.points ? { points: parseIntFlag("points", values.points, 1)! } : {}),
      },
    );
  } else {
    throw new UsageError("inputs must all be score reports with logprobs (score --json --logprobs) or all sink_metric.json files");
  }
  await writeFile(values.out, svg);
  process.stdout.write(`wrote ${values.out}\n`);
}

// Runnable on its own: node dist/services/cli/plot.js --out F.svg INPUT...
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  runPlot(process.argv.slice(2)).catch((err: Error) => {
    process.stderr.write(`plot: ${err.message}\n\n${PLOT_USAGE}\n`);
    process.exitCode = err instanceof UsageError ? 2 : 1;
  });
}
