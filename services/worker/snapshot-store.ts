/**
 * Where session snapshots (Session.export() bytes) are kept between runs.
 * The embedded default is a local directory; the cluster uses Redis (see the
 * failover work). Snapshots are self-validating (versioned, checksummed), so a
 * store only needs to keep bytes whole: writes are atomic (temp file + rename).
 */
import { createHash } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";

import type { SessionDelta } from "../engine/index.js";

/** What a snapshot covers in the session's input log. */
export interface SnapshotMeta {
  /** Input-topic partition of the session, when it came from Kafka. */
  partition?: number;
  /** Offset of the last input record applied to the session (as a decimal string). */
  inputOffset?: string;
  /** The writer's ownership epoch of `partition`; a store may refuse writes from an older epoch. */
  epoch?: number;
}

export interface SnapshotStore {
  /** Resolves to the bytes written when the store writes less than `bytes` (incremental), else nothing. */
  save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<number | void>;
  /**
   * undefined when there is none; `closed` when the session was closed (a
   * tombstone: meta.inputOffset is the close record). Throws
   * CorruptSnapshotError on a damaged envelope.
   */
  load(session: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | { closed: SnapshotMeta } | undefined>;
  /** Removes a closed session's snapshot; `meta` (partition, epoch) fences it like a save. */
  delete(session: string, meta?: SnapshotMeta): Promise<void>;
  /** Forgets per-session write state (the session was closed or moved away); optional. */
  forgetWriter?(session: string): void;
  /** Incremental stores: the cache token count their next delta starts from (Session.exportSince). */
  incrementalBase?(session: string): number;
  /** Incremental stores: writes a Session.exportSince result; resolves to the bytes written. */
  saveDelta?(session: string, delta: SessionDelta, meta: SnapshotMeta): Promise<number>;
}

export class CorruptSnapshotError extends Error {
  override readonly name = "CorruptSnapshotError";
  readonly code = "SNAPSHOT_ENVELOPE";
}

const ENVELOPE_MAGIC = Buffer.from("SSNKSNAP");

/**
 * Envelope around the engine's session bytes:
 *   "SSNKSNAP" | u32 meta length | meta JSON | 32-byte sha256(meta JSON) | engine bytes
 * The engine bytes carry their own checksums; the digest guards the meta.
 */
export function encodeEnvelope(bytes: Uint8Array, meta: SnapshotMeta): Buffer {
  const json = Buffer.from(JSON.stringify(meta));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(json.length);
  return Buffer.concat([ENVELOPE_MAGIC, len, json, createHash("sha256").update(json).digest(), bytes]);
}

export function decodeEnvelope(buf: Uint8Array): { bytes: Uint8Array; meta: SnapshotMeta } {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 12 || !b.subarray(0, 8).equals(ENVELOPE_MAGIC)) throw new CorruptSnapshotError("snapshot envelope has a bad magic");
  const n = b.readUInt32LE(8);
  if (n > 1 << 16 || 12 + n + 32 > b.length) throw new CorruptSnapshotError("snapshot envelope is truncated");
  const json = b.subarray(12, 12 + n);
  if (!createHash("sha256").update(json).digest().equals(b.subarray(12 + n, 12 + n + 32)))
    throw new CorruptSnapshotError("snapshot envelope digest mismatch");
  let meta: SnapshotMeta;
  try {
    meta = JSON.parse(json.toString("utf8")) as SnapshotMeta;
  } catch {
    throw new CorruptSnapshotError("snapshot envelope meta is not JSON");
  }
  return { bytes: b.subarray(12 + n + 32), meta };
}

export class FileSnapshotStore implements SnapshotStore {
  readonly dir: string;
  #ready: Promise<unknown> | undefined;

  constructor(dir: string) {
    this.dir = dir;
  }

  #path(session: string): string {
    // Session ids are arbitrary strings; hash them into safe file names.
    return join(this.dir, `${createHash("sha256").update(session).digest("hex")}.snap`);
  }

  async save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<void> {
    this.#ready ??= mkdir(this.dir, { recursive: true });
    await this.#ready;
    const path = this.#path(session);
    const temp = `${path}.${process.pid}.${Date.now()}.tmp`;
    await writeFile(temp, encodeEnvelope(bytes, meta));
    await rename(temp, path);
  }

  async load(session: string): Promise<{ bytes: Uint8Array; meta: SnapshotMeta } | undefined> {
    let raw: Buffer;
    try {
      raw = await readFile(this.#path(session));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
      throw err;
    }
    return decodeEnvelope(raw);
  }

  async delete(session: string): Promise<void> {
    await rm(this.#path(session), { force: true });
  }
}
