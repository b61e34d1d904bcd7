#!/usr/bin/env node
/**
 * The `streamsink` command line.
 *   streamsink score ...   stream a file through a session, report perplexity
 *   streamsink bench ...   tokens/s and per-token latency per cache policy
 */
import { status } from "@grpc/grpc-js";

import { EngineError } from "../engine/index.js";
import { ConfigError, serveUsage } from "../worker/config.js";
import { BENCH_USAGE, runBench } from "./bench.js";
import { BENCH_SERVICE_USAGE, runBenchService } from "./bench-service.js";
import { BENCH_FAILOVER_USAGE, runBenchFailover } from "./bench-failover.js";
import { CHAT_USAGE, FEED_USAGE, GENERATE_USAGE, runChat, runFeed, runGenerate } from "./client-commands.js";
import { LOAD_USAGE, runLoad } from "./load.js";
import { PLOT_USAGE, runPlot } from "./plot.js";
import { runServe } from "./serve.js";
import { runScore, SCORE_USAGE } from "./score.js";
import { UsageError } from "./usage-error.js";

const USAGE = `usage: streamsink <command> [options]

commands:
  serve     run a worker: gRPC API, Kafka input (optional), snapshots
  generate  stream a generation from a running server
  chat      line-by-line chat with a session on a running server
  feed      stream a text file into a session on a running server
  score     stream text or token ids through one session; mean NLL and perplexity
  bench     tokens/s and per-token latency per cache policy and cache size
  plot      SVG plots of score reports (NLL along the stream) or sink metrics
  load      drive N sessions against a local worker for T minutes: throughput, p50/p99, memory, errors

${serveUsage()}

${GENERATE_USAGE}

${CHAT_USAGE}

${FEED_USAGE}

${SCORE_USAGE}

${BENCH_USAGE}

${BENCH_SERVICE_USAGE}

${BENCH_FAILOVER_USAGE}

${PLOT_USAGE}

${LOAD_USAGE}`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  try {
    switch (command) {
      case "serve":
        await runServe(rest);
        return 0;
      case "generate":
        await runGenerate(rest);
        return 0;
      case "chat":
        await runChat(rest);
        return 0;
      case "feed":
        await runFeed(rest);
        return 0;
      case "score":
        await runScore(rest);
        return 0;
      case "bench":
        if (rest[0] === "service") await runBenchService(rest.slice(1));
        else if (rest[0] === "failover") await runBenchFailover(rest.slice(1));
        else await runBench(rest);
        return 0;
      case "plot":
        await runPlot(rest);
        return 0;
      case "load":
        await runLoad(rest);
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
    const e = err as { code?: unknown; message?: string };
    if (err instanceof UsageError || (typeof e.code === "string" && e.code.startsWith("ERR_PARSE_ARGS"))) {
      process.stderr.write(`streamsink: ${e.message}\n\n${USAGE}\n`);
      return 2;
    }
    if (err instanceof ConfigError) {
      process.stderr.write(`streamsink: ${err.message}\n`);
      return 2;
    }
    if (typeof (err as { code?: unknown }).code === "number" && typeof (err as { details?: unknown }).details === "string") {
      const g = err as { code: number; details: string };
      process.stderr.write(`streamsink: ${g.details} (${status[g.code] ?? g.code})\n`);
      return 1;
    }
    if (err instanceof EngineError) {
      process.stderr.write(`streamsink: ${err.message} (${err.code})\n`);
      return 1;
    }
    process.stderr.write(`streamsink: ${e.message ?? String(err)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
// A failed command may leave client handles open (Kafka, gRPC channels): exit
// rather than wait for them. stderr is written synchronously to files and pipes.
if (code !== 0) process.exit(code);
process.exitCode = code;
