/**
 * `streamsink bench service`: the worker end to end against the bare engine,
 * in one run. For 1, 10 and 100 concurrent sessions, clients append a prompt
 * and stream a generation over gRPC (loopback) from a worker started in this
 * process; the worker's own step timings give the engine's share, so the
 * service overhead (scheduler, gRPC, serialisation) is the rest. With
 * --kafka-brokers the same runs go through the Kafka log: latency is measured
 * from producing a generate record to reading its finished record.
 * A benchmark: it prints figures and writes JSON; nothing is asserted.
 */
import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { parseArgs } from "node:util";

import { Kafka, logLevel } from "kafkajs";

import { StreamsinkClient } from "../grpc/grpc-client.js";
import { loadWorkerConfig } from "../worker/config.js";
import { encodeInputRecord } from "../worker/kafka/record-codec.js";
import { createLogger } from "../worker/logger.js";
import { Worker } from "../worker/worker.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const BENCH_SERVICE_USAGE = `usage: streamsink bench service [--model DIR] [--sessions 1,10,100] [--tokens N] [--prompt N]
         [--kafka-brokers H:P] [--out FILE]`;

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function engineSeconds(worker: Worker): Promise<{ sum: number; count: number }> {
  const m = await worker.metrics.stepSeconds.get();
  const sum = m.values.find((v) => v.metricName === "streamsink_engine_step_seconds_sum")?.value ?? 0;
  const count = m.values.find((v) => v.metricName === "streamsink_engine_step_seconds_count")?.value ?? 0;
  return { sum, count };
}

interface RunFigures {
  transport: "grpc" | "kafka";
  sessions: number;
  tokens_per_session: number;
  wall_s: number;
  engine_s: number;
  steps: number;
  overhead_fraction: number;
  overhead_ms_per_step: number;
  tokens_per_second: number;
  ttft_ms_p50: number;
  ttft_ms_p99: number;
  inter_token_ms_p50: number;
  inter_token_ms_p99: number;
  request_ms_p50: number;
  request_ms_p99: number;
}

export async function runBenchService(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      model: { type: "string" },
      sessions: { type: "string", default: "1,10,100" },
      tokens: { type: "string", default: "32" },
      prompt: { type: "string", default: "16" },
      "kafka-brokers": { type: "string" },
      out: { type: "string" },
    },
  });
  const sessionsList = values.sessions.split(",").map((s) => parseIntFlag("sessions", s.trim(), 1)!);
  const tokens = parseIntFlag("tokens", values.tokens, 1)!;
  const promptLen = parseIntFlag("prompt", values.prompt, 1)!;
  if (sessionsList.length === 0) throw new UsageError("--sessions needs at least one value");

  const log = createLogger("warn");
  const results: RunFigures[] = [];
  const transports: Array<"grpc" | "kafka"> = values["kafka-brokers"] ? ["grpc", "kafka"] : ["grpc"];
  for (const transport of transports) {
    const run = randomUUID().slice(0, 8);
    const args = ["--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--max-sessions", "100000"];
    if (values.model) args.push("--model", values.model);
    if (transport === "kafka")
      args.push(
        "--kafka-brokers",
        values["kafka-brokers"]!,
        "--kafka-input-topic",
        `bench-${run}.input`,
        "--kafka-output-topic",
        `bench-${run}.output`,
        "--kafka-dead-letter-topic",
        `bench-${run}.dlq`,
        "--kafka-group",
        `bench-${run}`,
        "--snapshot-dir",
        `/tmp/streamsink-bench-${run}`,
      );
    else args.push("--snapshot-dir", `/tmp/streamsink-bench-${run}`);
    const worker = await Worker.start(loadWorkerConfig(args, {}), { log, snapshotIntervalMs: 60_000 });
    const vocab = worker.engine.info.vocabSize;
    const address = worker.advertiseAddress;
    try {
      for (const n of sessionsList) {
        const client = await StreamsinkClient.connect(address);
        const prompts = Array.from({ length: n }, (_, i) => Array.from({ length: promptLen }, (_, j) => (i * 131 + j * 17) % vocab));
        const ids = prompts.map((_, i) => `bench-${run}-${n}-${i}`);
        await Promise.all(ids.map((id, i) => client.append({ sessionId: id, input: { tokens: prompts[i]! } })));
        let engineBefore = await engineSeconds(worker);
        const ttft: number[] = [];
        const inter: number[] = [];
        const request: number[] = [];
        let t0 = performance.now();
        if (transport === "grpc") {
          await Promise.all(
            ids.map(async (id) => {
              const start = performance.now();
              let last = start;
              let first = true;
              for await (const e of client.generate({ sessionId: id, maxNewTokens: tokens })) {
                if (e.type !== "token") continue;
                const now = performance.now();
                if (first) ttft.push(now - start);
                else inter.push(now - last);
                first = false;
                last = now;
              }
              request.push(performance.now() - start);
            }),
          );
        } else {
          const kafka = new Kafka({ clientId: "bench", brokers: values["kafka-brokers"]!.split(","), logLevel: logLevel.NOTHING });
          const producer = kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
          const consumer = kafka.consumer({ groupId: `bench-${run}-obs-${n}` });
          await Promise.all([producer.connect(), consumer.connect()]);
          await consumer.subscribe({ topics: [`bench-${run}.output`], fromBeginning: false });
          const sent = new Map<string, number>();
          const lastAt = new Map<string, number>();
          let finished = 0;
          let resolveAll!: () => void;
          const all = new Promise<void>((r) => (resolveAll = r));
          await consumer.run({
            eachMessage: async ({ message }) => {
              const r = JSON.parse(message.value!.toString()) as { request_id: string; type: string };
              const start = sent.get(r.request_id);
              if (start === undefined) return;
              const now = performance.now();
              if (r.type === "token") {
                const prev = lastAt.get(r.request_id);
                if (prev === undefined) ttft.push(now - start);
                else inter.push(now - prev);
                lastAt.set(r.request_id, now);
              } else if (r.type === "finished") {
                request.push(now - start);
                if (++finished === n) resolveAll();
              }
            },
          });
          // Let the observer's partition assignment settle before producing.
          await new Promise((r) => setTimeout(r, 3000));
          t0 = performance.now();
          engineBefore = await engineSeconds(worker);
          await Promise.all(
            ids.map(async (id) => {
              const requestId = `g-${id}`;
              sent.set(requestId, performance.now());
              await producer.send({
                topic: `bench-${run}.input`,
                messages: [{ key: id, value: encodeInputRecord({ kind: "generate", session: id, requestId, maxNewTokens: tokens }) }],
              });
            }),
          );
          await all;
          await Promise.all([producer.disconnect(), consumer.disconnect()]);
        }
        const wall = (performance.now() - t0) / 1000;
        const after = await engineSeconds(worker);
        const engine = after.sum - engineBefore.sum;
        const steps = after.count - engineBefore.count;
        results.push({
          transport,
          sessions: n,
          tokens_per_session: tokens,
          wall_s: wall,
          engine_s: engine,
          steps,
          overhead_fraction: (wall - engine) / wall,
          overhead_ms_per_step: steps > 0 ? ((wall - engine) * 1000) / steps : Number.NaN,
          tokens_per_second: (n * tokens) / wall,
          ttft_ms_p50: percentile(ttft, 50),
          ttft_ms_p99: percentile(ttft, 99),
          inter_token_ms_p50: percentile(inter, 50),
          inter_token_ms_p99: percentile(inter, 99),
          request_ms_p50: percentile(request, 50),
          request_ms_p99: percentile(request, 99),
        });
        client.close();
      }
    } finally {
      await worker.stop(1000);
    }
  }

  const info = `${new Date().toISOString().slice(0, 10)}, model ${values.model ?? "bundled"}, ${tokens} generated tokens per session, prompt ${promptLen}`;
  process.stdout.write(`service vs bare engine (${info})\n`);
  process.stdout.write(
    "  transport sessions  tok/s    engine%  overhead ms/step  TTFT p50/p99 ms   inter-token p50/p99 ms  request p50/p99 ms\n",
  );
  for (const r of results) {
    process.stdout.write(
      `  ${r.transport.padEnd(9)} ${String(r.sessions).padStart(8)}  ${r.tokens_per_second.toFixed(1).padStart(7)}  ${((1 - r.overhead_fraction) * 100).toFixed(1).padStart(6)}%  ` +
        `${r.overhead_ms_per_step.toFixed(2).padStart(16)}  ${r.ttft_ms_p50.toFixed(1).padStart(7)}/${r.ttft_ms_p99.toFixed(1).padEnd(8)}  ` +
        `${r.inter_token_ms_p50.toFixed(2).padStart(10)}/${r.inter_token_ms_p99.toFixed(2).padEnd(11)}  ${r.request_ms_p50.toFixed(0).padStart(8)}/${r.request_ms_p99.toFixed(0)}\n`,
    );
  }
  if (values.out) {
    await mkdir(dirname(values.out), { recursive: true });
    await writeFile(values.out, JSON.stringify({ info, results }, null, 2) + "\n");
    process.stdout.write(`wrote ${values.out}\n`);
  }
}
