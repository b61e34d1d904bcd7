#!/usr/bin/env node
/**
 * The `streamsink` command line.
 *   streamsink score ...   stream a file through a session, report perplexity
 *   streamsink bench ...   tokens/s and per-token latency per cache policy
 */
import { EngineError } from "../engine/index.js";
import { BENCH_USAGE, runBench } from "./bench.js";
import { runScore, SCORE_USAGE } from "./score.js";
import { UsageError } from "./usage-error.js";

const USAGE = `usage: streamsink <command> [options]

commands:
  score   stream text or token ids through one session; mean NLL and perplexity
  bench   tokens/s and per-token latency per cache policy and cache size

${SCORE_USAGE}

${BENCH_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "score":
        await runScore(rest);
        return 0;
      case "bench":
        await runBench(rest);
        return 0;
      case "help":
      case "--help":
      case "-h":
        process.stdout.write(USAGE + "\n");
        return 0;
      default:
        throw new UsageError(command ? `unknown command "${command}"` : "missing command");
    }
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (err instanceof UsageError || e.code?.startsWith("ERR_PARSE_ARGS")) {
      process.stderr.write(`streamsink: ${e.message}\n\n${USAGE}\n`);
      return 2;
    }
    if (err instanceof EngineError) {
      process.stderr.write(`streamsink: ${err.message} (${err.code})\n`);
      return 1;
    }
    process.stderr.write(`streamsink: ${e.message ?? String(err)}\n`);
    return 1;
  }
}

process.exitCode = await main(process.argv.slice(2));
