/**
 * Session snapshots in Redis: one hash per session (lua/save-snapshot.lua).
 * Sessions with a sink + ring cache (policies sinks and window) are stored
 * incrementally: the sinks once, and each later snapshot writes only the
 * window slots written since the one before (window-slots.ts), plus the small
 * parts (header, token state, last distribution). The engine exports only
 * those too (Session.exportSince), so a snapshot costs what changed. Each write carries a new
 * generation and names the generation it applies to; one that does not match
 * (another writer, a lost key) is refused and written whole instead. The
 * stored hash never holds more than one snapshot's worth (slots are
 * overwritten in place), so nothing needs compacting.
 *
 * Writes are fenced by the partition's ownership epoch (a stale owner after a
 * rebalance is refused), deletes too (lua/delete-snapshot.lua). A write and a
 * read (lua/load-snapshot.lua) are each one script, so a reader never sees a
 * torn snapshot; the engine's CRCs check the reassembled bytes end to end.
 * Idle sessions' snapshots expire after `ttlSeconds`.
 */
import { randomUUID } from "node:crypto";
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { Redis } from "ioredis";

import { packageRoot } from "../../package-root.js";
import type { SessionDelta } from "../../engine/index.js";
import { CorruptSnapshotError, decodeEnvelope, encodeEnvelope, type SnapshotMeta, type SnapshotStore } from "../snapshot-store.js";
import type { RedisKeys } from "./keys.js";
import { encodeSinks, encodeSlot, joinSnapshot, slotToken, snapshotHeader, splitSnapshot } from "./window-slots.js";

/** The Lua scripts live in services/worker/redis/lua (shipped beside dist/). */
function loadScript(name: string): string {
  return readFileSync(join(packageRoot(), "services", "worker", "redis", "lua", name), "utf8");
}

const SAVE_SNAPSHOT = loadScript("save-snapshot.lua");
const LOAD_SNAPSHOT = loadScript("load-snapshot.lua");
const DELETE_SNAPSHOT = loadScript("delete-snapshot.lua");

/** A snapshot write refused because a newer owner claimed the partition. */
export class StaleOwnerError extends Error {
  override readonly name = "StaleOwnerError";
  readonly code = "STALE_OWNER";
}

/** What this store last wrote for a session: the base of its next delta. */
interface Written {
  generation: string;
  cacheTokens: number;
}

/** The write of a delta was refused: its base is not what Redis holds. The next snapshot is written whole. */
export class SnapshotBaseMovedError extends Error {
  override readonly name = "SnapshotBaseMovedError";
  readonly code = "SNAPSHOT_BASE_MOVED";
}

export class RedisSnapshotStore implements SnapshotStore {
  readonly #written = new Map<string, Written>();
  /** Generations are `{writer}.{n}`: unique across workers and restarts. */
  readonly #writer = randomUUID().slice(0, 8);
  #generation = 0;

  constructor(
    readonly redis: Redis,
    readonly keys: RedisKeys,
    readonly ttlSeconds = 7 * 24 * 3600,
    readonly partitionKey?: { group: string; topic: string },
  ) {}

  /** The cache token count of this store's last write of the session (-1: none): what the next delta starts from. */
  incrementalBase(session: string): number {
    return this.#written.get(session)?.cacheTokens ?? -1;
  }

  /** Writes whole engine bytes (as pieces, for a sink + ring cache); resolves to the bytes sent. */
  async save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<number> {
    const engine = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    const split = splitSnapshot(engine);
    const generation = this.#next();
    this.#written.delete(session);
    if (!split) return this.#commit(session, meta, "", generation, ["head", encodeEnvelope(engine, meta)], undefined);
    const fields: Array<string | Buffer> = ["head", encodeEnvelope(split.skeleton, meta), "slots", String(split.header.windowSlots), "sink", encodeSinks(split.sinks)];
    for (let j = 0; j < split.header.windowSlots; j++) fields.push(`w:${j}`, encodeSlot(slotToken(j, split.header), split.slot(j)));
    return this.#commit(session, meta, "", generation, fields, split.header.cacheTokens);
  }

  /**
   * Writes what Session.exportSince(incrementalBase(session)) returned: only
   * the slots in it. Throws SnapshotBaseMovedError when Redis holds another
   * generation than the delta's base (the next snapshot is then whole).
   */
  async saveDelta(session: string, delta: SessionDelta, meta: SnapshotMeta): Promise<number> {
    if (delta.kind === "whole") return this.save(session, delta.bytes, meta);
    const header = snapshotHeader(delta.skeleton);
    const previous = this.#written.get(session);
    const whole = delta.sinks !== undefined && delta.slots.length === header.windowSlots && delta.slots.every((j, i) => j === i);
    if (!whole && !previous) throw new SnapshotBaseMovedError(`snapshot of "${session}": a delta without a base`);
    const fields: Array<string | Buffer> = ["head", encodeEnvelope(delta.skeleton, meta), "slots", String(header.windowSlots)];
    if (delta.sinks) fields.push("sink", encodeSinks(delta.sinks));
    const size = delta.slots.length === 0 ? 0 : delta.slotBytes.length / delta.slots.length;
    delta.slots.forEach((j, i) => fields.push(`w:${j}`, encodeSlot(slotToken(j, header), delta.slotBytes.subarray(i * size, (i + 1) * size))));
    return this.#commit(session, meta, whole ? "" : previous!.generation, this.#next(), fields, header.cacheTokens);
  }

  #next(): string {
    return `${this.#writer}.${++this.#generation}`;
  }

  async #commit(session: string, meta: SnapshotMeta, base: string, generation: string, fields: Array<string | Buffer>, cacheTokens: number | undefined): Promise<number> {
    const fenced = this.partitionKey && meta.partition !== undefined && meta.epoch !== undefined;
    const epochKey = fenced ? this.keys.epoch(this.partitionKey!.group, this.partitionKey!.topic, meta.partition!) : this.keys.snapshot(session);
    const args = [fenced ? String(meta.epoch) : "", String(this.ttlSeconds), base, generation, ...fields];
    let result: number;
    try {
      result = Number(await this.redis.eval(SAVE_SNAPSHOT, 2, this.keys.snapshot(session), epochKey, ...args));
    } catch (err) {
      // Applied or not, the next write is whole: its base is uncertain.
      this.#written.delete(session);
      throw err;
    }
    if (result === 0) throw new StaleOwnerError(`snapshot of "${session}" refused: partition ${meta.partition} has a newer owner`);
    if (result === -1) {
      this.#written.delete(session);
      throw new SnapshotBaseMovedError(`snapshot of "${session}": Redis holds another generation than its base; the next one is written whole`);
    }
    if (cacheTokens !== undefined) this.#written.set(session, { generation, cacheTokens });
    else this.#written.delete(session);
    return fields.reduce((n, f) => n + f.length, 0);
  }

  async load(session: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | { closed: SnapshotMeta } | undefined> {
    const flat = (await this.redis.callBuffer("EVAL", [LOAD_SNAPSHOT, "1", this.keys.snapshot(session)])) as Buffer[];
    if (flat.length === 0) return undefined;
    const fields = new Map<string, Buffer>();
    for (let i = 0; i + 1 < flat.length; i += 2) fields.set(flat[i]!.toString("latin1"), flat[i + 1]!);
    const tomb = fields.get("tomb");
    if (tomb !== undefined) {
      const closedAt = tomb.toString("latin1");
      if (!/^\d+$/.test(closedAt)) throw new CorruptSnapshotError("tombstone has no close offset");
      return { closed: { inputOffset: closedAt } };
    }
    const head = fields.get("head");
    if (!head) throw new CorruptSnapshotError("snapshot has no head");
    const { bytes, meta } = decodeEnvelope(head);
    const slotsField = fields.get("slots");
    if (slotsField === undefined) return { bytes, meta };
    const n = Number(slotsField.toString("latin1"));
    const sink = fields.get("sink");
    if (!Number.isInteger(n) || n < 0 || sink === undefined) throw new CorruptSnapshotError("incremental snapshot is missing its sinks or slot count");
    const slots: Buffer[] = [];
    for (let j = 0; j < n; j++) {
      const slot = fields.get(`w:${j}`);
      if (!slot) throw new CorruptSnapshotError(`incremental snapshot is missing window slot ${j}`);
      slots.push(slot);
    }
    return { bytes: joinSnapshot(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), sink, slots), meta };
  }

  /** Removes a closed session's snapshot; fenced (partition, epoch), it leaves a tombstone at meta.inputOffset, the close record. */
  async delete(session: string, meta: SnapshotMeta = {}): Promise<void> {
    this.#written.delete(session);
    if (this.partitionKey && meta.partition !== undefined && meta.epoch !== undefined) {
      const epochKey = this.keys.epoch(this.partitionKey.group, this.partitionKey.topic, meta.partition);
      const deleted = await this.redis.eval(DELETE_SNAPSHOT, 2, this.keys.snapshot(session), epochKey, String(meta.epoch), meta.inputOffset ?? "", String(this.ttlSeconds));
      if (deleted !== 1) throw new StaleOwnerError(`delete of "${session}" refused: partition ${meta.partition} has a newer owner`);
      return;
    }
    await this.redis.del(this.keys.snapshot(session));
  }

  /** Forgets the last write of a session closed or moved away: its next save is written whole. */
  forgetWriter(session: string): void {
    this.#written.delete(session);
  }
}
