/**
 * Chaos (bounded for CI): real Kafka, real Redis, 3 worker processes, many
 * sessions streamed well past their cache size, while workers are killed
 * with SIGKILL and restarted, Redis is killed with SIGKILL and restarted
 * once (it persists every acknowledged write, AOF), and the broker restarts
 * once.
 * Then, per session: every input record applied exactly once (the token
 * count equals the reference) and every output equals a no-fault
 * single-process run; a record that appears twice after a failover is
 * identical (same request id, sequence number and content).
 * STREAMSINK_CHAOS_ROUNDS / STREAMSINK_CHAOS_SESSIONS scale it up for a soak.
 */
import { randomUUID } from "node:crypto";

import { type Consumer, Kafka, logLevel, type Producer } from "kafkajs";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine } from "../../services/engine/index.js";
import { encodeInputRecord } from "../../services/worker/kafka/record-codec.js";
import type { SessionEvent, SessionOp } from "../../services/worker/operations.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { type KafkaHandle, type RedisHandle, startKafka, startRedis } from "../helpers/infra.js";
import { buildDist, clusterWorkerEnv, startWorker, type WorkerProcess } from "../helpers/worker-process.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const SESSIONS = Number(process.env.STREAMSINK_CHAOS_SESSIONS ?? 100);
const ROUNDS = Number(process.env.STREAMSINK_CHAOS_ROUNDS ?? 6);
const CONFIG = { policy: "sinks" as const, sinks: 4, window: 28 };

/** Round r of session k: an append of 12-20 tokens, every other round a short generation, and a few closes. */
function roundOps(k: number, r: number): SessionOp[] {
  const s = `c-${k}`;
  const start = (k * 7 + r * 13) % 120;
  const ops: SessionOp[] = [{ kind: "append", session: s, requestId: `${s}-r${r}-a`, input: { tokens: ids.slice(start, start + 12 + ((k + r) % 9)) } }];
  if (r % 2 === 1) ops.push({ kind: "generate", session: s, requestId: `${s}-r${r}-g`, maxNewTokens: 4, sampling: { temperature: 1, seed: k * 100 + r } });
  // Every tenth session is closed mid-run (while a worker is killed) and starts afresh in the next round.
  if (r === 3 && k % 10 === 0) ops.push({ kind: "close", session: s, requestId: `${s}-r${r}-c` });
  return ops;
}

interface Out {
  type: string;
  request_id: string;
  seq: number;
  raw: string;
  tokens_seen?: number;
}

describe("chaos: kill -9 workers, restart Redis and the broker", () => {
  let kafka: KafkaHandle;
  let redis: RedisHandle;
  let workers: WorkerProcess[] = [];
  let env: Record<string, string>;
  let producer: Producer;
  let observer: Consumer;
  const copies = new Map<string, string[]>(); // "request/seq" -> raw values seen
  const topic = `chaos${randomUUID().slice(0, 8)}`;

  beforeAll(async () => {
    buildDist();
    // Snapshots are durable once Redis acknowledges them: AOF with fsync always, as in production.
    [kafka, redis] = await Promise.all([startKafka(), startRedis({ appendonly: true })]);
    env = clusterWorkerEnv(modelDir("llama-gqa"), kafka.brokers, redis.url, topic);
    workers.push(await startWorker(env));
    workers.push(...(await Promise.all([startWorker(env), startWorker(env)])));
    const client = new Kafka({ clientId: "chaos-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING, retry: { retries: 30 } });
    producer = client.producer({ idempotent: true, maxInFlightRequests: 1 });
    await producer.connect();
    observer = client.consumer({ groupId: `${topic}-observer` });
    await observer.connect();
    await observer.subscribe({ topics: [`${topic}.output`], fromBeginning: true });
    await observer.run({
      eachMessage: async ({ message }) => {
        const raw = message.value!.toString();
        const r = JSON.parse(raw) as Out;
        const key = `${r.request_id}/${r.seq}`;
        const list = copies.get(key) ?? [];
        list.push(raw);
        copies.set(key, list);
      },
    });
  }, 240_000);

  afterAll(async () => {
    await observer?.disconnect().catch(() => undefined);
    await producer?.disconnect().catch(() => undefined);
    await Promise.all(workers.map((w) => w.kill()));
    await Promise.all([kafka?.stop(), redis?.stop()]);
  });

  function finished(requestId: string): boolean {
    for (let seq = 0; seq < 64; seq++) {
      const c = copies.get(`${requestId}/${seq}`);
      if (!c) return false;
      const t = (JSON.parse(c[0]!) as Out).type;
      if (t !== "token") return true;
    }
    return false;
  }

  async function waitFor(what: string, predicate: () => boolean, ms = 240_000): Promise<void> {
    const deadline = Date.now() + ms;
    while (!predicate()) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}\n${workers.map((w) => w.logs.slice(-15).join("")).join("\n---\n")}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  async function killAndRestart(): Promise<void> {
    const victim = workers[Math.floor(Math.random() * workers.length)]!;
    await victim.kill();
    workers = workers.filter((w) => w !== victim);
    workers.push(await startWorker(env));
  }

  it(`${SESSIONS} sessions x ${ROUNDS} rounds survive the faults with outputs equal to a no-fault run`, async () => {
    for (let r = 0; r < ROUNDS; r++) {
      const messages = [];
      for (let k = 0; k < SESSIONS; k++) for (const op of roundOps(k, r)) messages.push({ key: op.session, value: encodeInputRecord(op) });
      await producer.send({ topic: `${topic}.input`, messages });
      // Faults while the round is in flight.
      if (r === 1 || r === 3) await killAndRestart();
      // A crash (SIGKILL) while the round is in flight.
      if (r === 2) await redis.restart({ kill: true });
      if (r === 4) await kafka.restart();
      const round = Array.from({ length: SESSIONS }, (_, k) => roundOps(k, r)).flat();
      await waitFor(`round ${r}`, () => round.every((op) => finished(op.requestId)));
    }

    // Reference: the same ops, one process, no faults.
    const engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
    const host = new SessionHost(engine, CONFIG);
    let duplicates = 0;
    for (let k = 0; k < SESSIONS; k++)
      for (let r = 0; r < ROUNDS; r++)
        for (const op of roundOps(k, r)) {
          const events: SessionEvent[] = [];
          await host.execute(op, (e) => events.push(e));
          events.forEach((e, seq) => {
            const c = copies.get(`${op.requestId}/${seq}`);
            expect(c, `${op.requestId}/${seq}`).toBeDefined();
            // Duplicates after a failover are identical.
            expect(new Set(c).size, `${op.requestId}/${seq} copies differ: ${[...new Set(c)].map((x) => x.slice(0, 160)).join(" | ")}`).toBe(1);
            duplicates += c!.length - 1;
            const got = JSON.parse(c![0]!) as Record<string, unknown>;
            if (e.kind === "appended") expect(got.tokens_seen, op.requestId).toBe(e.tokensSeen);
            if (e.kind === "token") expect(got.token, op.requestId).toBe(e.token);
            if (e.kind === "finished") expect(got.text, op.requestId).toBe(e.text);
          });
          expect(copies.has(`${op.requestId}/${events.length}`), `${op.requestId} has extra records`).toBe(false);
        }
    await host.close();
    await engine.close();
    process.stdout.write(`chaos: ${SESSIONS} sessions, ${ROUNDS} rounds, ${duplicates} duplicate output records (all identical)\n`);
  }, 900_000);
});
