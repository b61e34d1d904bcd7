/**
 * Generated tokens are part of a session's history: on replay after a
 * failover they are re-applied from the output topic, never sampled again
 * (docs/snapshots.md, "Replay"). This keeps, per input partition this worker
 * owns, what the output topic recorded since the partition's committed
 * offset: for each (session, generate request) the tokens by index.
 *
 * Output partition p holds the records of input partition p (same key, same
 * partition count). Each commit of input offset c carries a lower bound of
 * the output offsets written by records >= c (outputBound), so a new owner
 * scans output partition p from that bound to its end before it replays
 * input partition p from c.
 */
import type { OutputRecord } from "./record-codec.js";

interface Scan {
  /** Output offsets below this are what the earlier owners wrote. */
  end: bigint;
  resolve: () => void;
}

export class OutputReplay {
  /** partition -> session -> request id -> tokens by index. */
  readonly #recorded = new Map<number, Map<string, Map<string, number[]>>>();
  readonly #scans = new Map<number, Scan>();
  /** Per output partition: every output record written from now on has an offset at least this. */
  readonly #bound = new Map<number, bigint>();
  /** Per output partition: one past the last offset the watcher delivered. */
  readonly #position = new Map<number, bigint>();

  /** A lower bound of the offsets of output records not yet written to `partition`. */
  bound(partition: number): bigint {
    return this.#bound.get(partition) ?? 0n;
  }

  /** Output records were written at `baseOffset` and after. */
  written(partition: number, baseOffset: bigint): void {
    if (baseOffset > this.bound(partition)) this.#bound.set(partition, baseOffset);
  }

  /** Where the watcher is in `partition` (undefined before its first record there). */
  position(partition: number): bigint | undefined {
    return this.#position.get(partition);
  }

  /**
   * Collects what output records [from, end) of `partition` recorded; resolves
   * once the watcher has delivered them (the caller seeks it to `from`).
   */
  scan(partition: number, from: bigint, end: bigint): Promise<void> {
    this.written(partition, from);
    this.#recorded.set(partition, new Map());
    if (from >= end) {
      this.#scans.delete(partition);
      return Promise.resolve();
    }
    return new Promise((resolve) => this.#scans.set(partition, { end, resolve }));
  }

  /** Every record the output watcher reads. */
  observe(partition: number, offset: bigint, record: OutputRecord | undefined): void {
    this.#position.set(partition, offset + 1n);
    const scan = this.#scans.get(partition);
    if (!scan) return;
    if (offset < scan.end && record && !("error" in record) && record.event.kind === "token") {
      const { session, requestId, index, token } = record.event;
      const sessions = this.#recorded.get(partition)!;
      let requests = sessions.get(session);
      if (!requests) sessions.set(session, (requests = new Map()));
      let tokens = requests.get(requestId);
      if (!tokens) requests.set(requestId, (tokens = []));
      if (Number.isInteger(index) && index >= 0 && Number.isInteger(token) && token >= 0) tokens[index] = token;
    }
    if (offset + 1n >= scan.end) {
      this.#scans.delete(partition);
      scan.resolve();
    }
  }

  /** The tokens a generate request recorded before (contiguous from index 0), and forgets them. */
  take(partition: number, session: string, requestId: string): number[] | undefined {
    const requests = this.#recorded.get(partition)?.get(session);
    const tokens = requests?.get(requestId);
    if (!tokens) return undefined;
    requests!.delete(requestId);
    if (requests!.size === 0) this.#recorded.get(partition)!.delete(session);
    const prefix: number[] = [];
    for (let i = 0; i < tokens.length && tokens[i] !== undefined; i++) prefix.push(tokens[i]!);
    return prefix.length > 0 ? prefix : undefined;
  }

  /** The partition moved away. */
  drop(partition: number): void {
    this.#recorded.delete(partition);
    this.#scans.get(partition)?.resolve();
    this.#scans.delete(partition);
  }
}

/** Commit metadata: the output bound of the committed input offset. */
export function encodeCommitMetadata(outputBound: bigint): string {
  return JSON.stringify({ v: 1, output: outputBound.toString() });
}

export function decodeCommitMetadata(metadata: string | null | undefined): bigint | undefined {
  try {
    const o = JSON.parse(metadata ?? "") as { v?: unknown; output?: unknown };
    return o.v === 1 && typeof o.output === "string" && /^\d+$/.test(o.output) ? BigInt(o.output) : undefined;
  } catch {
    return undefined;
  }
}
