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
import { RedisSnapshotStore, SnapshotBaseMovedError, StaleOwnerError } from "../../services/worker/redis/redis-snapshot-store.js";
import { CorruptSnapshotError, encodeEnvelope, type SnapshotMeta } from "../../services/worker/snapshot-store.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";
import { type RedisHandle, startRedis } from "../helpers/infra.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;

/** A stored snapshot's bytes and meta (not a tombstone). */
async function snapshotOf(store: RedisSnapshotStore, id: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | undefined> {
  const got = await store.load(id);
  if (got && "closed" in got) throw new Error(`"${id}" holds a tombstone`);
  return got;
}

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
    const got = await snapshotOf(store, id);
    expect(Buffer.from(got!.bytes).equals(await session.export())).toBe(true);
    const restored = await engine.importSession(got!.bytes);
    expect((await restored.info()).tokensSeen).toBe((await session.info()).tokensSeen);
    await restored.close();
  }

  it("stores a sinks+window session incrementally: sinks once, then only the window slots written since", async () => {
    const store = new RedisSnapshotStore(redis, keys, 600);
    const session = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await session.append(ids.slice(0, 2));
    const first = await session.exportSince(store.incrementalBase("inc"));
    expect(first).toMatchObject({ kind: "slots", slots: [] }); // 2 tokens: both in sinks
    await store.saveDelta("inc", first, { inputOffset: "0" });
    await expectStored(store, "inc", session);
    let cacheTokens = 2;
    for (const to of [20, 23, 31, 32, 70]) {
      await session.append(ids.slice(cacheTokens, to));
      const delta = await session.exportSince(store.incrementalBase("inc"));
      if (delta.kind !== "slots") throw new Error("expected a slot delta");
      // Exactly the ring slots of the tokens since (token t >= 4 in slot (t - 4) mod 28), or all after a whole window.
      const since = Array.from({ length: to - Math.max(cacheTokens, 4) }, (_, i) => (Math.max(cacheTokens, 4) + i - 4) % 28);
      expect(delta.slots).toEqual(to - Math.max(cacheTokens, 4) >= 28 ? Array.from({ length: 28 }, (_, j) => j) : since);
      expect(delta.sinks !== undefined).toBe(cacheTokens < 4);
      const whole = (await session.export()).length;
      const written = await store.saveDelta("inc", delta, { inputOffset: String(to) });
      const perSlot = delta.slotBytes.length / delta.slots.length;
      const smallParts = whole - Math.min(to, 32) * perSlot; // header, token state, last distribution
      // The changed slots (and the sinks while they fill), the small parts, and a little framing.
      expect(written).toBeLessThan(delta.slotBytes.length + (delta.sinks?.length ?? 0) + smallParts + 1024);
      await expectStored(store, "inc", session);
      cacheTokens = to;
    }
    expect((await snapshotOf(store, "inc"))!.meta.inputOffset).toBe("70");
    await session.close();
  });

  it("writes whole when its base is not the stored generation; refuses missing, stale or damaged slots", async () => {
    const a = new RedisSnapshotStore(redis, keys, 600);
    const b = new RedisSnapshotStore(redis, keys, 600);
    const s1 = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    const s2 = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await s1.append(ids.slice(0, 40));
    await s2.append(ids.slice(50, 95));
    await a.saveDelta("gen", await s1.exportSince(a.incrementalBase("gen")), {});
    await b.saveDelta("gen", await s2.exportSince(b.incrementalBase("gen")), {}); // another writer (a new owner)
    await s1.append(ids.slice(40, 45));
    await expect(a.saveDelta("gen", await s1.exportSince(a.incrementalBase("gen")), {})).rejects.toBeInstanceOf(SnapshotBaseMovedError);
    expect(a.incrementalBase("gen")).toBe(-1); // so the next one is whole
    await a.saveDelta("gen", await s1.exportSince(a.incrementalBase("gen")), {});
    await expectStored(a, "gen", s1);
    // A key lost (Redis restarted empty): the delta is refused, the next write is whole.
    await redis.del(keys.snapshot("gen"));
    await s1.append(ids.slice(45, 47));
    await expect(a.saveDelta("gen", await s1.exportSince(a.incrementalBase("gen")), {})).rejects.toBeInstanceOf(SnapshotBaseMovedError);
    await a.saveDelta("gen", await s1.exportSince(a.incrementalBase("gen")), {});
    await expectStored(a, "gen", s1);
    // A slot missing, holding another token, or damaged: refused at load.
    const key = keys.snapshot("gen");
    const w5 = (await redis.hgetBuffer(key, "w:5"))!;
    await redis.hset(key, "w:5", (await redis.hgetBuffer(key, "w:6"))!);
    await expect(a.load("gen")).rejects.toBeInstanceOf(CorruptSnapshotError);
    const flipped = Buffer.from(w5);
    flipped[20]! ^= 1;
    await redis.hset(key, "w:5", flipped);
    await expect(a.load("gen")).rejects.toBeInstanceOf(CorruptSnapshotError);
    await redis.hdel(key, "w:5");
    await expect(a.load("gen")).rejects.toBeInstanceOf(CorruptSnapshotError);
    await s1.close();
    await s2.close();
  });

  it("stores whole engine bytes in pieces too, and a session without a ring whole", async () => {
    const store = new RedisSnapshotStore(redis, keys, 600);
    const ring = await engine.openSession({ policy: "window", window: 16, sinkToken: "none" });
    await ring.append(ids.slice(0, 37));
    await store.save("w", await ring.export(), {});
    await expectStored(store, "w", ring);
    expect(await redis.hget(keys.snapshot("w"), "slots")).toBe("16");
    const dense = await engine.openSession({ policy: "dense", sinkToken: "none" });
    await dense.append(ids.slice(0, 12));
    const delta = await dense.exportSince(-1);
    expect(delta.kind).toBe("whole");
    await store.saveDelta("d", delta, {});
    await expectStored(store, "d", dense);
    await ring.close();
    await dense.close();
  });

  it("reads a snapshot an earlier version stored whole as a string", async () => {
    const store = new RedisSnapshotStore(redis, keys, 600);
    await redis.set(keys.snapshot("v1"), encodeEnvelope(Buffer.from([1, 2, 3]), { inputOffset: "4" }));
    const got = await snapshotOf(store, "v1");
    expect(Buffer.from(got!.bytes)).toEqual(Buffer.from([1, 2, 3]));
    expect(got!.meta.inputOffset).toBe("4");
  });

  it("round-trips bytes and meta, with a TTL", async () => {
    const store = new RedisSnapshotStore(redis, keys, 120);
    await store.save("a", Buffer.from([1, 2, 3]), { partition: 2, inputOffset: "41" });
    const got = await snapshotOf(store, "a");
    expect(Buffer.from(got!.bytes)).toEqual(Buffer.from([1, 2, 3]));
    expect(got!.meta).toEqual({ partition: 2, inputOffset: "41" });
    const ttl = await redis.ttl(keys.snapshot("a"));
    expect(ttl).toBeGreaterThan(100);
    expect(ttl).toBeLessThanOrEqual(120);
    await store.delete("a");
    expect(await snapshotOf(store, "a")).toBeUndefined();
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
    const got = await snapshotOf(store, "s");
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
    expect(Buffer.from((await snapshotOf(store, "d"))!.bytes).toString()).toBe("new");
    await store.delete("d", { partition: 1, epoch: fresh });
    expect(await snapshotOf(store, "d")).toBeUndefined();
    // With the close record's offset, a tombstone stays.
    await store.save("d", Buffer.from("again"), { partition: 1, inputOffset: "7", epoch: fresh });
    await store.delete("d", { partition: 1, epoch: fresh, inputOffset: "8" });
    expect(await store.load("d")).toEqual({ closed: { inputOffset: "8" } });
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
