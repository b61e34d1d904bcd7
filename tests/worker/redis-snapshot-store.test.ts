/**
 * Snapshots in a real Redis: round trip, TTL, and the fenced write that keeps
 * a stale owner (older ownership epoch of the partition) from replacing the
 * new owner's snapshot.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { RedisKeys } from "../../services/worker/redis/keys.js";
import { OwnershipRegistry } from "../../services/worker/redis/ownership-registry.js";
import { RedisSnapshotStore, StaleOwnerError } from "../../services/worker/redis/redis-snapshot-store.js";
import { type RedisHandle, startRedis } from "../helpers/infra.js";

describe("RedisSnapshotStore", () => {
  let server: RedisHandle;
  let redis: Redis;
  const keys = new RedisKeys(`t${Date.now()}`);
  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
  });
  afterAll(async () => {
    redis?.disconnect();
    await server?.stop();
  });

  it("round-trips bytes and meta, with a TTL", async () => {
    const store = new RedisSnapshotStore(redis, keys, 120);
    await store.save("a", Buffer.from([1, 2, 3]), { partition: 2, inputOffset: "41" });
    const got = await store.load("a");
    expect(Buffer.from(got!.bytes)).toEqual(Buffer.from([1, 2, 3]));
    expect(got!.meta).toEqual({ partition: 2, inputOffset: "41" });
    const ttl = await redis.ttl(keys.snapshot("a"));
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
    await store.delete("a");
    expect(await store.load("a")).toBeUndefined();
  });

  it("refuses a write from an owner whose partition epoch is stale", async () => {
    const owners = new OwnershipRegistry(redis, keys, "g", "in");
    const store = new RedisSnapshotStore(redis, keys, 600, { group: "g", topic: "in" });
    const old = await owners.claim(5);
    await store.save("s", Buffer.from("old-1"), { partition: 5, inputOffset: "1", epoch: old });
    const fresh = await owners.claim(5);
    expect(fresh).toBe(old + 1);
    await store.save("s", Buffer.from("new-1"), { partition: 5, inputOffset: "9", epoch: fresh });
    await expect(store.save("s", Buffer.from("old-2"), { partition: 5, inputOffset: "3", epoch: old })).rejects.toBeInstanceOf(StaleOwnerError);
    const got = await store.load("s");
    expect(Buffer.from(got!.bytes).toString()).toBe("new-1");
    expect(got!.meta.inputOffset).toBe("9");
  });
});
