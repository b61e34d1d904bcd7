/**
 * Snapshots in a real Redis: round trip, TTL, and the fenced writes and
 * deletes that keep a stale owner (older ownership epoch of the partition)
 * from replacing or removing the new owner's snapshot, also after Redis lost
 * its epoch counters.
 */
import { Redis } from "ioredis";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine, type Session } from "../../services/engine/index.js";
import { RedisKeys } from "../../services/worker/redis/keys.js";
import { OwnershipRegistry } from "../../services/worker/redis/ownership-registry.js";
import { RedisSnapshotStore, StaleOwnerError } from "../../services/worker/redis/redis-snapshot-store.js";
import { changedSlots } from "../../services/worker/redis/window-slots.js";
import { CorruptSnapshotError, encodeEnvelope } from "../../services/worker/snapshot-store.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { type RedisHandle, startRedis } from "../helpers/infra.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;

describe("RedisSnapshotStore", () => {
  let server: RedisHandle;
  let redis: Redis;
  let engine: Engine;
  const keys = new RedisKeys(`t${Date.now()}`);
  beforeAll(async () => {
    server = await startRedis();
    redis = new Redis(server.url);
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu", threads: 1 });
  });
  afterAll(async () => {
    redis?.disconnect();
    await engine?.close();
    await server?.stop();
  });

  /** Loads the stored snapshot and checks it is exactly the session's state now. */
  async function expectStored(store: RedisSnapshotStore, id: string, session: Session): Promise<void> {
    const got = await store.load(id);
    expect(Buffer.from(got!.bytes).equals(await session.export())).toBe(true);
    const restored = await engine.importSession(got!.bytes);
    expect((await restored.info()).tokensSeen).toBe((await session.info()).tokensSeen);
    await restored.close();
  }

  it("stores a sinks+window session incrementally: sinks once, then only the window slots written since", async () => {
    const store = new RedisSnapshotStore(redis, keys, 600);
    const session = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await session.append(ids.slice(0, 20));
    const full = await session.export();
    const first = await store.save("inc", full, { inputOffset: "1" });
    expect(first).toBeGreaterThan(full.length * 0.9); // the first write is whole
    await expectStored(store, "inc", session);
    const slotBytes = (await redis.hgetBuffer(keys.snapshot("inc"), "w:0"))!.length;
    for (const [from, to] of [[20, 23], [23, 31], [31, 32], [32, 70]] as const) {
      await session.append(ids.slice(from, to));
      const bytes = await session.export();
      const written = await store.save("inc", bytes, { inputOffset: String(to) });
      const slots = Math.min(to - from, 28);
      // Only the changed slots (plus the small parts: header, token state, last distribution).
      expect(written).toBeGreaterThanOrEqual(slots * slotBytes);
      const smallParts = bytes.length - Math.min(to, 32) * slotBytes; // header, token state, last distribution
      expect(written).toBeLessThan(slots * slotBytes + smallParts + 1024);
      await expectStored(store, "inc", session);
    }
    expect((await store.load("inc"))!.meta.inputOffset).toBe("70");
    await session.close();
  });

  it("writes whole when its base is not the stored generation, and detects a missing slot", async () => {
    const a = new RedisSnapshotStore(redis, keys, 600);
    const b = new RedisSnapshotStore(redis, keys, 600);
    const s1 = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    const s2 = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await s1.append(ids.slice(0, 40));
    await s2.append(ids.slice(50, 95));
    await a.save("gen", await s1.export(), {});
    await b.save("gen", await s2.export(), {}); // another writer (a new owner)
    await s1.append(ids.slice(40, 45));
    const bytes = await s1.export();
    expect(await a.save("gen", bytes, {})).toBeGreaterThan(bytes.length * 0.9); // its delta was refused: whole
    await expectStored(a, "gen", s1);
    // A key lost (Redis restarted empty) makes the next write whole too.
    await redis.del(keys.snapshot("gen"));
    await s1.append(ids.slice(45, 47));
    await a.save("gen", await s1.export(), {});
    await expectStored(a, "gen", s1);
    await redis.hdel(keys.snapshot("gen"), "w:3");
    await expect(a.load("gen")).rejects.toBeInstanceOf(CorruptSnapshotError);
    // A slot from another snapshot is caught by the engine's checksums.
    await new RedisSnapshotStore(redis, keys, 600).save("gen", await s1.export(), {});
    await redis.hset(keys.snapshot("gen"), "w:5", (await redis.hgetBuffer(keys.snapshot("gen"), "w:6"))!);
    const torn = await a.load("gen");
    await expect(engine.importSession(torn!.bytes)).rejects.toMatchObject({ code: "E_SNAPSHOT_CORRUPT" });
    await s1.close();
    await s2.close();
  });

  it("reads a snapshot an earlier version stored whole as a string", async () => {
    const store = new RedisSnapshotStore(redis, keys, 600);
    await redis.set(keys.snapshot("v1"), encodeEnvelope(Buffer.from([1, 2, 3]), { inputOffset: "4" }));
    const got = await store.load("v1");
    expect(Buffer.from(got!.bytes)).toEqual(Buffer.from([1, 2, 3]));
    expect(got!.meta.inputOffset).toBe("4");
  });

  it("changedSlots: the ring slots of the tokens written since, or all after a whole window", () => {
    expect(changedSlots(0, 3, 4, 8, 0)).toEqual([]);
    expect(changedSlots(3, 6, 4, 8, 2)).toEqual([0, 1]);
    expect(changedSlots(10, 14, 4, 8, 8)).toEqual([6, 7, 0, 1]);
    expect(changedSlots(10, 30, 4, 8, 8)).toEqual([0, 1, 2, 3, 4, 5, 6, 7]);
    expect(changedSlots(30, 10, 4, 8, 8)).toBeUndefined();
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
