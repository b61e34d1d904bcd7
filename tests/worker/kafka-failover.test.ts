/**
 * A worker on a real Kafka and a real Redis, with Redis taken away:
 * - a session that must be restored waits, but only its partition does:
 *   records of sessions on other partitions keep being applied;
 * - a session closed while its snapshot cannot be deleted is never brought
 *   back from that snapshot: re-opened it starts empty, and once Redis is
 *   back the delete is done (fenced) before the close is committed past.
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";

import { type Consumer, Kafka, logLevel } from "kafkajs";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadWorkerConfig } from "../../services/worker/config.js";
import { partitionOf } from "../../services/worker/kafka/partitioner.js";
import { encodeInputRecord } from "../../services/worker/kafka/record-codec.js";
import { createLogger } from "../../services/worker/logger.js";
import { RedisKeys } from "../../services/worker/redis/keys.js";
import { decodeEnvelope } from "../../services/worker/snapshot-store.js";
import { Worker } from "../../services/worker/worker.js";
import { modelDir, ROOT } from "../helpers/fixtures.js";
import { type KafkaHandle, type RedisHandle, startKafka, startRedis } from "../helpers/infra.js";

const PARTITIONS = 4;

interface Out {
  type: string;
  session: string;
  request_id: string;
  tokens_seen?: number;
}

async function until(what: string, check: () => boolean | Promise<boolean>, ms = 60_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A session id on the given partition. */
function sessionOn(partition: number, tag: string): string {
  for (let i = 0; ; i++) if (partitionOf(`${tag}-${i}`, PARTITIONS) === partition) return `${tag}-${i}`;
}

describe("kafka worker while Redis is down", () => {
  let kafka: KafkaHandle;
  let redis: RedisHandle;
  let worker: Worker;
  let observer: Consumer;
  let client: Redis;
  const outputs: Out[] = [];
  const topic = `kf${randomUUID().slice(0, 8)}`;
  const prefix = `kf${randomUUID().slice(0, 8)}`;
  const keys = new RedisKeys(prefix);

  const stopRedis = () => execFileSync("bash", [join(ROOT, "deploy", "local", "redis.sh"), "stop", "--data-dir", redis.dataDir], { stdio: "pipe" });
  const out = (requestId: string) => outputs.find((o) => o.request_id === requestId);
  const send = (session: string, requestId: string, op: { kind: "append"; tokens: number[] } | { kind: "close" }) =>
    worker.kafka!.produceInput(
      session,
      encodeInputRecord(op.kind === "append" ? { kind: "append", session, requestId, input: { tokens: op.tokens } } : { kind: "close", session, requestId }),
    );

  beforeAll(async () => {
    [kafka, redis] = await Promise.all([startKafka(), startRedis()]);
    const config = loadWorkerConfig(
      [
        ...["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--threads", "1"],
        ...["--kafka-brokers", kafka.brokers, "--redis-url", redis.url, "--kafka-partitions", String(PARTITIONS)],
        ...["--kafka-input-topic", `${topic}.in`, "--kafka-output-topic", `${topic}.out`, "--kafka-dead-letter-topic", `${topic}.dlq`],
        ...["--kafka-group", `${topic}-g`, "--snapshot-interval-ms", "100", "--sinks", "4", "--window", "28"],
      ],
      {},
    );
    worker = await Worker.start(config, { log: createLogger("error"), redisPrefix: prefix });
    observer = new Kafka({ clientId: "kf-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).consumer({ groupId: `${topic}-obs` });
    await observer.connect();
    await observer.subscribe({ topics: [`${topic}.out`], fromBeginning: true });
    await observer.run({ eachMessage: async ({ message }) => void outputs.push(JSON.parse(message.value!.toString()) as Out) });
    client = new Redis(redis.url);
    await until("partitions assigned", () => worker.kafka!.assignedPartitions.length === PARTITIONS);
  }, 180_000);

  afterAll(async () => {
    client?.disconnect();
    await observer?.disconnect().catch(() => undefined);
    await worker?.stop(1000).catch(() => undefined);
    await Promise.all([kafka?.stop(), redis?.stop()]);
  });

  it("stalls only the partition of a session being restored, and never resurrects a closed session", async () => {
    const held = sessionOn(0, "held");
    const closing = sessionOn(0, "closing");
    const cold = sessionOn(1, "cold");
    await send(held, "h1", { kind: "append", tokens: [1, 2, 3] });
    await send(closing, "c1", { kind: "append", tokens: [1, 2, 3, 4, 5] });
    await until("first appends", () => out("h1") !== undefined && out("c1") !== undefined);
    await until("snapshots in Redis", async () => (await client.exists(keys.snapshot(held), keys.snapshot(closing))) === 2);

    stopRedis(); // SHUTDOWN SAVE: the snapshots come back with the server
    client.disconnect();
    // "cold" has no session on the worker: it must be restored, and waits for Redis.
    await send(cold, "k1", { kind: "append", tokens: [7, 8] });
    await send(closing, "c2", { kind: "close" });
    await send(held, "h2", { kind: "append", tokens: [4] });
    await until("records behind the stalled partition", () => out("h2") !== undefined && out("c2") !== undefined);
    expect(out("h2")!.tokens_seen).toBe(4);
    expect(out("k1")).toBeUndefined();
    // Re-opened while its old snapshot cannot be deleted: it starts empty.
    await send(closing, "c3", { kind: "append", tokens: [9] });
    await until("re-opened session", () => out("c3") !== undefined);
    expect(out("c3")).toMatchObject({ type: "appended", tokens_seen: 1 });

    await redis.restart();
    client = new Redis(redis.url);
    await until("the stalled restore", () => out("k1") !== undefined);
    expect(out("k1")).toMatchObject({ type: "appended", tokens_seen: 2 });
    // The re-opened session's snapshot replaced the closed one's.
    await until("re-opened session snapshotted", async () => {
      const raw = await client.getBuffer(keys.snapshot(closing));
      if (raw === null) return false;
      const session = await worker.engine.importSession(decodeEnvelope(raw).bytes);
      const n = (await session.info()).tokensSeen;
      await session.close();
      return n === 1;
    });
    expect(outputs.filter((o) => o.type === "error")).toEqual([]);
  });

  it("deletes a closed session's snapshot once Redis is back", async () => {
    const s = sessionOn(2, "gone");
    await send(s, "g1", { kind: "append", tokens: [1, 2, 3] });
    await until("append", () => out("g1") !== undefined);
    await until("snapshot in Redis", async () => (await client.exists(keys.snapshot(s))) === 1);
    stopRedis();
    client.disconnect();
    await send(s, "g2", { kind: "close" });
    await until("close", () => out("g2") !== undefined);
    await redis.restart();
    client = new Redis(redis.url);
    await until("fenced delete after the outage", async () => (await client.exists(keys.snapshot(s))) === 0);
  });
});
