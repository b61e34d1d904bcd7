/**
 * The pieces an incremental snapshot is stored in, and the engine bytes
 * (format v1, docs/snapshots.md) put back together from them:
 *
 *   skeleton  the engine bytes with empty SINK and WIND parts (header, token
 *             state, last distribution, with their CRCs)
 *   sinks     the SINK payload, as a record: payload, u32 CRC-32
 *   slot J    window ring slot J as a record: u64 token t, payload (per
 *             layer K then V of that slot, fp32), u32 CRC-32 of t and payload
 *
 * Token t >= S of the cache stream lives in window slot (t - S) mod W, so a
 * slot record says which token it holds, and a reader checks that every slot
 * holds the newest token the header's count puts there: a slot left from an
 * older snapshot, or torn, is refused. The reassembled SINK and WIND parts
 * get their CRCs computed here; the engine checks the rest.
 */
import { crc32 } from "node:zlib";

import { CorruptSnapshotError } from "../snapshot-store.js";

const MAGIC = "SSNKSESS";
const TRAILER = "SSNKEND!";
const TAG_SINK = 0x4b4e4953;
const TAG_WIND = 0x444e4957;
/** Policies (header byte, cache_policy.h: dense, window, recompute, sinks) with a sink + ring cache. */
const RING_POLICIES = new Set([1, 3]);

export interface SnapshotHeader {
  layers: number;
  /** Bytes of one slot of one layer's K (or V): kv_heads x head_dim fp32. */
  slotBytes: number;
  policy: number;
  sinks: number;
  window: number;
  /** Tokens written to the cache stream. */
  cacheTokens: number;
  /** Window ring slots filled (n). */
  windowSlots: number;
}

function corrupt(why: string): never {
  throw new CorruptSnapshotError(`incremental snapshot: ${why}`);
}

function isEngineBytes(bytes: Buffer): boolean {
  return bytes.length >= 16 && bytes.toString("latin1", 0, 8) === MAGIC;
}

function readHeader(bytes: Buffer): { header: SnapshotHeader; partsAt: number } {
  if (!isEngineBytes(bytes)) corrupt("bad engine magic");
  const len = bytes.readUInt32LE(12);
  const h = 16;
  if (len < 81 || h + len + 4 > bytes.length) corrupt("truncated engine header");
  const sinks = Number(bytes.readBigInt64LE(h + 28));
  const window = Number(bytes.readBigInt64LE(h + 36));
  const cacheTokens = Number(bytes.readBigInt64LE(h + 64));
  const filled = Math.min(cacheTokens, sinks + window);
  return {
    header: {
      layers: bytes.readUInt32LE(h + 8),
      slotBytes: bytes.readUInt32LE(h + 12) * bytes.readUInt32LE(h + 16) * 4,
      policy: bytes.readUInt8(h + 24),
      sinks,
      window,
      cacheTokens,
      windowSlots: filled - Math.min(sinks, filled),
    },
    partsAt: h + len + 4,
  };
}

export function snapshotHeader(skeleton: Buffer): SnapshotHeader {
  return readHeader(skeleton).header;
}

/** The newest token of the cache stream that window slot j holds. */
export function slotToken(j: number, h: SnapshotHeader): number {
  return h.sinks + j + h.window * Math.floor((h.cacheTokens - 1 - h.sinks - j) / h.window);
}

export function encodeSlot(token: number, payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(8 + payload.length + 4);
  out.writeBigUInt64LE(BigInt(token), 0);
  payload.copy(out, 8);
  out.writeUInt32LE(crc32(out.subarray(0, 8 + payload.length)), 8 + payload.length);
  return out;
}

function decodeSlot(j: number, record: Buffer, h: SnapshotHeader): Buffer {
  const size = 2 * h.layers * h.slotBytes;
  if (record.length !== 8 + size + 4) corrupt(`window slot ${j} has the wrong size`);
  if (crc32(record.subarray(0, 8 + size)) !== record.readUInt32LE(8 + size)) corrupt(`window slot ${j} checksum mismatch`);
  if (Number(record.readBigUInt64LE(0)) !== slotToken(j, h)) corrupt(`window slot ${j} is from another snapshot`);
  return record.subarray(8, 8 + size);
}

export function encodeSinks(payload: Buffer): Buffer {
  const out = Buffer.allocUnsafe(payload.length + 4);
  payload.copy(out, 0);
  out.writeUInt32LE(crc32(payload), payload.length);
  return out;
}

function decodeSinks(record: Buffer): Buffer {
  if (record.length < 4) corrupt("sink record is truncated");
  const payload = record.subarray(0, record.length - 4);
  if (crc32(payload) !== record.readUInt32LE(record.length - 4)) corrupt("sink checksum mismatch");
  return payload;
}

/** Each part: tag, where its payload starts, its length. */
function parts(bytes: Buffer, at: number): Array<{ start: number; payload: number; length: number; tag: number }> {
  const out = [];
  while (at < bytes.length - 8) {
    if (at + 12 > bytes.length) corrupt("truncated part header");
    const tag = bytes.readUInt32LE(at);
    const length = Number(bytes.readBigUInt64LE(at + 4));
    if (at + 12 + length + 4 > bytes.length) corrupt("truncated part");
    out.push({ start: at, payload: at + 12, length, tag });
    at += 12 + length + 4;
  }
  if (at !== bytes.length - 8 || bytes.toString("latin1", at) !== TRAILER) corrupt("bad engine trailer");
  return out;
}

function emptyPart(tag: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt32LE(tag, 0); // length 0, CRC-32 of nothing 0
  return b;
}

/**
 * Whole engine bytes cut into the stored pieces (a session restored or first
 * written whole), or undefined for bytes without a sink + ring cache (dense,
 * recompute, not engine bytes): those are stored as they are.
 */
export function splitSnapshot(bytes: Buffer): { skeleton: Buffer; header: SnapshotHeader; sinks: Buffer; slot(j: number): Buffer } | undefined {
  if (!isEngineBytes(bytes)) return undefined;
  const { header, partsAt } = readHeader(bytes);
  if (!RING_POLICIES.has(header.policy)) return undefined;
  const all = parts(bytes, partsAt);
  const sink = all.find((p) => p.tag === TAG_SINK);
  const wind = all.find((p) => p.tag === TAG_WIND);
  if (!sink || !wind) return undefined;
  const b = header.slotBytes;
  const n = header.windowSlots;
  if (wind.length !== n * 2 * header.layers * b) corrupt("window part does not match the header");
  const skeleton = Buffer.concat(
    all.map((p) => (p.tag === TAG_SINK || p.tag === TAG_WIND ? emptyPart(p.tag) : bytes.subarray(p.start, p.payload + p.length + 4))),
  );
  return {
    skeleton: Buffer.concat([bytes.subarray(0, partsAt), skeleton, bytes.subarray(bytes.length - 8)]),
    header,
    sinks: bytes.subarray(sink.payload, sink.payload + sink.length),
    slot: (j) => {
      const out = Buffer.allocUnsafe(2 * header.layers * b);
      for (let l = 0; l < header.layers; l++) {
        bytes.copy(out, l * 2 * b, wind.payload + (l * 2 * n + j) * b, wind.payload + (l * 2 * n + j + 1) * b);
        bytes.copy(out, l * 2 * b + b, wind.payload + (l * 2 * n + n + j) * b, wind.payload + (l * 2 * n + n + j + 1) * b);
      }
      return out;
    },
  };
}

/**
 * The engine bytes from a skeleton, the sink record and the slot records
 * 0..n-1, after checking each record (checksum, and the token it holds).
 */
export function joinSnapshot(skeleton: Buffer, sinkRecord: Buffer, slotRecords: Buffer[]): Buffer {
  const { header, partsAt } = readHeader(skeleton);
  if (slotRecords.length !== header.windowSlots) corrupt(`${slotRecords.length} window slots stored, the header says ${header.windowSlots}`);
  const sinks = decodeSinks(sinkRecord);
  const slots = slotRecords.map((r, j) => decodeSlot(j, r, header));
  const b = header.slotBytes;
  const n = slots.length;
  const wind = Buffer.allocUnsafe(n * 2 * header.layers * b);
  for (let l = 0; l < header.layers; l++)
    for (let j = 0; j < n; j++) {
      slots[j]!.copy(wind, (l * 2 * n + j) * b, l * 2 * b, l * 2 * b + b);
      slots[j]!.copy(wind, (l * 2 * n + n + j) * b, l * 2 * b + b, (l + 1) * 2 * b);
    }
  const out: Buffer[] = [skeleton.subarray(0, partsAt)];
  for (const p of parts(skeleton, partsAt)) {
    const payload = p.tag === TAG_SINK ? sinks : p.tag === TAG_WIND ? wind : undefined;
    if (!payload) {
      out.push(skeleton.subarray(p.start, p.payload + p.length + 4));
      continue;
    }
    const frame = Buffer.alloc(12);
    frame.writeUInt32LE(p.tag, 0);
    frame.writeBigUInt64LE(BigInt(payload.length), 4);
    const crc = Buffer.alloc(4);
    crc.writeUInt32LE(crc32(payload), 0);
    out.push(frame, payload, crc);
  }
  out.push(skeleton.subarray(skeleton.length - 8));
  return Buffer.concat(out);
}
