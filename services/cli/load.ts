/**
 * `streamsink load`: drives N concurrent sessions against a running worker
 * for T minutes and reports throughput, latency percentiles, the worker's
 * resident memory over time and every error. Each session loops: append a
 * chunk of text, generate a few tokens. With --kafka-brokers, --kafka-sessions
 * of them go through the Kafka input topic instead (latency from producing a
 * record to reading its result on the output topic).
 *
 * Bounded on purpose: loopback addresses only, at most 2000 sessions and 120
 * minutes, so it cannot be pointed at someone else's service by mistake.
 */
import { randomUUID } from "node:crypto";
import { mkdir, readFile, writeFile } from "node:fs/promises";
import { dirname } from "node:path";
import { parseArgs } from "node:util";

import { status as Status } from "@grpc/grpc-js";
import { type Consumer, Kafka, logLevel, type Producer } from "kafkajs";

import { type ConnectOptions, StreamsinkClient } from "../grpc/grpc-client.js";
import type { KafkaClientOptions } from "../security/kafka-client-security.js";
import { clientCredentials } from "../security/tls.js";
import { decodeOutputRecord, encodeInputRecord } from "../worker/kafka/record-codec.js";
import type { SessionOp } from "../worker/operations.js";
import { KAFKA_SECURITY_FLAGS, KAFKA_SECURITY_USAGE, kafkaSecurityFromFlags } from "./kafka-client-flags.js";
import { UsageError } from "./usage-error.js";

export const LOAD_USAGE = `usage: streamsink load --server 127.0.0.1:PORT [--sessions 32] [--minutes 1] [--append-words 24] [--generate 8]
         [--metrics-url http://127.0.0.1:9464/metrics | --worker-pid PID] [--token-file F] [--tls-ca F [--tls-cert F --tls-key F]]
         [--kafka-brokers 127.0.0.1:P --kafka-sessions M --kafka-input-topic T --kafka-output-topic T] [--out FILE]
         ${KAFKA_SECURITY_USAGE}
  loopback only; at most 2000 sessions and 120 minutes`;

const MAX_SESSIONS = 2000;
const MAX_MINUTES = 120;
const WORDS = "the river carries every stone a little further down toward the sea while the town above it keeps its lights on".split(" ");

function loopback(address: string, what: string): void {
  const host = address.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  if (!(host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)))
    throw new UsageError(`${what} ${address} is not a loopback address: the load command only drives local workers`);
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]!;
}

interface Recorder {
  append: number[];
  generate: number[];
  firstToken: number[];
  appended: number;
  generated: number;
  requests: number;
  errors: Map<string, number>;
}

function newRecorder(): Recorder {
  return { append: [], generate: [], firstToken: [], appended: 0, generated: 0, requests: 0, errors: new Map() };
}

function recordError(r: Recorder, err: unknown): void {
  const code = (err as { code?: unknown }).code;
  const key = typeof code === "number" ? (Status[code] ?? String(code)) : (err as Error).name || "Error";
  r.errors.set(key, (r.errors.get(key) ?? 0) + 1);
}

function text(session: number, round: number, words: number): string {
  const out: string[] = [];
  for (let i = 0; i < words; i++) out.push(WORDS[(session * 7 + round * 3 + i) % WORDS.length]!);
  return `${out.join(" ")}. `;
}

async function grpcSession(client: StreamsinkClient, id: string, index: number, until: number, words: number, generate: number, r: Recorder): Promise<void> {
  for (let round = 0; Date.now() < until; round++) {
    let t0 = performance.now();
    try {
      const res = await client.append({ sessionId: id, input: { text: text(index, round, words) } });
      r.append.push(performance.now() - t0);
      r.appended += res.tokensAppended;
      r.requests++;
      t0 = performance.now();
      let first = true;
      for await (const e of client.generate({ sessionId: id, maxNewTokens: generate, sampling: { temperature: 0.8, topP: 0.95, seed: round } })) {
        if (e.type === "token" && first) {
          r.firstToken.push(performance.now() - t0);
          first = false;
        }
        if (e.type === "finished") r.generated += e.generatedTokens;
      }
      r.generate.push(performance.now() - t0);
      r.requests++;
    } catch (err) {
      recordError(r, err);
      r.requests++;
    }
  }
}

/** Kafka sessions: one producer, one output consumer, results matched by request id. */
class KafkaDriver {
  readonly #waiters = new Map<string, (outcome: { error?: string; generated?: number; appended?: number }) => void>();
  private constructor(
    readonly producer: Producer,
    readonly consumer: Consumer,
    readonly inputTopic: string,
  ) {}

  static async start(brokers: string[], security: KafkaClientOptions, inputTopic: string, outputTopic: string): Promise<KafkaDriver> {
    const kafka = new Kafka({ clientId: "streamsink-load", brokers, ...security, logLevel: logLevel.NOTHING });
    const producer = kafka.producer();
    await producer.connect();
    const consumer = kafka.consumer({ groupId: `streamsink-load-${randomUUID()}` });
    await consumer.connect();
    await consumer.subscribe({ topic: outputTopic, fromBeginning: false });
    const driver = new KafkaDriver(producer, consumer, inputTopic);
    let joined!: () => void;
    const ready = new Promise<void>((resolve) => (joined = resolve));
    consumer.on(consumer.events.GROUP_JOIN, () => joined());
    await consumer.run({
      eachMessage: async ({ message }) => {
        const record = decodeOutputRecord(message.value);
        if (!record) return;
        const waiter = driver.#waiters.get(record.requestId);
        if (!waiter) return;
        if ("error" in record) waiter({ error: record.error.code });
        else if (record.event.kind === "finished") waiter({ generated: record.event.generatedTokens });
        else if (record.event.kind === "appended") waiter({ appended: record.event.tokens.length });
        else return;
        driver.#waiters.delete(record.requestId);
      },
    });
    await ready;
    return driver;
  }

  async run(op: SessionOp): Promise<{ error?: string; generated?: number; appended?: number }> {
    const outcome = new Promise<{ error?: string; generated?: number; appended?: number }>((resolve) => this.#waiters.set(op.requestId, resolve));
    await this.producer.send({ topic: this.inputTopic, messages: [{ key: op.session, value: encodeInputRecord(op) }] });
    return outcome;
  }

  async stop(): Promise<void> {
    await this.consumer.disconnect();
    await this.producer.disconnect();
  }
}

async function kafkaSession(driver: KafkaDriver, id: string, index: number, until: number, words: number, generate: number, r: Recorder): Promise<void> {
  for (let round = 0; Date.now() < until; round++) {
    let t0 = performance.now();
    const a = await driver.run({ kind: "append", session: id, requestId: randomUUID(), input: { text: text(index, round, words) } });
    r.requests++;
    if (a.error) {
      r.errors.set(a.error, (r.errors.get(a.error) ?? 0) + 1);
      continue;
    }
    r.append.push(performance.now() - t0);
    r.appended += a.appended ?? 0;
    t0 = performance.now();
    const g = await driver.run({ kind: "generate", session: id, requestId: randomUUID(), maxNewTokens: generate, sampling: { temperature: 0.8, topP: 0.95, seed: round } });
    r.requests++;
    if (g.error) r.errors.set(g.error, (r.errors.get(g.error) ?? 0) + 1);
    else {
      r.generate.push(performance.now() - t0);
      r.generated += g.generated ?? 0;
    }
  }
}

/** VmRSS of a local process, from /proc (Linux). */
async function processResidentBytes(pid: number): Promise<number | undefined> {
  try {
    const m = /^VmRSS:\s+(\d+) kB$/m.exec(await readFile(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

async function residentBytes(metricsUrl: string): Promise<number | undefined> {
  try {
    const body = await (await fetch(metricsUrl)).text();
    const m = /^(?:streamsink_)?process_resident_memory_bytes (\d+(?:\.\d+)?(?:e\+\d+)?)$/m.exec(body);
    return m ? Number(m[1]) : undefined;
  } catch {
    return undefined;
  }
}

function summary(r: Recorder, seconds: number): Record<string, unknown> {
  const s = (v: number[]) => [...v].sort((a, b) => a - b);
  const [append, generate, first] = [s(r.append), s(r.generate), s(r.firstToken)];
  const round = (x: number) => Math.round(x * 10) / 10;
  return {
    requests: r.requests,
    errors: Object.fromEntries(r.errors),
    tokens_appended: r.appended,
    tokens_generated: r.generated,
    tokens_per_second: round((r.appended + r.generated) / seconds),
    generated_tokens_per_second: round(r.generated / seconds),
    append_ms_p50: round(percentile(append, 50)),
    append_ms_p99: round(percentile(append, 99)),
    generate_ms_p50: round(percentile(generate, 50)),
    generate_ms_p99: round(percentile(generate, 99)),
    ...(first.length ? { first_token_ms_p50: round(percentile(first, 50)), first_token_ms_p99: round(percentile(first, 99)) } : {}),
  };
}

export async function runLoad(argv: string[], out: (line: string) => void = (l) => process.stdout.write(l + "\n")): Promise<Record<string, unknown>> {
  const { values } = parseArgs({
    args: argv,
    strict: true,
    options: {
      server: { type: "string" },
      sessions: { type: "string", default: "32" },
      minutes: { type: "string", default: "1" },
      "append-words": { type: "string", default: "24" },
      generate: { type: "string", default: "8" },
      "metrics-url": { type: "string" },
      "worker-pid": { type: "string" },
      "sample-seconds": { type: "string", default: "5" },
      "token-file": { type: "string" },
      "tls-ca": { type: "string" },
      "tls-cert": { type: "string" },
      "tls-key": { type: "string" },
      "kafka-brokers": { type: "string" },
      "kafka-sessions": { type: "string", default: "0" },
      "kafka-input-topic": { type: "string", default: "streamsink.input" },
      "kafka-output-topic": { type: "string", default: "streamsink.output" },
      ...KAFKA_SECURITY_FLAGS,
      out: { type: "string" },
    },
  });
  const number = (flag: string, min: number, max: number): number => {
    const v = Number(values[flag as keyof typeof values]);
    if (!Number.isFinite(v) || v < min || v > max) throw new UsageError(`--${flag} must be a number from ${min} to ${max}`);
    return v;
  };
  if (!values.server) throw new UsageError("--server is required");
  loopback(values.server, "--server");
  const sessions = Math.floor(number("sessions", 1, MAX_SESSIONS));
  const minutes = number("minutes", 0.05, MAX_MINUTES);
  const words = Math.floor(number("append-words", 1, 4096));
  const generate = Math.floor(number("generate", 1, 4096));
  const sampleSeconds = number("sample-seconds", 0.5, 600);
  const kafkaSessions = Math.floor(number("kafka-sessions", 0, sessions));
  const brokers = values["kafka-brokers"]?.split(",").map((b) => b.trim()).filter(Boolean) ?? [];
  for (const b of brokers) loopback(b, "--kafka-brokers");
  if (kafkaSessions > 0 && brokers.length === 0) throw new UsageError("--kafka-sessions needs --kafka-brokers");
  const kafkaSecurity = kafkaSessions > 0 ? kafkaSecurityFromFlags(values) : undefined;
  if (values["metrics-url"]) loopback(new URL(values["metrics-url"]).host, "--metrics-url");
  const workerPid = values["worker-pid"] !== undefined ? Math.floor(number("worker-pid", 1, 1 << 30)) : undefined;

  // The token from a file or STREAMSINK_TOKEN, never a flag (it would show in `ps`).
  const token = values["token-file"] !== undefined ? (await readFile(values["token-file"], "utf8")).trim() : process.env.STREAMSINK_TOKEN || undefined;
  const connect: ConnectOptions = {
    ...(token ? { bearerToken: token } : {}),
    ...(values["tls-ca"]
      ? { credentials: clientCredentials({ caFile: values["tls-ca"], ...(values["tls-cert"] ? { certFile: values["tls-cert"], keyFile: values["tls-key"]! } : {}) }) }
      : {}),
  };
  // A few channels shared round-robin: HTTP/2 multiplexes the calls.
  const channels = await Promise.all(Array.from({ length: Math.min(8, sessions) }, () => StreamsinkClient.connect(values.server!, connect)));
  const driver = kafkaSessions > 0 ? await KafkaDriver.start(brokers, kafkaSecurity!, values["kafka-input-topic"]!, values["kafka-output-topic"]!) : undefined;

  const run = randomUUID().slice(0, 8);
  const grpcRec = newRecorder();
  const kafkaRec = newRecorder();
  const rss: Array<{ t_s: number; rss_mb: number }> = [];
  const started = Date.now();
  const until = started + minutes * 60_000;
  // One scrape at a time, stamped when it was asked for: a busy worker may answer late.
  let sampling = false;
  const sample = async () => {
    if ((!values["metrics-url"] && workerPid === undefined) || sampling) return;
    sampling = true;
    const t = Date.now();
    const bytes = workerPid !== undefined ? await processResidentBytes(workerPid) : await residentBytes(values["metrics-url"]!);
    sampling = false;
    if (bytes !== undefined) rss.push({ t_s: Math.round((t - started) / 100) / 10, rss_mb: Math.round(bytes / 1e5) / 10 });
  };
  await sample();
  const sampler = setInterval(() => void sample(), sampleSeconds * 1000);
  const progress = setInterval(() => {
    const elapsed = (Date.now() - started) / 1000;
    out(`[${elapsed.toFixed(0)} s] requests ${grpcRec.requests + kafkaRec.requests}, tokens ${grpcRec.appended + grpcRec.generated + kafkaRec.appended + kafkaRec.generated}, errors ${[...grpcRec.errors.values(), ...kafkaRec.errors.values()].reduce((a, b) => a + b, 0)}${rss.length ? `, worker RSS ${rss.at(-1)!.rss_mb} MB` : ""}`);
  }, 30_000);
  try {
    await Promise.all(
      Array.from({ length: sessions }, (_, i) =>
        i < kafkaSessions
          ? kafkaSession(driver!, `load-${run}-k${i}`, i, until, words, generate, kafkaRec)
          : grpcSession(channels[i % channels.length]!, `load-${run}-${i}`, i, until, words, generate, grpcRec),
      ),
    );
  } finally {
    clearInterval(sampler);
    clearInterval(progress);
  }
  const seconds = (Date.now() - started) / 1000;
  while (sampling) await new Promise((r) => setTimeout(r, 50));
  await sample();
  for (const c of channels) c.close();
  await driver?.stop();

  const rssValues = rss.map((x) => x.rss_mb);
  const half = rss.filter((x) => x.t_s >= seconds / 2).map((x) => x.rss_mb);
  const report = {
    server: values.server,
    sessions,
    grpc_sessions: sessions - kafkaSessions,
    kafka_sessions: kafkaSessions,
    append_words: words,
    generate_tokens: generate,
    seconds: Math.round(seconds * 10) / 10,
    grpc: summary(grpcRec, seconds),
    ...(kafkaSessions > 0 ? { kafka: summary(kafkaRec, seconds) } : {}),
    rss: rss.length
      ? {
          first_mb: rssValues[0],
          last_mb: rssValues.at(-1),
          max_mb: Math.max(...rssValues),
          // Flat memory: the second half of the run should not climb.
          second_half_min_mb: half.length ? Math.min(...half) : undefined,
          second_half_max_mb: half.length ? Math.max(...half) : undefined,
          samples: rss,
        }
      : undefined,
  };
  out(JSON.stringify({ ...report, rss: report.rss ? { ...report.rss, samples: `${rss.length} samples` } : undefined }, null, 2));
  if (values.out) {
    await mkdir(dirname(values.out), { recursive: true });
    await writeFile(values.out, JSON.stringify(report, null, 2) + "\n");
    out(`wrote ${values.out}`);
  }
  return report;
}
