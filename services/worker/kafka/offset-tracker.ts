/**
 * Which input offsets of one partition may be committed. An offset is
 * committable when every record before it has been applied AND every session
 * those records touched has a durable snapshot covering them: a restarted
 * owner restores the snapshots and replays from the committed offset,
 * skipping records a snapshot already covers (SnapshotMeta.inputOffset).
 */
export class PartitionOffsets {
  readonly #inflight = new Set<bigint>();
  /** Per record taken since the last commit: the output bound when it started (output-replay.ts). */
  readonly #outputBoundAt = new Map<bigint, bigint>();
  #next = -1n; // one past the highest offset seen
  /** Per session: first applied offset not yet covered by a durable snapshot. */
  readonly #unsnapshotted = new Map<string, bigint>();
  /** Per session: last applied offset. */
  readonly lastApplied = new Map<string, bigint>();
  /** Per closed session: offset of its close record, held until its snapshot delete is durable. */
  readonly #closes = new Map<string, bigint>();

  /**
   * True for a record this worker already took during its current ownership of
   * the partition: after a rebalance the consumer re-reads from the committed
   * offset, which lags behind what was applied.
   */
  alreadyTaken(offset: bigint): boolean {
    return offset < this.#next;
  }

  /** The handler failed before the record took effect: it will be delivered again. */
  abandon(offset: bigint): void {
    this.#inflight.delete(offset);
    if (offset < this.#next) this.#next = offset;
  }

  started(offset: bigint, outputBound = 0n): void {
    this.#outputBoundAt.set(offset, outputBound);
    this.#inflight.add(offset);
    if (offset + 1n > this.#next) this.#next = offset + 1n;
  }

  /** The record at `offset` finished; `session` is set when it changed that session. */
  finished(offset: bigint, session?: string): void {
    this.#inflight.delete(offset);
    if (session !== undefined) {
      this.lastApplied.set(session, offset);
      if (!this.#unsnapshotted.has(session)) this.#unsnapshotted.set(session, offset);
    }
  }

  /** A snapshot of `session` covering records up to `offset` is durable. */
  snapshotted(session: string, offset: bigint): void {
    const last = this.lastApplied.get(session);
    if (last === undefined || last <= offset) this.#unsnapshotted.delete(session);
    else this.#unsnapshotted.set(session, offset + 1n);
  }

  /** The session is gone (closed, its snapshot deleted): nothing to cover. */
  forget(session: string): void {
    this.#unsnapshotted.delete(session);
    this.lastApplied.delete(session);
  }

  /**
   * The session was closed by the record at `offset`. Until deleted() the
   * close is not committed past: a new owner that still finds the old
   * snapshot (the delete failed) replays the close and deletes it.
   */
  closed(session: string, offset: bigint): void {
    this.forget(session);
    this.#closes.set(session, offset);
  }

  /** The snapshot of a session closed at `offset` is deleted. */
  deleted(session: string, offset: bigint): void {
    if (this.#closes.get(session) === offset) this.#closes.delete(session);
  }

  /** Closed sessions whose snapshot delete is not durable yet, with their close offsets. */
  pendingCloses(): Array<[string, bigint]> {
    return [...this.#closes];
  }

  /** Every session held needs a new snapshot (the snapshot store lost data). */
  needAllSnapshots(): void {
    for (const [session, offset] of this.lastApplied) {
      const cur = this.#unsnapshotted.get(session);
      if (cur === undefined || offset < cur) this.#unsnapshotted.set(session, offset);
    }
  }

  sessionsNeedingSnapshot(): string[] {
    return [...this.#unsnapshotted.keys()];
  }

  /** The offset to commit (next record to read after a restart), or undefined if nothing was seen. */
  committable(): bigint | undefined {
    if (this.#next < 0n) return undefined;
    let low = this.#next;
    for (const o of this.#inflight) if (o < low) low = o;
    for (const o of this.#unsnapshotted.values()) if (o < low) low = o;
    for (const o of this.#closes.values()) if (o < low) low = o;
    return low;
  }

  /**
   * Output bound of a commit at `offset`: every output record of the records
   * from `offset` on is at or above it. Forgets what lies below `offset`.
   */
  outputBoundAt(offset: bigint, current: bigint): bigint {
    let bound = current;
    for (const [o, b] of this.#outputBoundAt) {
      if (o < offset) this.#outputBoundAt.delete(o);
      else if (b < bound) bound = b;
    }
    return bound;
  }

  get inflight(): number {
    return this.#inflight.size;
  }
}
