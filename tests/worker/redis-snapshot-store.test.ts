/**
 * Snapshots in a real Redis: round trip, TTL, and the fenced writes and
 * deletes that keep a stale owner (older ownership epoch of the partition)
 * from replacing or removing the new owner's snapshot, also after Redis lost
 * its epoch counters.
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
    expect(fresh).toBeGreaterThan(old);
    await store.save("s", Buffer.from("new-1"), { partition: 5, inputOffset: "9", epoch: fresh });
    await expect(store.save("s", Buffer.from("old-2"), { partition: 5, inputOffset: "3", epoch: old })).rejects.toBeInstanceOf(StaleOwnerError);
    const got = await store.load("s");
    expect(Buffer.from(got!.bytes).toString()).toBe("new-1");
    expect(got!.meta.inputOffset).toBe("9");
  });

  it("fences deletes like writes: a stale owner cannot delete the new owner's snapshot", async () => {
    const owners = new OwnershipRegistry(redis, keys, "g", "del");
    const store = new RedisSnapshotStore(redis, keys, 600, { group: "g", topic: "del" });
    const old = await owners.claim(1);
    await store.save("d", Buffer.from("old"), { partition: 1, inputOffset: "1", epoch: old });
    const fresh = await owners.claim(1);
    await store.save("d", Buffer.from("new"), { partition: 1, inputOffset: "5", epoch: fresh });
    await expect(store.delete("d", { partition: 1, epoch: old })).rejects.toBeInstanceOf(StaleOwnerError);
    expect(Buffer.from((await store.load("d"))!.bytes).toString()).toBe("new");
    await store.delete("d", { partition: 1, epoch: fresh });
    expect(await store.load("d")).toBeUndefined();
  });

  it("claims after Redis lost its data still outrank every earlier claim", async () => {
    const owners = new OwnershipRegistry(redis, keys, "g", "loss");
    const store = new RedisSnapshotStore(redis, keys, 600, { group: "g", topic: "loss" });
    const before = await owners.claim(0);
    await owners.claim(0);
    await redis.del(keys.epoch("g", "loss", 0)); // what a restart without persistence does
    const after = await owners.claim(0);
    expect(after).toBeGreaterThan(before);
    await store.save("l", Buffer.from("new"), { partition: 0, inputOffset: "1", epoch: after });
    await expect(store.save("l", Buffer.from("stale"), { partition: 0, inputOffset: "0", epoch: before })).rejects.toBeInstanceOf(StaleOwnerError);
  });
});
