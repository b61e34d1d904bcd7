/**
 * The distributed service against a real Kafka broker and a real Redis, with
 * real worker processes: 50 sessions fed through Kafka records and through
 * gRPC calls to random workers (so calls to non-owners are forwarded), a
 * worker leaving and another joining mid-stream, malformed records in the
 * input. Every session's outputs must equal a single-process run of the same
 * operations, and malformed records must land in the dead-letter topic.
 */
import { randomUUID } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { type Consumer, Kafka, logLevel, type Producer } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine } from "../../services/engine/index.js";
import { runFeed } from "../../services/cli/client-commands.js";
import { StreamsinkClient } from "../../services/grpc/grpc-client.js";
import { encodeInputRecord } from "../../services/worker/kafka/record-codec.js";
import type { SessionEvent, SessionOp } from "../../services/worker/operations.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { type KafkaHandle, type RedisHandle, startKafka, startRedis } from "../helpers/infra.js";
import { buildDist, clusterWorkerEnv, startWorker, type WorkerProcess } from "../helpers/worker-process.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const SESSIONS = 50;
const CONFIG = { policy: "sinks" as const, sinks: 4, window: 28 };

interface OutputRecord {
  type: string;
  request_id: string;
  session: string;
  seq: number;
  tokens?: number[];
  logprobs?: number[];
  token?: number;
  text?: string;
  reason?: string;
  tokens_seen?: number;
  code?: string;
}

/** The ops of session k, in order, split into three phases. */
function sessionOps(k: number): SessionOp[][] {
  const s = `s-${String(k).padStart(2, "0")}`;
  return [
    [
      { kind: "append", session: s, requestId: `${s}-a1`, input: { tokens: ids.slice(k % 40, (k % 40) + 20 + (k % 7)) }, logprobs: true },
      { kind: "generate", session: s, requestId: `${s}-g1`, maxNewTokens: 6 },
    ],
    [{ kind: "append", session: s, requestId: `${s}-a2`, input: { text: `session ${k} continues: def f(x):\n    return x * ${k}\n` }, logprobs: true }],
    [{ kind: "generate", session: s, requestId: `${s}-g2`, maxNewTokens: 5, sampling: { temperature: 0.9, topP: 0.95, seed: k } }],
  ];
}

/** What a single process produces for the same ops: request id -> events. */
async function reference(): Promise<Map<string, SessionEvent[]>> {
  const engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
  const host = new SessionHost(engine, CONFIG);
  const out = new Map<string, SessionEvent[]>();
  for (let k = 0; k < SESSIONS; k++)
    for (const phase of sessionOps(k))
      for (const op of phase) {
        const events: SessionEvent[] = [];
        await host.execute(op, (e) => events.push(e));
        out.set(op.requestId, events);
      }
  await host.close();
  await engine.close();
  return out;
}

describe("cluster: 3 workers, Kafka and Redis", () => {
  let kafka: KafkaHandle;
  let redis: RedisHandle;
  const workers: WorkerProcess[] = [];
  let env: Record<string, string>;
  let producer: Producer;
  let outputs: Consumer;
  const records = new Map<string, Map<number, OutputRecord>>();
  const dead: Array<{ reason: string; value: string }> = [];
  const topic = `t${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    buildDist();
    [kafka, redis] = await Promise.all([startKafka(), startRedis()]);
    env = clusterWorkerEnv(modelDir("llama-gqa"), kafka.brokers, redis.url, topic);
    workers.push(await startWorker(env));
    workers.push(...(await Promise.all([startWorker(env), startWorker(env)])));

    const client = new Kafka({ clientId: "cluster-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING });
    producer = client.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    outputs = client.consumer({ groupId: `${topic}-observer` });
    await outputs.connect();
    await outputs.subscribe({ topics: [`${topic}.output`, `${topic}.dlq`], fromBeginning: true });
    await outputs.run({
      eachMessage: async ({ topic: t, message }) => {
        if (t.endsWith(".dlq")) {
          dead.push({ reason: message.headers?.["streamsink-dlq-reason"]?.toString() ?? "", value: message.value?.toString() ?? "" });
          return;
        }
        const r = JSON.parse(message.value!.toString()) as OutputRecord;
        let m = records.get(r.request_id);
        if (!m) records.set(r.request_id, (m = new Map()));
        m.set(r.seq, r);
      },
    });
  }, 180_000);

  afterAll(async () => {
    if (process.env.STREAMSINK_TEST_LOG_DIR)
      workers.forEach((w, i) => writeFileSync(join(process.env.STREAMSINK_TEST_LOG_DIR!, `worker-${i}.log`), w.logs.join("")));
    await outputs?.disconnect();
    await producer?.disconnect();
    await Promise.all(workers.map((w) => w.kill()));
    await Promise.all([kafka?.stop(), redis?.stop()]);
  });

  function done(requestId: string): boolean {
    const m = records.get(requestId);
    return !!m && [...m.values()].some((r) => r.type === "appended" || r.type === "finished" || r.type === "error" || r.type === "closed");
  }

  async function waitFor(what: string, predicate: () => boolean, ms = 120_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${workers.map((w) => w.logs.slice(-20).join("")).join("\n---\n")}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  /** A gRPC op with retries while the owner moves (UNAVAILABLE). */
  async function viaGrpc(op: SessionOp): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const live = workers.filter((w) => w.proc.exitCode === null && !w.proc.killed);
      const w = live[(attempt + op.session.length + op.requestId.length) % live.length]!;
      const client = await StreamsinkClient.connect(w.address);
      try {
        const rpc = { deadline: Date.now() + 60_000 };
        if (op.kind === "append")
          await client.append({ sessionId: op.session, input: op.input, returnLogprobs: op.logprobs ?? false, requestId: op.requestId }, rpc);
        else if (op.kind === "generate") {
          for await (const e of client.generate(
            {
              sessionId: op.session,
              maxNewTokens: op.maxNewTokens,
              requestId: op.requestId,
              ...(op.sampling ? { sampling: op.sampling } : {}),
            },
            rpc,
          ))
            void e;
        }
        return;
      } catch (err) {
        if ((err as { code?: number }).code !== 14 || attempt > 200)
          throw new Error(`${op.requestId} via ${w.address}: ${(err as Error).message}\n${workers.map((x) => `${x.address}\n${x.logs.join("")}`).join("\n---\n")}`);
        await new Promise((r) => setTimeout(r, 100));
      } finally {
        client.close();
      }
    }
  }

  async function runPhase(phase: number): Promise<void> {
    const tasks: Array<Promise<void>> = [];
    for (let k = 0; k < SESSIONS; k++) {
      const ops = sessionOps(k)[phase]!;
      if (k < SESSIONS / 2) {
        for (const op of ops)
          await producer.send({ topic: `${topic}.input`, messages: [{ key: op.session, value: encodeInputRecord(op) }] });
      } else {
        tasks.push(
          (async () => {
            for (const op of ops) await viaGrpc(op);
          })(),
        );
      }
    }
    await Promise.all(tasks);
    const all = Array.from({ length: SESSIONS }, (_, k) => sessionOps(k)[phase]!).flat();
    await waitFor(`phase ${phase} outputs`, () => all.every((op) => done(op.requestId)));
  }

  it("serves 50 sessions through Kafka and gRPC across a leave and a join, equal to a single-process run", async () => {
    await runPhase(0);

    // Malformed records go to the dead-letter topic; the workers keep serving.
    await producer.send({
      topic: `${topic}.input`,
      messages: [
        { key: "s-00", value: Buffer.from("{not json") },
        { key: "s-01", value: Buffer.from(JSON.stringify({ v: 1, type: "explode", request_id: "x" })) },
        { key: null, value: Buffer.from(JSON.stringify({ v: 1, type: "append", request_id: "y", text: "hi" })) },
      ],
    });
    await waitFor("dead letters", () => dead.length >= 3);
    const reasons = dead.map((d) => d.reason);
    expect(reasons.some((r) => r.includes("not JSON"))).toBe(true);
    expect(reasons.some((r) => r.includes('unknown "type"'))).toBe(true);
    expect(reasons.some((r) => r.includes("missing record key"))).toBe(true);
    expect(dead.map((d) => d.value)).toContain("{not json");

    // A worker leaves (graceful): its partitions move, nothing is lost.
    expect(await workers[2]!.stop()).toBe(0);
    await runPhase(1);

    // A worker joins.
    workers.push(await startWorker(env));
    await runPhase(2);

    const ref = await reference();
    let compared = 0;
    for (const [requestId, events] of ref) {
      const got = [...(records.get(requestId)?.values() ?? [])].sort((a, b) => a.seq - b.seq);
      expect(got.map((r) => r.type), requestId).toEqual(events.map((e) => e.kind));
      events.forEach((e, i) => {
        const r = got[i]!;
        if (e.kind === "appended") {
          expect(r.tokens, requestId).toEqual(e.tokens);
          // JSON has no NaN: a session's first token (no prediction) is null on the wire.
          expect(r.tokens_seen, requestId).toBe(e.tokensSeen);
          expect(r.logprobs, requestId).toEqual(e.logprobs?.map((v) => (Number.isNaN(v) ? null : v)));
          expect(r.tokens_seen, requestId).toBe(e.tokensSeen);
        } else if (e.kind === "token") {
          expect(r.token, requestId).toBe(e.token);
        } else if (e.kind === "finished") {
          expect([r.reason, r.text], requestId).toEqual([e.reason, e.text]);
        }
      });
      compared++;
    }
    expect(compared).toBe(SESSIONS * 4);
  }, 600_000);

  it("answers GetSession for any session from any worker, through the owner", async () => {
    let forwarded = 0;
    for (let k = 0; k < SESSIONS; k += 7) {
      const s = `s-${String(k).padStart(2, "0")}`;
      for (const w of workers.filter((x) => x.proc.exitCode === null)) {
        const client = await StreamsinkClient.connect(w.address);
        const info = await client.getSession(s);
        client.close();
        expect(info.tokensSeen).toBeGreaterThan(20);
        expect(info).toMatchObject({ sinks: 4, window: 28, policy: "sinks" });
        if (info.owner !== info.servedBy) forwarded++;
      }
    }
    expect(forwarded).toBeGreaterThan(0);
  });

  it("feeds a text file through the Kafka input topic (streamsink feed --kafka-brokers)", async () => {
    const dir = mkdtempSync(join(tmpdir(), "feed-"));
    const file = join(dir, "text.txt");
    const text = readFileSync(join(modelDir("llama-gqa"), "..", "..", "..", "..", "README.md"), "utf8").slice(0, 6000);
    writeFileSync(file, text);
    const stderr = Object.assign(new (await import("node:stream")).PassThrough(), { isTTY: false }) as unknown as NodeJS.WriteStream;
    await runFeed(["--kafka-brokers", kafka.brokers, "--kafka-topic", `${topic}.input`, "--session", "fed-1", "--text", file, "--chunk-bytes", "1000"], {
      stdin: process.stdin,
      stdout: process.stdout,
      stderr,
    });
    const engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
    const expected = engine.tokenizer!.encode(text).length;
    await engine.close();
    await waitFor("fed session", () => [...records.values()].some((m) => [...m.values()].some((r) => r.session === "fed-1" && r.tokens_seen === expected)));
    const client = await StreamsinkClient.connect(workers.find((w) => w.proc.exitCode === null)!.address);
    expect((await client.getSession("fed-1")).tokensSeen).toBe(expected);
    client.close();
  });
});
