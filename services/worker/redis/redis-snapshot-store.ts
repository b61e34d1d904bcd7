/**
 * Session snapshots in Redis: one key per session holding the envelope
 * (snapshot-store.ts). A snapshot that names its partition and ownership epoch
 * is written by lua/save-snapshot.lua, which refuses writers whose epoch is
 * older than the partition's (a stale owner after a rebalance); either way the
 * value is replaced by one command, so a reader never sees a torn snapshot.
 * A closed session's snapshot is deleted by lua/delete-snapshot.lua under the
 * same fence. Idle sessions' snapshots expire after `ttlSeconds`.
 */
import { readFileSync } from "node:fs";
import { join } from "node:path";

import type { Redis } from "ioredis";

import { packageRoot } from "../../package-root.js";
import { decodeEnvelope, encodeEnvelope, type SnapshotMeta, type SnapshotStore } from "../snapshot-store.js";
import type { RedisKeys } from "./keys.js";

/** The Lua scripts live in services/worker/redis/lua (shipped beside dist/). */
function loadScript(name: string): string {
  return readFileSync(join(packageRoot(), "services", "worker", "redis", "lua", name), "utf8");
}

const SAVE_SNAPSHOT = loadScript("save-snapshot.lua");
const DELETE_SNAPSHOT = loadScript("delete-snapshot.lua");

/** A snapshot write refused because a newer owner claimed the partition. */
export class StaleOwnerError extends Error {
  override readonly name = "StaleOwnerError";
  readonly code = "STALE_OWNER";
}

export class RedisSnapshotStore implements SnapshotStore {
  constructor(
    readonly redis: Redis,
    readonly keys: RedisKeys,
    readonly ttlSeconds = 7 * 24 * 3600,
    readonly partitionKey?: { group: string; topic: string },
  ) {}

  async save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<void> {
    const value = encodeEnvelope(bytes, meta);
    if (this.partitionKey && meta.partition !== undefined && meta.epoch !== undefined) {
      const epochKey = this.keys.epoch(this.partitionKey.group, this.partitionKey.topic, meta.partition);
      const written = await this.redis.eval(SAVE_SNAPSHOT, 2, this.keys.snapshot(session), epochKey, value, String(meta.epoch), String(this.ttlSeconds));
      if (written !== 1) throw new StaleOwnerError(`snapshot of "${session}" refused: partition ${meta.partition} has a newer owner`);
      return;
    }
    await this.redis.set(this.keys.snapshot(session), value, "EX", this.ttlSeconds);
  }

  async load(session: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | undefined> {
    const raw = await this.redis.getBuffer(this.keys.snapshot(session));
    return raw ? decodeEnvelope(raw) : undefined;
  }

  async delete(session: string, meta: SnapshotMeta = {}): Promise<void> {
    if (this.partitionKey && meta.partition !== undefined && meta.epoch !== undefined) {
      const epochKey = this.keys.epoch(this.partitionKey.group, this.partitionKey.topic, meta.partition);
      const deleted = await this.redis.eval(DELETE_SNAPSHOT, 2, this.keys.snapshot(session), epochKey, String(meta.epoch));
      if (deleted !== 1) throw new StaleOwnerError(`delete of "${session}" refused: partition ${meta.partition} has a newer owner`);
      return;
    }
    await this.redis.del(this.keys.snapshot(session));
  }
}
