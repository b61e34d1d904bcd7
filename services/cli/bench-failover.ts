/**
 * `streamsink bench failover`: the failover figures of docs/snapshots.md, on a
 * real Kafka and a real Redis (bench/failover.sh starts both and runs this).
 *
 * - Snapshot cost: one worker (in this process) serves sessions in a closed
 *   loop over the Kafka log (append, then generate, again), once with the
 *   default snapshot cadence and once with snapshots off (no checkpoint
 *   during the run), alternating. Throughput is tokens through the engine
 *   per second; the overhead is 1 - on/off. Snapshot bytes per token and per
 *   second come from the worker's own counters.
 * - Restore: a session filled past its cache (S+W) is snapshotted to Redis,
 *   then restored (read, checked, imported) repeatedly.
 * - Kill to resume: worker processes serve sessions in a closed loop; one is
 *   killed with SIGKILL; for each session it owned, the time from the kill to
 *   the first output record of that session written afterwards (by the new
 *   owner). Most of it is Kafka noticing the dead member (session timeout).
 * A benchmark: it prints figures and writes JSON; nothing is asserted.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { randomUUID } from "node:crypto";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";

import { Redis } from "ioredis";
import { type Consumer, Kafka, logLevel, type Producer } from "kafkajs";

import { Engine } from "../engine/index.js";
import { freePort } from "../free-port.js";
import { packageRoot } from "../package-root.js";
import { loadWorkerConfig } from "../worker/config.js";
import { partitionOf } from "../worker/kafka/partitioner.js";
import { encodeInputRecord } from "../worker/kafka/record-codec.js";
import { createLogger } from "../worker/logger.js";
import { RedisKeys } from "../worker/redis/keys.js";
import { RedisSnapshotStore } from "../worker/redis/redis-snapshot-store.js";
import { Snapshotter } from "../worker/snapshotter.js";
import { Worker } from "../worker/worker.js";
import { renderSvg } from "./svg-plot.js";
import { parseIntFlag, UsageError } from "./usage-error.js";

export const BENCH_FAILOVER_USAGE = `usage: streamsink bench failover --kafka-brokers H:P --redis-url URL [--model DIR] [--sinks 4] [--window 1020]
         [--sessions 16] [--seconds 20] [--rounds 3] [--restores 30] [--kill-sessions 48] [--kills 3]
         [--only restore,throughput,kill] [--out FILE] [--plot FILE.svg]`;

function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const s = [...values].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

const round3 = (x: number) => Math.round(x * 1000) / 1000;

/** A deterministic token stream per session (xorshift), within the vocabulary. */
function tokenSource(seed: number, vocab: number): (n: number) => number[] {
  let x = (seed * 2654435761) >>> 0 || 1;
  return (n) =>
    Array.from({ length: n }, () => {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      return 3 + (x % (vocab - 3));
    });
}

interface OutRecord {
  type: string;
  session: string;
  request_id: string;
  tokens?: number[];
}

/** Reads an output topic from its start; calls `onRecord` for each record. */
async function watchOutput(kafka: Kafka, topic: string, onRecord: (r: OutRecord, timestampMs: number) => void): Promise<Consumer> {
  const consumer = kafka.consumer({ groupId: `bench-watch-${randomUUID()}`, maxWaitTimeInMs: 20 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  await consumer.run({ eachMessage: async ({ message }) => onRecord(JSON.parse(message.value!.toString()) as OutRecord, Number(message.timestamp)) });
  return consumer;
}

interface ThroughputRun {
  snapshots: "on" | "off";
  seconds: number;
  tokens: number;
  tokens_per_second: number;
  snapshots_written: number;
  snapshot_bytes: number;
}

/**
 * A closed loop of `sessions` sessions on one in-process worker for `seconds`:
 * each appends 32 tokens, then generates 16, and again.
 */
async function throughputRun(opts: {
  kafka: Kafka;
  brokers: string;
  redisUrl: string;
  model: string | undefined;
  sinks: number;
  window: number;
  sessions: number;
  seconds: number;
  snapshots: boolean;
}): Promise<ThroughputRun> {
  const run = `bench-fo-${randomUUID().slice(0, 8)}`;
  const args = [
    ...["--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--sinks", String(opts.sinks), "--window", String(opts.window)],
    ...["--kafka-brokers", opts.brokers, "--redis-url", opts.redisUrl, "--kafka-partitions", "4", "--kafka-group", run],
    ...["--kafka-input-topic", `${run}.in`, "--kafka-output-topic", `${run}.out`, "--kafka-dead-letter-topic", `${run}.dlq`],
    // Off: no checkpoint can fall inside the run.
    ...(opts.snapshots ? [] : ["--snapshot-interval-ms", "3600000", "--snapshot-every-tokens", "0"]),
  ];
  if (opts.model) args.push("--model", opts.model);
  const worker = await Worker.start(loadWorkerConfig(args, {}), { log: createLogger("error"), redisPrefix: run });
  const vocab = worker.engine.info.vocabSize;
  const producer = opts.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  let tokens = 0;
  let measuring = false;
  let stopping = false;
  const sources = Array.from({ length: opts.sessions }, (_, k) => tokenSource(k + 1, vocab));
  const counters = new Array<number>(opts.sessions).fill(0);
  const next = (k: number, kind: "append" | "generate") => {
    if (stopping) return;
    const session = `${run}-s${k}`;
    const requestId = `r${counters[k]!++}`;
    const op =
      kind === "append"
        ? { kind: "append" as const, session, requestId, input: { tokens: sources[k]!(32) } }
        : { kind: "generate" as const, session, requestId, maxNewTokens: 16 };
    void producer.send({ topic: `${run}.in`, messages: [{ key: session, value: encodeInputRecord(op) }] }).catch(() => undefined);
  };
  const watcher = await watchOutput(opts.kafka, `${run}.out`, (r) => {
    const k = Number(r.session.slice(r.session.lastIndexOf("-s") + 2));
    if (r.type === "appended") {
      if (measuring) tokens += r.tokens?.length ?? 0;
      next(k, "generate");
    } else if (r.type === "token") {
      if (measuring) tokens += 1;
    } else if (r.type === "finished") {
      next(k, "append");
    }
  });
  try {
    for (let k = 0; k < opts.sessions; k++) next(k, "append");
    // Warm-up: every session's cache fills past S+W first (the steady state).
    await new Promise((r) => setTimeout(r, Math.min(10_000, opts.seconds * 500)));
    const saved0 = { bytes: await counterValue(worker, "bytes"), count: await counterValue(worker, "saved") };
    measuring = true;
    const t0 = performance.now();
    await new Promise((r) => setTimeout(r, opts.seconds * 1000));
    measuring = false;
    const wall = (performance.now() - t0) / 1000;
    const bytes = (await counterValue(worker, "bytes")) - saved0.bytes;
    const count = (await counterValue(worker, "saved")) - saved0.count;
    return {
      snapshots: opts.snapshots ? "on" : "off",
      seconds: round3(wall),
      tokens,
      tokens_per_second: round3(tokens / wall),
      snapshots_written: count,
      snapshot_bytes: bytes,
    };
  } finally {
    stopping = true;
    await watcher.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    await worker.stop(2000).catch(() => undefined);
  }
}

async function counterValue(worker: Worker, which: "bytes" | "saved"): Promise<number> {
  const metric = which === "bytes" ? worker.metrics.snapshotBytes : worker.metrics.snapshotsSaved;
  const m = await metric.get();
  return m.values[0]?.value ?? 0;
}

/** Restore of one session with a full S+W cache: Redis read, envelope and checksum checks, import. */
async function restoreTimes(opts: { redisUrl: string; model: string | undefined; sinks: number; window: number; restores: number }) {
  const engine = await Engine.load(opts.model ?? join(packageRoot(), "models", "streamsink-llama-7m"), { backend: "auto" });
  const redis = new Redis(opts.redisUrl);
  try {
    const store = new RedisSnapshotStore(redis, new RedisKeys(`bench-restore-${randomUUID().slice(0, 8)}`), 600);
    const snapshots = new Snapshotter(engine, store, createLogger("error"));
    const session = await engine.openSession({ policy: "sinks", sinks: opts.sinks, window: opts.window, sinkToken: "model" });
    const cache = opts.sinks + opts.window;
    await session.append(tokenSource(7, engine.info.vocabSize)(cache + 64));
    const bytes = await session.export();
    await store.save("s", bytes, { partition: 0, inputOffset: "0" });
    await session.close();
    const ms: number[] = [];
    for (let i = 0; i < opts.restores; i++) {
      const t0 = performance.now();
      const r = await snapshots.restore("s");
      ms.push(performance.now() - t0);
      if (!r || !("session" in r)) throw new Error("restore failed in the benchmark");
      await r.session.close();
    }
    return { cache, snapshot_bytes: bytes.length, restores: opts.restores, ms_p50: round3(percentile(ms, 50)), ms_p99: round3(percentile(ms, 99)), ms_mean: round3(ms.reduce((a, b) => a + b, 0) / ms.length) };
  } finally {
    redis.disconnect();
    await engine.close();
  }
}

interface WorkerChild {
  port: number;
  proc: ChildProcess;
  exited: Promise<void>;
}


/** Every worker process started, so all are killed however the run ends. */
const children = new Set<ChildProcess>();

async function startWorkerProcess(env: Record<string, string>): Promise<WorkerChild> {
  const port = await freePort();
  const proc = spawn(
    process.execPath,
    [join(packageRoot(), "dist", "services", "cli", "main.js"), "serve", "--grpc-host", "127.0.0.1", "--grpc-port", String(port), "--metrics-port", "0"],
    { env: { ...process.env, STREAMSINK_THREADS: "1", ...env }, stdio: ["ignore", "pipe", "pipe"] },
  );
  children.add(proc);
  const exited = new Promise<void>((resolve) => proc.once("exit", () => resolve()));
  let out = "";
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`worker did not start:\n${out.slice(-2000)}`)), 120_000);
    const onData = (d: Buffer) => {
      out += d.toString();
      if (out.includes('"worker serving"')) {
        clearTimeout(timer);
        resolve();
      }
    };
    // Logs are JSON lines on stderr.
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.once("exit", (code) => reject(new Error(`worker exited (${code}) before serving:\n${out.slice(-2000)}`)));
  });
  proc.stdout!.removeAllListeners("data").resume();
  proc.stderr!.removeAllListeners("data").resume();
  return { port, proc, exited };
}

/** Kill to first resumed output, per session of the killed worker. */
async function killToResume(opts: { kafka: Kafka; brokers: string; redisUrl: string; model: string | undefined; sinks: number; window: number; sessions: number; kills: number }) {
  const run = `bench-kill-${randomUUID().slice(0, 8)}`;
  const partitions = 6;
  const env: Record<string, string> = {
    STREAMSINK_KAFKA_BROKERS: opts.brokers,
    STREAMSINK_REDIS_URL: opts.redisUrl,
    STREAMSINK_KAFKA_INPUT_TOPIC: `${run}.in`,
    STREAMSINK_KAFKA_OUTPUT_TOPIC: `${run}.out`,
    STREAMSINK_KAFKA_DEAD_LETTER_TOPIC: `${run}.dlq`,
    STREAMSINK_KAFKA_GROUP: run,
    STREAMSINK_KAFKA_PARTITIONS: String(partitions),
    STREAMSINK_SNAPSHOT_INTERVAL_MS: "500",
    STREAMSINK_SINKS: String(opts.sinks),
    STREAMSINK_WINDOW: String(opts.window),
    ...(opts.model ? { STREAMSINK_MODEL: opts.model } : {}),
  };
  const workers: WorkerChild[] = [];
  const producer: Producer = opts.kafka.producer({ idempotent: true, maxInFlightRequests: 1 });
  await producer.connect();
  const redis = new Redis(opts.redisUrl);
  const ownersKey = new RedisKeys().owners(run, `${run}.in`);
  const lastOutput = new Array<number>(opts.sessions).fill(0);
  /** Wall-clock ms of the kill, and per session the create time of its first output record written after it. */
  let killedAt = Number.POSITIVE_INFINITY;
  const firstAfter = new Map<number, number>();
  const counters = new Array<number>(opts.sessions).fill(0);
  const sources = Array.from({ length: opts.sessions }, (_, k) => tokenSource(k + 11, 256));
  let stopping = false;
  const send = (k: number) => {
    if (stopping) return;
    const session = `${run}-s${k}`;
    const op = { kind: "append" as const, session, requestId: `r${counters[k]!++}`, input: { tokens: sources[k]!(8) } };
    void producer.send({ topic: `${run}.in`, messages: [{ key: session, value: encodeInputRecord(op) }] }).catch(() => undefined);
  };
  const waitAll = async (what: string, pred: () => boolean) => {
    const deadline = Date.now() + 180_000;
    while (!pred()) {
      if (Date.now() > deadline) throw new Error(`bench failover: timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  let watcher: Consumer | undefined;
  const resumeMs: number[] = [];
  const perKill: Array<{ sessions: number; ms_p50: number; ms_max: number }> = [];
  try {
    workers.push(await startWorkerProcess(env));
    workers.push(...(await Promise.all([startWorkerProcess(env), startWorkerProcess(env)])));
    watcher = await watchOutput(opts.kafka, `${run}.out`, (r, timestamp) => {
      const k = Number(r.session.slice(r.session.lastIndexOf("-s") + 2));
      lastOutput[k] = performance.now();
      // Written (by its producer's clock) after the kill: records the victim sent before dying are earlier.
      if (timestamp > killedAt && !firstAfter.has(k)) firstAfter.set(k, timestamp);
      // Closed loop: the next append once this one's result is out (a replayed duplicate sends nothing more).
      if (r.type === "appended" && Number(r.request_id.slice(1)) === counters[k]! - 1) send(k);
    });
    for (let k = 0; k < opts.sessions; k++) send(k);
    for (let kill = 0; kill < opts.kills; kill++) {
      // Steady: every session produced output recently (after any earlier rebalance).
      const since = performance.now();
      await waitAll("steady state", () => lastOutput.every((t) => t > since + 1000));
      const owners = await redis.hgetall(ownersKey);
      const victim = workers[kill % workers.length]!;
      const victimPartitions = new Set(Object.entries(owners).filter(([, a]) => a.endsWith(`:${victim.port}`)).map(([p]) => Number(p)));
      const victims = [...Array(opts.sessions).keys()].filter((k) => victimPartitions.has(partitionOf(`${run}-s${k}`, partitions)));
      firstAfter.clear();
      killedAt = Date.now();
      victim.proc.kill("SIGKILL");
      await victim.exited;
      workers.splice(workers.indexOf(victim), 1);
      await waitAll("resumed sessions", () => victims.every((k) => firstAfter.has(k)));
      const ms = victims.map((k) => firstAfter.get(k)! - killedAt);
      killedAt = Number.POSITIVE_INFINITY;
      resumeMs.push(...ms);
      perKill.push({ sessions: victims.length, ms_p50: round3(percentile(ms, 50)), ms_max: round3(Math.max(...ms)) });
      workers.push(await startWorkerProcess(env));
    }
  } finally {
    stopping = true;
    await watcher?.disconnect().catch(() => undefined);
    await producer.disconnect().catch(() => undefined);
    redis.disconnect();
    for (const proc of children) if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGKILL");
    children.clear();
    await Promise.all(workers.map((w) => w.exited));
  }
  return {
    kills: opts.kills,
    sessions: opts.sessions,
    resumed_sessions: resumeMs.length,
    ms_p50: round3(percentile(resumeMs, 50)),
    ms_p99: round3(percentile(resumeMs, 99)),
    per_kill: perKill,
    ms_all: resumeMs.sort((a, b) => a - b),
  };
}

export async function runBenchFailover(argv: string[]): Promise<void> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      "kafka-brokers": { type: "string" },
      "redis-url": { type: "string" },
      model: { type: "string" },
      sinks: { type: "string", default: "4" },
      window: { type: "string", default: "1020" },
      sessions: { type: "string", default: "16" },
      only: { type: "string" },
      seconds: { type: "string", default: "20" },
      rounds: { type: "string", default: "3" },
      restores: { type: "string", default: "30" },
      "kill-sessions": { type: "string", default: "48" },
      kills: { type: "string", default: "3" },
      out: { type: "string" },
      plot: { type: "string" },
    },
  });
  const brokers = values["kafka-brokers"];
  const redisUrl = values["redis-url"];
  if (!brokers || !redisUrl) throw new UsageError("bench failover needs --kafka-brokers and --redis-url (bench/failover.sh starts both)");
  const sinks = parseIntFlag("sinks", values.sinks, 0)!;
  const window = parseIntFlag("window", values.window, 1)!;
  const sessions = parseIntFlag("sessions", values.sessions, 1)!;
  const seconds = parseIntFlag("seconds", values.seconds, 1)!;
  const rounds = parseIntFlag("rounds", values.rounds, 1)!;
  const kafka = new Kafka({ clientId: "bench-failover", brokers: brokers.split(","), logLevel: logLevel.NOTHING, retry: { retries: 30 } });
  const started = new Date().toISOString();
  const parts = new Set((values.only ?? "restore,throughput,kill").split(",").map((p) => p.trim()));
  for (const p of parts) if (!["restore", "throughput", "kill"].includes(p)) throw new UsageError(`--only: unknown part "${p}"`);

  let restore: Awaited<ReturnType<typeof restoreTimes>> | undefined;
  if (parts.has("restore")) {
    process.stdout.write(`restore at cache ${sinks}+${window} ...\n`);
    restore = await restoreTimes({ redisUrl, model: values.model, sinks, window, restores: parseIntFlag("restores", values.restores, 1)! });
    process.stdout.write(`  snapshot ${restore.snapshot_bytes} bytes; restore p50 ${restore.ms_p50} ms, p99 ${restore.ms_p99} ms\n`);
  }

  const runs: ThroughputRun[] = [];
  for (let r = 0; r < (parts.has("throughput") ? rounds : 0); r++)
    for (const on of r % 2 === 0 ? [true, false] : [false, true]) {
      process.stdout.write(`throughput, snapshots ${on ? "on" : "off"}, ${sessions} sessions, ${seconds} s ...\n`);
      const run = await throughputRun({ kafka, brokers, redisUrl, model: values.model, sinks, window, sessions, seconds, snapshots: on });
      process.stdout.write(`  ${run.tokens_per_second} tokens/s; ${run.snapshots_written} snapshots, ${run.snapshot_bytes} bytes\n`);
      runs.push(run);
    }
  const sum = (on: "on" | "off", key: "tokens" | "seconds" | "snapshot_bytes" | "snapshots_written") =>
    runs.filter((x) => x.snapshots === on).reduce((a, x) => a + x[key], 0);
  const tpsOn = sum("on", "tokens") / sum("on", "seconds");
  const tpsOff = sum("off", "tokens") / sum("off", "seconds");
  const snapshotCost = runs.length === 0 ? undefined : {
    tokens_per_second_on: round3(tpsOn),
    tokens_per_second_off: round3(tpsOff),
    overhead_fraction: round3(1 - tpsOn / tpsOff),
    snapshot_bytes_per_token: round3(sum("on", "snapshot_bytes") / sum("on", "tokens")),
    snapshot_bytes_per_second: round3(sum("on", "snapshot_bytes") / sum("on", "seconds")),
    bytes_per_snapshot: round3(sum("on", "snapshot_bytes") / Math.max(1, sum("on", "snapshots_written"))),
    runs,
  };
  if (snapshotCost)
    process.stdout.write(
    `  overhead ${(snapshotCost.overhead_fraction * 100).toFixed(1)}%; ${snapshotCost.snapshot_bytes_per_token} snapshot bytes/token, ${snapshotCost.snapshot_bytes_per_second} bytes/s\n`,
  );

  const killSessions = parseIntFlag("kill-sessions", values["kill-sessions"], 1)!;
  const kills = parseIntFlag("kills", values.kills, 1)!;
  let resume: Awaited<ReturnType<typeof killToResume>> | undefined;
  if (parts.has("kill")) {
    process.stdout.write(`kill -9 to first resumed output, 3 worker processes, ${killSessions} sessions, ${kills} kills ...\n`);
    resume = await killToResume({ kafka, brokers, redisUrl, model: values.model, sinks, window, sessions: killSessions, kills });
    process.stdout.write(`  p50 ${resume.ms_p50} ms, p99 ${resume.ms_p99} ms over ${resume.resumed_sessions} resumed sessions\n`);
  }

  const result = {
    benchmark: "failover",
    started,
    command: `streamsink bench failover ${argv.join(" ")}`,
    cache: { sinks, window },
    ...(restore ? { restore } : {}),
    ...(snapshotCost
      ? { snapshot_cost: { sessions, seconds_per_run: seconds, rounds, cadence: "default (--snapshot-interval-ms 2000, --snapshot-every-tokens 512)", ...snapshotCost } }
      : {}),
    ...(resume ? { kill_to_resume: { note: "Kafka consumer session timeout is 10 s: the group notices a killed worker only then", ...resume } } : {}),
  };
  if (values.out) {
    await mkdir(dirname(values.out), { recursive: true });
    await writeFile(values.out, JSON.stringify(result, null, 2) + "\n");
    process.stdout.write(`wrote ${values.out}\n`);
  }
  if (values.plot && resume && snapshotCost) {
    await writeFile(values.plot, failoverPlot(result as FailoverResult));
    process.stdout.write(`wrote ${values.plot}\n`);
  }
}

interface FailoverResult {
  cache: { sinks: number; window: number };
  snapshot_cost: { runs: ThroughputRun[] };
  kill_to_resume: { ms_all: number[] };
}

/** The SVG of a result: kill-to-resume percentiles, and throughput per run with snapshots on and off. */
export function failoverPlot(result: FailoverResult): string {
  const ms = result.kill_to_resume.ms_all;
  const runs = result.snapshot_cost.runs;
  return renderSvg(
    [
      {
        title: "Kill -9 to first resumed output",
        xLabel: "percentile of resumed sessions",
        yLabel: "ms",
        series: [{ label: "sessions of the killed workers", points: [10, 20, 30, 40, 50, 60, 70, 80, 90, 99].map((p): [number, number] => [p, percentile(ms, p)]) }],
      },
      {
        title: "Throughput with snapshots on and off",
        xLabel: "run",
        yLabel: "tokens/s",
        series: (["on", "off"] as const).map((on) => ({
          label: `snapshots ${on}`,
          points: runs.filter((x) => x.snapshots === on).map((x, i): [number, number] => [i + 1, x.tokens_per_second]),
        })),
      },
    ],
    `streamsink bench failover, cache ${result.cache.sinks}+${result.cache.window}`,
  );
}
