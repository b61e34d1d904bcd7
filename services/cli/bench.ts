/**
 * `streamsink bench`: decode speed per cache policy and cache size, and the
 * per-token cost early and far into a long stream. A benchmark, not a test:
 * it prints figures (and writes JSON with --out); nothing is asserted.
 */
import { mkdtemp, mkdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";

import { Engine, POLICIES, type Policy, type Session } from "../engine/index.js";
import { ProgressBar } from "./progress.js";
import { renderSvg } from "./svg-plot.js";
import { BENCH_SHAPE, parameterCount, writeRandomLlama } from "./random-model.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const BENCH_USAGE = `usage: streamsink bench [--model DIR] [--caches 256,1024,4096] [--policies sinks,window,recompute,dense]
         [--decode N] [--sinks N] [--flat-cache N] [--flat-positions 256,2048,8192]
         [--threads N] [--out FILE]

  Without --model, a random-weight Llama-shaped model of ~10M parameters is generated.`;

interface DecodeFigure {
  policy: Policy;
  cache: number;
  sinks: number;
  window: number;
  decoded: number;
  ms_per_token: number;
  tokens_per_second: number;
}

interface FlatFigure {
  policy: Policy;
  cache: number;
  position: number;
  ms_per_token: number;
}

function parseList(name: string, value: string): number[] {
  const items = value.split(",").map((s) => parseIntFlag(name, s.trim(), 1)!);
  if (items.length === 0) throw new UsageError(`--${name} needs at least one value`);
  return items;
}

function randomIds(n: number, vocab: number, seed: number): number[] {
  let a = seed >>> 0;
  const ids: number[] = [];
  for (let i = 0; i < n; i++) {
    a = (Math.imul(a, 1664525) + 1013904223) >>> 0;
    ids.push(a % vocab);
  }
  return ids;
}

function sessionShape(policy: Policy, cache: number, sinks: number): { sinks: number; window: number } {
  if (policy === "sinks") return { sinks, window: cache - sinks };
  if (policy === "dense") return { sinks: 0, window: 0 };
  return { sinks: 0, window: cache };
}

async function fill(session: Session, ids: number[], chunk = 512): Promise<void> {
  for (let i = 0; i < ids.length; i += chunk) await session.append(ids.slice(i, i + chunk));
}

/** Mean wall time of appending `n` tokens one at a time. */
async function timeDecode(session: Session, ids: number[]): Promise<number> {
  const start = process.hrtime.bigint();
  for (const t of ids) await session.append([t]);
  return Number(process.hrtime.bigint() - start) / 1e6 / ids.length;
}

export async function runBench(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: "string" },
      caches: { type: "string", default: "256,1024,4096" },
      policies: { type: "string", default: "sinks,window,recompute,dense" },
      decode: { type: "string", default: "16" },
      sinks: { type: "string", default: "4" },
      "flat-cache": { type: "string", default: "256" },
      "flat-positions": { type: "string", default: "256,2048,8192" },
      threads: { type: "string" },
      out: { type: "string" },
    },
  });
  const caches = parseList("caches", values.caches);
  const policies = values.policies.split(",").map((p) => p.trim()) as Policy[];
  for (const p of policies) if (!POLICIES.includes(p)) throw new UsageError(`--policies: unknown policy "${p}"`);
  const decode = parseIntFlag("decode", values.decode, 1)!;
  const sinks = parseIntFlag("sinks", values.sinks, 0)!;
  const flatCache = parseIntFlag("flat-cache", values["flat-cache"], sinks + 1)!;
  const flatPositions = parseList("flat-positions", values["flat-positions"]);
  const threads = parseIntFlag("threads", values.threads, 1);
  for (const c of caches) if (c <= sinks) throw new UsageError(`--caches: ${c} is not larger than --sinks ${sinks}`);

  let modelDir = values.model;
  let tempDir: string | undefined;
  if (!modelDir) {
    tempDir = await mkdtemp(join(tmpdir(), "streamsink-bench-"));
    modelDir = tempDir;
    process.stderr.write(`generating a random Llama-shaped model (${(parameterCount(BENCH_SHAPE) / 1e6).toFixed(1)}M parameters)\n`);
    await writeRandomLlama(modelDir, BENCH_SHAPE, 7);
  }
  const engine = await Engine.load(modelDir, threads ? { threads } : {});
  const vocab = engine.info.vocabSize;
  try {
    const info = engine.info;
    process.stdout.write(
      `model: ${info.architecture}, ${(info.parameters / 1e6).toFixed(2)}M parameters, hidden ${info.hiddenSize}, ` +
        `${info.layers} layers, backend ${info.backend} (${info.threads} threads)\n\n`,
    );

    const decodeFigures: DecodeFigure[] = [];
    const bar = new ProgressBar("bench", caches.length * policies.length);
    let done = 0;
    for (const cache of caches) {
      for (const policy of policies) {
        const shape = sessionShape(policy, cache, sinks);
        const session = await engine.openSession({ policy, ...shape, sinkToken: "none" });
        // Fill the cache to capacity (and one full eviction cycle past it for
        // the bounded policies) so decode measures the steady state.
        await fill(session, randomIds(cache, vocab, cache));
        const n = policy === "recompute" ? Math.max(1, Math.min(decode, Math.ceil(8192 / cache))) : decode;
        const ms = await timeDecode(session, randomIds(n, vocab, cache + 1));
        decodeFigures.push({ policy, cache, ...shape, decoded: n, ms_per_token: ms, tokens_per_second: 1000 / ms });
        await session.close();
        bar.update(++done);
      }
    }
    bar.finish();

    process.stdout.write("decode after filling the cache (per-token latency, one session):\n");
    process.stdout.write("  cache  policy      S+W          ms/token   tokens/s\n");
    for (const f of decodeFigures) {
      const sw = f.policy === "dense" ? `dense(${f.cache})` : `${f.sinks}+${f.window}`;
      process.stdout.write(
        `  ${String(f.cache).padStart(5)}  ${f.policy.padEnd(10)}  ${sw.padEnd(11)}  ${f.ms_per_token.toFixed(3).padStart(9)}  ${f.tokens_per_second.toFixed(1).padStart(9)}\n`,
      );
    }
    for (const cache of caches) {
      const s = decodeFigures.find((f) => f.cache === cache && f.policy === "sinks");
      const r = decodeFigures.find((f) => f.cache === cache && f.policy === "recompute");
      if (s && r) process.stdout.write(`  speed-up of sinks over recompute at cache ${cache}: ${(r.ms_per_token / s.ms_per_token).toFixed(1)}x\n`);
    }

    // Per-token cost early and far into one long stream.
    const flat: FlatFigure[] = [];
    const flatPolicies = policies.filter((p) => p === "sinks" || p === "dense" || p === "recompute");
    const flatBar = new ProgressBar("stream", flatPolicies.length * flatPositions.length);
    done = 0;
    for (const policy of flatPolicies) {
      const shape = sessionShape(policy, flatCache, sinks);
      const session = await engine.openSession({ policy, ...shape, sinkToken: "none", maxDenseTokens: 1 << 22 });
      let position = 0;
      for (const target of [...flatPositions].sort((a, b) => a - b)) {
        await fill(session, randomIds(target - position, vocab, target));
        position = target;
        const n = policy === "recompute" ? 4 : 8;
        const ms = await timeDecode(session, randomIds(n, vocab, target + 7));
        position += n;
        flat.push({ policy, cache: flatCache, position: target, ms_per_token: ms });
        flatBar.update(++done);
      }
      await session.close();
    }
    flatBar.finish();
    process.stdout.write(`\nper-token cost along one stream (cache ${sinks}+${flatCache - sinks} for sinks, W=${flatCache} for recompute):\n`);
    process.stdout.write("  policy      " + flatPositions.map((p) => `@${p}`.padStart(10)).join("") + "   last/first\n");
    for (const policy of flatPolicies) {
      const row = flat.filter((f) => f.policy === policy);
      const ratio = row[row.length - 1]!.ms_per_token / row[0]!.ms_per_token;
      process.stdout.write(`  ${policy.padEnd(10)}  ${row.map((f) => f.ms_per_token.toFixed(3).padStart(10)).join("")}   ${ratio.toFixed(2)}x\n`);
    }

    if (values.out) {
      await mkdir(dirname(values.out), { recursive: true });
      await writeFile(
        values.out,
        JSON.stringify({ model: info, decode: decodeFigures, stream: flat, date: new Date().toISOString() }, null, 2) + "\n",
      );
      const svgPath = values.out.replace(/\.json$/, "") + ".svg";
      const svg = renderSvg(
        [
          {
            title: "decode speed after filling the cache",
            xLabel: "cache size (tokens)",
            yLabel: "tokens/s (log)",
            logY: true,
            logX: true,
            series: policies.map((p) => ({
              label: p,
              points: decodeFigures.filter((f) => f.policy === p).map((f): [number, number] => [f.cache, f.tokens_per_second]),
            })),
          },
          {
            title: "per-token cost along one stream",
            xLabel: "position in the stream (tokens)",
            yLabel: "ms/token (log)",
            logY: true,
            logX: true,
            series: flatPolicies.map((p) => ({
              label: p === "dense" ? "dense" : p === "sinks" ? `sinks ${sinks}+${flatCache - sinks}` : `recompute W=${flatCache}`,
              points: flat.filter((f) => f.policy === p).map((f): [number, number] => [f.position, f.ms_per_token]),
            })),
          },
        ],
        `${info.architecture} ${(info.parameters / 1e6).toFixed(1)}M params, backend ${info.backend}, ${info.threads} threads, ${new Date().toISOString().slice(0, 10)}`,
      );
      await writeFile(svgPath, svg);
      process.stdout.write(`\nwrote ${values.out} and ${svgPath}\n`);
    }
  } finally {
    await engine.close();
    if (tempDir) await rm(tempDir, { recursive: true, force: true });
  }
}
