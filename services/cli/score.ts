/**
 * `streamsink score`: streams a text or token-id file through one session and
 * reports mean NLL and perplexity under the chosen cache policy.
 */
import { readFile, writeFile } from "node:fs/promises";
import { parseArgs } from "node:util";

import { Engine, POLICIES, type Policy } from "../engine/index.js";
import { renderNllPlot, reportLabel, type NllRun } from "./plot.js";
import { ProgressBar } from "./progress.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const SCORE_USAGE = `usage: streamsink score --model DIR (--text FILE | --ids-file FILE)
         [--policy dense|window|recompute|sinks] [--sinks N] [--window N]
         [--sink-token ID|none] [--chunk N] [--threads N] [--backend cpu|cuda|auto]
         [--json] [--logprobs] [--out REPORT.json]
         [--plot FILE.svg [--compare REPORT.json]... [--moving-average N] [--plot-points K] [--title TEXT]]

  --window N is W in the paper's S+W notation (4+1020 is --sinks 4 --window 1020).
  An ids file holds a JSON array or whitespace-separated token ids.
  --out writes the JSON report (with logprobs) to a file.
  --plot draws per-token NLL against stream position (K points, default 10, each
  the mean NLL of the N tokens ending there; N defaults to the spacing) for this
  run and for each --compare report (written earlier with --out or --json --logprobs).`;

export interface ScoreReport {
  model: string;
  architecture: string;
  policy: Policy;
  sinks: number;
  window: number;
  sink_token: number | null;
  tokens: number;
  nll_mean: number;
  ppl: number;
  seconds: number;
  tokens_per_second: number;
  logprobs?: number[];
}

export async function parseIdsFile(path: string): Promise<number[]> {
  const text = (await readFile(path, "utf8")).trim();
  let values: unknown[];
  if (text.startsWith("[")) {
    try {
      values = JSON.parse(text) as unknown[];
    } catch (err) {
      throw new UsageError(`${path}: not a valid JSON array (${(err as Error).message})`);
    }
    if (!Array.isArray(values)) throw new UsageError(`${path}: expected a JSON array of token ids`);
  } else {
    values = text.length === 0 ? [] : text.split(/\s+/).map((s) => (/^-?\d+$/.test(s) ? Number(s) : s));
  }
  values.forEach((v, i) => {
    if (typeof v !== "number" || !Number.isInteger(v) || v < 0)
      throw new UsageError(`${path}: entry ${i} (${JSON.stringify(v)}) is not a non-negative integer token id`);
  });
  return values as number[];
}

export async function runScore(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    allowPositionals: false,
    options: {
      model: { type: "string" },
      text: { type: "string" },
      "ids-file": { type: "string" },
      policy: { type: "string", default: "sinks" },
      sinks: { type: "string" },
      window: { type: "string" },
      "sink-token": { type: "string" },
      chunk: { type: "string" },
      threads: { type: "string" },
      backend: { type: "string", default: "auto" },
      json: { type: "boolean", default: false },
      logprobs: { type: "boolean", default: false },
      out: { type: "string" },
      plot: { type: "string" },
      compare: { type: "string", multiple: true },
      "moving-average": { type: "string" },
      "plot-points": { type: "string" },
      title: { type: "string" },
    },
  });
  if (!values.model) throw new UsageError("--model is required");
  if ((values.text === undefined) === (values["ids-file"] === undefined)) throw new UsageError("give exactly one of --text or --ids-file");
  const policy = values.policy as Policy;
  if (!POLICIES.includes(policy)) throw new UsageError(`--policy must be one of ${POLICIES.join(", ")}, got "${values.policy}"`);
  const backend = values.backend;
  if (backend !== "cpu" && backend !== "cuda" && backend !== "auto") throw new UsageError(`--backend must be cpu, cuda or auto`);
  const sinks = parseIntFlag("sinks", values.sinks, 0);
  const window = parseIntFlag("window", values.window, 1);
  const chunk = parseIntFlag("chunk", values.chunk, 1) ?? 256;
  const threads = parseIntFlag("threads", values.threads, 1);
  const movingAverage = parseIntFlag("moving-average", values["moving-average"], 1);
  const plotPoints = parseIntFlag("plot-points", values["plot-points"], 1);
  if (!values.plot && (values.compare || movingAverage !== undefined || plotPoints !== undefined))
    throw new UsageError("--compare, --moving-average and --plot-points need --plot FILE.svg");
  const compared: Array<{ label: string; logprobs: number[]; model: string }> = [];
  for (const file of values.compare ?? []) {
    let r: ScoreReport;
    try {
      r = JSON.parse(await readFile(file, "utf8")) as ScoreReport;
    } catch (err) {
      throw new UsageError(`--compare ${file}: not a readable score report (${(err as Error).message})`);
    }
    if (!Array.isArray(r.logprobs)) throw new UsageError(`--compare ${file}: the report has no logprobs (write it with --out or --json --logprobs)`);
    compared.push({ label: reportLabel(r), logprobs: r.logprobs, model: r.model });
  }
  let sinkToken: number | "none" | "model" = "model";
  if (values["sink-token"] !== undefined) sinkToken = values["sink-token"] === "none" ? "none" : parseIntFlag("sink-token", values["sink-token"], 0)!;

  const engine = await Engine.load(values.model, { backend, ...(threads ? { threads } : {}) });
  try {
    let ids: number[];
    if (values.text !== undefined) {
      if (!engine.tokenizer) throw new UsageError(`${values.model} has no tokenizer.json; use --ids-file`);
      let text: string;
      try {
        text = await readFile(values.text, "utf8");
      } catch (err) {
        throw new UsageError(`cannot read --text file: ${(err as Error).message}`);
      }
      ids = engine.tokenizer.encode(text);
    } else {
      try {
        ids = await parseIdsFile(values["ids-file"]!);
      } catch (err) {
        if (err instanceof UsageError) throw err;
        throw new UsageError(`cannot read --ids-file: ${(err as Error).message}`);
      }
    }
    if (ids.length < 2) throw new UsageError("the input must hold at least two tokens to score");
    const bad = ids.findIndex((t) => t >= engine.info.vocabSize);
    if (bad >= 0) throw new UsageError(`token id ${ids[bad]} at index ${bad} is outside the model's vocabulary (${engine.info.vocabSize})`);

    const session = await engine.openSession({
      policy,
      ...(sinks !== undefined ? { sinks } : {}),
      ...(window !== undefined ? { window } : {}),
      sinkToken,
    });
    const info = await session.info();
    const bar = new ProgressBar(`score ${policy}`, ids.length);
    const logprobs: number[] = [];
    const started = process.hrtime.bigint();
    for (let i = 0; i < ids.length; i += chunk) {
      const part = ids.slice(i, i + chunk);
      const r = await session.append(part, { logprobs: true });
      for (const v of r.logprobs!) logprobs.push(v);
      bar.update(Math.min(ids.length, i + chunk));
    }
    bar.finish();
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    // With a learned sink token the first token has a prediction too; the
    // report keeps one entry per token after the first either way.
    const scored = logprobs.slice(1);
    const nll = -scored.reduce((s, v) => s + v, 0) / scored.length;
    const report: ScoreReport = {
      model: engine.modelDir,
      architecture: engine.info.architecture,
      policy,
      sinks: info.sinks,
      window: info.window,
      sink_token: info.sinkToken >= 0 ? info.sinkToken : null,
      tokens: ids.length,
      nll_mean: nll,
      ppl: Math.exp(nll),
      seconds,
      tokens_per_second: ids.length / seconds,
      ...(values.logprobs ? { logprobs: scored } : {}),
    };
    await session.close();
    if (values.out) await writeFile(values.out, JSON.stringify({ ...report, logprobs: scored }) + "\n");
    if (values.plot) {
      const own = { label: reportLabel(report), logprobs: scored, model: report.model };
      const all = [...compared, own];
      const manyModels = new Set(all.map((r) => r.model)).size > 1;
      const runs: NllRun[] = all.map((r) => ({ label: manyModels ? `${r.model.split("/").pop()}: ${r.label}` : r.label, logprobs: r.logprobs }));
      await writeFile(
        values.plot,
        renderNllPlot(runs, {
          ...(values.title ? { title: values.title } : {}),
          ...(movingAverage !== undefined ? { movingAverage } : {}),
          ...(plotPoints !== undefined ? { points: plotPoints } : {}),
        }),
      );
    }
    if (values.json) {
      process.stdout.write(JSON.stringify(report) + "\n");
    } else {
      const cache = policy === "dense" ? "dense" : `${info.sinks}+${info.window}`;
      process.stdout.write(
        `${report.architecture} ${policy} (${cache}${report.sink_token !== null ? `, sink token ${report.sink_token}` : ""}): ` +
          `${report.tokens} tokens, mean NLL ${nll.toFixed(4)}, perplexity ${report.ppl.toFixed(3)}, ` +
          `${report.tokens_per_second.toFixed(1)} tokens/s\n`,
      );
      if (values.logprobs) process.stdout.write(scored.map((v) => v.toFixed(6)).join(" ") + "\n");
    }
  } finally {
    await engine.close();
  }
}
