/**
 * A worker on a real Kafka and a real Redis, with Redis taken away:
 * - a session that must be restored waits, but only its partition does:
 *   records of sessions on other partitions keep being applied;
 * - a session closed while its snapshot cannot be deleted is never brought
 *   back from that snapshot: re-opened it starts empty, and once Redis is
 *   back the delete is done (fenced) before the close is committed past;
 * - a generate replayed after a failover re-applies the tokens the output
 *   topic recorded for it, never samples them again, and finishes from there.
 */
import { execFileSync } from "node:child_process";
import { randomUUID } from "node:crypto";
import { join } from "node:path";

import { type Consumer, Kafka, logLevel } from "kafkajs";
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadWorkerConfig } from "../../services/worker/config.js";
import { partitionOf } from "../../services/worker/kafka/partitioner.js";
import { encodeInputRecord, encodeOutputRecord } from "../../services/worker/kafka/record-codec.js";
import { createLogger } from "../../services/worker/logger.js";
import { RedisKeys } from "../../services/worker/redis/keys.js";
import { RedisSnapshotStore } from "../../services/worker/redis/redis-snapshot-store.js";
import { Worker } from "../../services/worker/worker.js";
import { argmax } from "../../services/engine/index.js";
import { loadGolden, modelDir, ROOT } from "../helpers/fixtures.js";
import { type KafkaHandle, type RedisHandle, startKafka, startRedis } from "../helpers/infra.js";

const PARTITIONS = 4;

interface Out {
  type: string;
  session: string;
  request_id: string;
  seq: number;
  tokens_seen?: number;
  index?: number;
  token?: number;
  generated_tokens?: number;
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
      const stored = await new RedisSnapshotStore(client, keys).load(closing);
      if (!stored || "closed" in stored) return false;
      const session = await worker.engine.importSession(stored.bytes);
      const n = (await session.info()).tokensSeen;
      await session.close();
      return n === 1;
    });
    expect(outputs.filter((o) => o.type === "error")).toEqual([]);
  });

  it("replaces a closed session's snapshot with a tombstone once Redis is back", async () => {
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
    // The snapshot goes (fenced); a tombstone names the close record, so a new owner skips it.
    await until("fenced delete after the outage", async () => (await client.hget(keys.snapshot(s), "tomb")) !== null);
    expect(await client.hkeys(keys.snapshot(s))).toEqual(["tomb"]);
    expect(await new RedisSnapshotStore(client, keys).load(s)).toEqual({ closed: { inputOffset: expect.stringMatching(/^\d+$/) } });
  });

  it("re-applies the generated tokens recorded on the output topic when it replays a generate", async () => {
    const t = `${topic}r`;
    const session = "replayed";
    const admin = new Kafka({ clientId: "kf-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [`${t}.in`, `${t}.out`].map((name) => ({ topic: name, numPartitions: PARTITIONS })), waitForLeaders: true });
    await admin.disconnect();
    const prompt = loadGolden("llama-gqa").cases[0]!.ids.slice(0, 24);
    // What an uninterrupted greedy generation would give, and three other tokens an earlier owner "generated".
    const ref = await worker.engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await ref.append(prompt);
    const greedy = argmax(ref.nextLogprobs!);
    const vocab = worker.engine.info.vocabSize;
    const recorded = [1, 2, 3].map((k) => (greedy + k * 7) % vocab);
    await ref.append(recorded);
    const expected = [...recorded];
    for (let i = 0; i < 3; i++) {
      const next = argmax(ref.nextLogprobs!);
      expected.push(next);
      await ref.append([next]);
    }
    await ref.close();

    // The log: the input records, and the outputs an earlier owner wrote before it died mid-generation.
    const producer = new Kafka({ clientId: "kf-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).producer();
    await producer.connect();
    await producer.send({
      topic: `${t}.in`,
      messages: [
        { key: session, value: encodeInputRecord({ kind: "append", session, requestId: "p1", input: { tokens: prompt } }) },
        { key: session, value: encodeInputRecord({ kind: "generate", session, requestId: "g1", maxNewTokens: 6 }) },
      ],
    });
    await producer.send({
      topic: `${t}.out`,
      messages: recorded.map((token, index) => ({
        key: session,
        value: encodeOutputRecord({ kind: "token", session, requestId: "g1", index, token, text: "" }, index),
      })),
    });
    await producer.disconnect();

    const seen: Out[] = [];
    const watch = new Kafka({ clientId: "kf-test", brokers: [kafka.brokers], logLevel: logLevel.NOTHING }).consumer({ groupId: `${t}-obs` });
    await watch.connect();
    await watch.subscribe({ topics: [`${t}.out`], fromBeginning: true });
    await watch.run({ eachMessage: async ({ message }) => void seen.push(JSON.parse(message.value!.toString()) as Out) });
    const config = loadWorkerConfig(
      [
        ...["--model", modelDir("llama-gqa"), "--grpc-host", "127.0.0.1", "--grpc-port", "0", "--metrics-port", "0", "--threads", "1"],
        ...["--kafka-brokers", kafka.brokers, "--redis-url", redis.url, "--kafka-partitions", String(PARTITIONS)],
        ...["--kafka-input-topic", `${t}.in`, "--kafka-output-topic", `${t}.out`, "--kafka-dead-letter-topic", `${t}.dlq`],
        ...["--kafka-group", `${t}-g`, "--sinks", "4", "--window", "28"],
      ],
      {},
    );
    const next = await Worker.start(config, { log: createLogger("error"), redisPrefix: `${prefix}r` });
    try {
      await until("the replayed generation", () => seen.some((o) => o.request_id === "g1" && o.type === "finished"));
      // The new owner's records for g1 follow the three recorded ones.
      const own = seen.filter((o) => o.request_id === "g1").slice(3);
      expect(own.filter((o) => o.type === "token").map((o) => o.token)).toEqual(expected);
      expect(own.filter((o) => o.type === "token").map((o) => o.index)).toEqual([0, 1, 2, 3, 4, 5]);
      expect(own.at(-1)).toMatchObject({ type: "finished", generated_tokens: 6 });
      expect(expected.slice(0, 3)).not.toContain(greedy); // re-sampling would have started with `greedy`
      expect((await next.host.info(session))!.tokensSeen).toBe(prompt.length + 6);
    } finally {
      await watch.disconnect();
      await next.stop(1000);
    }
  });
});
