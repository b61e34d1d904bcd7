/**
 * Session snapshots in Redis: one key per session holding the envelope
 * (snapshot-store.ts), written with a single SET so a reader never sees a torn
 * snapshot. Idle sessions' snapshots expire after `ttlSeconds`.
 */
import type { Redis } from "ioredis";

import { decodeEnvelope, encodeEnvelope, type SnapshotMeta, type SnapshotStore } from "../snapshot-store.js";
import type { RedisKeys } from "./keys.js";

export class RedisSnapshotStore implements SnapshotStore {
  constructor(
    readonly redis: Redis,
    readonly keys: RedisKeys,
    readonly ttlSeconds = 7 * 24 * 3600,
  ) {}

  async save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<void> {
    await this.redis.set(this.keys.snapshot(session), encodeEnvelope(bytes, meta), "EX", this.ttlSeconds);
  }

  async load(session: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | undefined> {
    const raw = await this.redis.getBuffer(this.keys.snapshot(session));
    return raw ? decodeEnvelope(raw) : undefined;
  }

  async delete(session: string): Promise<void> {
    await this.redis.del(this.keys.snapshot(session));
  }
}
