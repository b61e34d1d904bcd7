/**
 * Splits the engine's session bytes (format v1, docs/snapshots.md) into what
 * an incremental snapshot stores, and puts them back together:
 *
 *   skeleton  the bytes with the SINK and WIND payloads cut out (each part's
 *             tag, length and CRC-32 stay, so the reassembled bytes are
 *             checked end to end by the engine's import)
 *   sinks     the SINK payload (changes only while the first S tokens arrive)
 *   slots     the WIND payload cut per ring slot: slot j holds, for every
 *             layer, K then V of that slot (2 * layers * kv_heads * head_dim
 *             fp32). WIND itself is per layer: K of slots 0..n-1, then V.
 *
 * Token t >= S of the cache stream lives in window slot (t - S) mod W, so the
 * slots a snapshot must rewrite follow from the cache token counts of it and
 * of the last one written (changedSlots).
 */
import { CorruptSnapshotError } from "../snapshot-store.js";

const MAGIC = "SSNKSESS";
const TRAILER = "SSNKEND!";
const TAG_SINK = 0x4b4e4953;
const TAG_WIND = 0x444e4957;
/** Policies (header byte) whose cache is sinks + a ring: the ones snapshotted incrementally. */
const RING_POLICIES = new Set([1, 3]); // window, sinks (cache_policy.h order: dense, window, recompute, sinks)

export interface SplitSnapshot {
  skeleton: Buffer;
  sinks: Buffer;
  /** Window ring slots in slot order (slot j = tokens t with (t - S) mod W = j). */
  slots: Buffer[];
  /** Tokens written to the cache stream (the header's count). */
  cacheTokens: number;
  sinkCount: number;
  window: number;
}

interface Header {
  layers: number;
  slotBytes: number;
  policy: number;
  sinks: number;
  window: number;
  cacheTokens: number;
}

function corrupt(why: string): never {
  throw new CorruptSnapshotError(`incremental snapshot: ${why}`);
}

function readHeader(bytes: Buffer): { header: Header; partsAt: number } {
  if (bytes.length < 16 || bytes.toString("latin1", 0, 8) !== MAGIC) corrupt("bad engine magic");
  const len = bytes.readUInt32LE(12);
  const h = 16;
  if (len < 81 || h + len + 4 > bytes.length) corrupt("truncated engine header");
  const kvHeads = bytes.readUInt32LE(h + 12);
  const headDim = bytes.readUInt32LE(h + 16);
  return {
    header: {
      layers: bytes.readUInt32LE(h + 8),
      slotBytes: kvHeads * headDim * 4,
      policy: bytes.readUInt8(h + 24),
      sinks: Number(bytes.readBigInt64LE(h + 28)),
      window: Number(bytes.readBigInt64LE(h + 36)),
      cacheTokens: Number(bytes.readBigInt64LE(h + 64)),
    },
    partsAt: h + len + 4,
  };
}

/** Each part: [start of the tag, start of the payload, payload length, tag]. */
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

/** The split of engine bytes, or undefined for a policy without a ring (dense, recompute) or other bytes: those are stored whole. */
export function splitSnapshot(bytes: Buffer): SplitSnapshot | undefined {
  if (bytes.length < 16 || bytes.toString("latin1", 0, 8) !== MAGIC) return undefined; // not engine bytes: stored as they are
  const { header, partsAt } = readHeader(bytes);
  if (!RING_POLICIES.has(header.policy)) return undefined;
  const all = parts(bytes, partsAt);
  const sink = all.find((p) => p.tag === TAG_SINK);
  const wind = all.find((p) => p.tag === TAG_WIND);
  if (!sink || !wind) return undefined;
  const perSlot = 2 * header.layers * header.slotBytes;
  if (perSlot === 0 || wind.length % perSlot !== 0) corrupt("window part is not whole slots");
  const n = wind.length / perSlot;
  const slots = Array.from({ length: n }, () => Buffer.allocUnsafe(perSlot));
  const b = header.slotBytes;
  for (let l = 0; l < header.layers; l++)
    for (let j = 0; j < n; j++) {
      const k = wind.payload + (l * 2 * n + j) * b;
      const v = wind.payload + (l * 2 * n + n + j) * b;
      bytes.copy(slots[j]!, l * 2 * b, k, k + b);
      bytes.copy(slots[j]!, l * 2 * b + b, v, v + b);
    }
  const skeleton = Buffer.concat([
    bytes.subarray(0, sink.payload),
    bytes.subarray(sink.payload + sink.length, wind.payload),
    bytes.subarray(wind.payload + wind.length),
  ]);
  return {
    skeleton,
    sinks: Buffer.from(bytes.subarray(sink.payload, sink.payload + sink.length)),
    slots,
    cacheTokens: header.cacheTokens,
    sinkCount: header.sinks,
    window: header.window,
  };
}

/**
 * The engine bytes again, from a skeleton, the sink payload and the window
 * slots 0..n-1. Lengths are checked here; the content by the engine's CRCs.
 */
export function joinSnapshot(skeleton: Buffer, sinks: Buffer, slots: Buffer[]): Buffer {
  const { header, partsAt } = readHeader(skeleton);
  const out: Buffer[] = [skeleton.subarray(0, partsAt)];
  let at = partsAt;
  const b = header.slotBytes;
  while (at < skeleton.length - 8) {
    if (at + 12 > skeleton.length) corrupt("truncated part header");
    const tag = skeleton.readUInt32LE(at);
    const length = Number(skeleton.readBigUInt64LE(at + 4));
    out.push(skeleton.subarray(at, at + 12));
    if (tag === TAG_SINK) {
      if (sinks.length !== length) corrupt("sink part has the wrong length");
      out.push(sinks);
      out.push(skeleton.subarray(at + 12, at + 16));
      at += 16;
    } else if (tag === TAG_WIND) {
      const perSlot = 2 * header.layers * b;
      if (perSlot === 0 || length !== slots.length * perSlot || slots.some((s) => s.length !== perSlot)) corrupt("window slots do not match the window part");
      const wind = Buffer.allocUnsafe(length);
      const n = slots.length;
      for (let l = 0; l < header.layers; l++)
        for (let j = 0; j < n; j++) {
          slots[j]!.copy(wind, (l * 2 * n + j) * b, l * 2 * b, l * 2 * b + b);
          slots[j]!.copy(wind, (l * 2 * n + n + j) * b, l * 2 * b + b, (l + 1) * 2 * b);
        }
      out.push(wind);
      out.push(skeleton.subarray(at + 12, at + 16));
      at += 16;
    } else {
      if (at + 12 + length + 4 > skeleton.length) corrupt("truncated part");
      out.push(skeleton.subarray(at + 12, at + 12 + length + 4));
      at += 12 + length + 4;
    }
  }
  out.push(skeleton.subarray(at));
  return Buffer.concat(out);
}

/**
 * Window slots that changed between a snapshot at `from` cache tokens and
 * one at `to`: those of tokens from..to-1 past the sinks, or all of them
 * once a whole window went by. undefined when `to` is behind `from` (not
 * the same session: write it whole).
 */
export function changedSlots(from: number, to: number, sinks: number, window: number, filled: number): number[] | undefined {
  if (to < from) return undefined;
  const first = Math.max(from, sinks);
  if (to - first >= window) return Array.from({ length: filled }, (_, j) => j);
  const out: number[] = [];
  for (let t = first; t < to; t++) out.push((t - sinks) % window);
  return out;
}
