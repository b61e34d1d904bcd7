// The local Kafka and Redis that integration tests use (tests/helpers/infra.ts):
// they start, serve real clients, come back on the same address with their data
// after a restart, and go away on stop.
import { createConnection } from "node:net";
import { randomUUID } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Kafka, logLevel, type Admin } from "kafkajs";
import { Redis } from "ioredis";
import { startKafka, startRedis, type KafkaHandle, type RedisHandle } from "../helpers/infra.js";

/** Resolves with whether a TCP connect to host:port succeeds. */
function canConnect(address: string): Promise<boolean> {
  const [host, port] = address.split(":");
  return new Promise((resolve) => {
    const sock = createConnection({ host: host!, port: Number(port) });
    sock.once("connect", () => {
      sock.destroy();
      resolve(true);
    });
    sock.once("error", () => resolve(false));
  });
}

/** Rejects when `p` has not settled after `ms` (a deadline, not a delay). */
function within<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: nothing after ${ms}ms`)), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

function kafkaClient(brokers: string): Kafka {
  return new Kafka({ clientId: "infra-test", brokers: [brokers], logLevel: logLevel.NOTHING, retry: { retries: 10 } });
}

async function withAdmin<T>(brokers: string, fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafkaClient(brokers).admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

describe("local Kafka and Redis (deploy/local)", () => {
  let kafka: KafkaHandle | undefined;
  let redis: RedisHandle | undefined;
  const topic = `infra-${randomUUID()}`;
  const redisKey = `infra:${randomUUID()}`;

  beforeAll(async () => {
    const [k, r] = await Promise.allSettled([startKafka(), startRedis()]);
    if (k.status === "fulfilled") kafka = k.value;
    if (r.status === "fulfilled") redis = r.value;
    if (k.status === "rejected") throw k.reason;
    if (r.status === "rejected") throw r.reason;
  }, 600_000); // the first run on a machine downloads Kafka from Maven Central

  afterAll(async () => {
    await Promise.all([kafka?.stop(), redis?.stop()]);
  });

  it("Kafka: single-node settings, a 3-partition topic, produce and consume", async () => {
    const k = kafka!;
    expect(k.brokers).toMatch(/^127\.0\.0\.1:\d+$/);

    await withAdmin(k.brokers, async (admin) => {
      const cluster = await admin.describeCluster();
      expect(cluster.brokers).toHaveLength(1);
      expect(`${cluster.brokers[0]!.host}:${cluster.brokers[0]!.port}`).toBe(k.brokers);

      const configs = await admin.describeConfigs({
        includeSynonyms: false,
        resources: [{ type: 4 /* BROKER */, name: String(cluster.brokers[0]!.nodeId), configNames: ["auto.create.topics.enable", "offsets.topic.replication.factor"] }],
      });
      const entries = Object.fromEntries(configs.resources[0]!.configEntries.map((e) => [e.configName, e.configValue]));
      expect(entries).toEqual({ "auto.create.topics.enable": "false", "offsets.topic.replication.factor": "1" });

      expect(await admin.createTopics({ topics: [{ topic, numPartitions: 3, replicationFactor: 1 }], waitForLeaders: true })).toBe(true);
      const meta = await admin.fetchTopicMetadata({ topics: [topic] });
      expect(meta.topics[0]!.partitions.map((p) => p.partitionId).sort()).toEqual([0, 1, 2]);
      expect(meta.topics[0]!.partitions.every((p) => p.leader === cluster.brokers[0]!.nodeId)).toBe(true);
    });

    const client = kafkaClient(k.brokers);
    const producer = client.producer();
    await producer.connect();
    try {
      const [sent] = await producer.send({ topic, acks: -1, messages: [{ key: "k1", value: "hello streamsink", partition: 1 }] });
      expect(sent).toMatchObject({ topicName: topic, partition: 1, errorCode: 0, baseOffset: "0" });
    } finally {
      await producer.disconnect();
    }

    const consumer = client.consumer({ groupId: `infra-${randomUUID()}` });
    await consumer.connect();
    try {
      await consumer.subscribe({ topics: [topic], fromBeginning: true });
      const received = new Promise<{ partition: number; offset: string; key: string; value: string }>((resolve) => {
        void consumer.run({
          eachMessage: async ({ partition, message }) =>
            resolve({ partition, offset: message.offset, key: message.key?.toString() ?? "", value: message.value?.toString() ?? "" }),
        });
      });
      expect(await within(received, 60_000, "consumer")).toEqual({ partition: 1, offset: "0", key: "k1", value: "hello streamsink" });
    } finally {
      await consumer.disconnect();
    }
  });

  it("Redis: SET and GET", async () => {
    const r = redis!;
    expect(r.url).toBe(`redis://127.0.0.1:${r.port}`);
    const client = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await client.connect();
    try {
      expect(await client.set(redisKey, "v1")).toBe("OK");
      expect(await client.get(redisKey)).toBe("v1");
      expect(await client.get(`${redisKey}:absent`)).toBeNull();
    } finally {
      client.disconnect();
    }
  });

  it("restart: both come back on the same address with their data", async () => {
    const k = kafka!;
    const r = redis!;
    const brokers = k.brokers;
    const url = r.url;
    await Promise.all([k.restart(), r.restart()]);
    expect(k.brokers).toBe(brokers);
    expect(r.url).toBe(url);

    await withAdmin(k.brokers, async (admin) => {
      expect(await admin.listTopics()).toContain(topic);
      const offsets = await admin.fetchTopicOffsets(topic);
      expect(offsets.map((o) => [o.partition, o.high]).sort()).toEqual([
        [0, "0"],
        [1, "1"],
        [2, "0"],
      ]);
    });
    // The restarted broker takes writes.
    const producer = kafkaClient(k.brokers).producer();
    await producer.connect();
    try {
      const [sent] = await producer.send({ topic, acks: -1, messages: [{ value: "after restart", partition: 1 }] });
      expect(sent).toMatchObject({ partition: 1, errorCode: 0, baseOffset: "1" });
    } finally {
      await producer.disconnect();
    }

    const client = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await client.connect();
    try {
      expect(await client.get(redisKey)).toBe("v1");
    } finally {
      client.disconnect();
    }
  });

  it("hard restart (SIGKILL): Kafka keeps acknowledged records, Redis loses what was not saved", async () => {
    const k = kafka!;
    const r = redis!;
    const client = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await client.connect();
    try {
      expect(await client.set(`${redisKey}:unsaved`, "v2")).toBe("OK");
    } finally {
      client.disconnect();
    }
    await Promise.all([k.restart({ kill: true }), r.restart({ kill: true })]);

    await withAdmin(k.brokers, async (admin) => {
      const offsets = await admin.fetchTopicOffsets(topic);
      expect(offsets.find((o) => o.partition === 1)?.high).toBe("2");
    });
    const after = new Redis(r.url, { lazyConnect: true, maxRetriesPerRequest: 3 });
    await after.connect();
    try {
      expect(await after.get(redisKey)).toBe("v1"); // in dump.rdb from the graceful restart
      expect(await after.get(`${redisKey}:unsaved`)).toBeNull();
    } finally {
      after.disconnect();
    }
  });

  it("stop: the ports close and the data dirs go", async () => {
    const k = kafka!;
    const r = redis!;
    await Promise.all([k.stop(), r.stop()]);
    expect(await canConnect(k.brokers)).toBe(false);
    expect(await canConnect(`127.0.0.1:${r.port}`)).toBe(false);
    const { existsSync } = await import("node:fs");
    expect(existsSync(k.dataDir)).toBe(false);
    expect(existsSync(r.dataDir)).toBe(false);
    // Idempotent.
    await Promise.all([k.stop(), r.stop()]);
  });

  it("missing tools fail with a message naming them (never a skip)", async () => {
    const path = process.env.PATH;
    process.env.PATH = "/nonexistent";
    try {
      await expect(startRedis()).rejects.toThrow(/missing: redis-server, redis-cli/);
      await expect(startKafka()).rejects.toThrow(/missing: Java 17/);
    } finally {
      process.env.PATH = path;
    }
  });
});
