/**
 * Periodic session snapshots for the embedded (no Redis) mode: sessions that
 * changed are exported and saved every `intervalMs`, all of them on shutdown,
 * and an unknown session id is restored from its snapshot on first use. A
 * corrupt or foreign snapshot is logged, counted, deleted, and the session
 * starts empty; the worker keeps serving.
 *
 * A closed session's snapshot is deleted after any save already under way
 * (deletes and flushes share one queue), and until the delete has succeeded
 * the session counts as closed: restore() ignores its old snapshot, so a
 * failed delete never brings a closed session back.
 */
import { type Engine, type Session, type SessionDelta, SnapshotError } from "../engine/index.js";
import { OwnerUnavailableError } from "./errors.js";
import type { Logger } from "./logger.js";
import type { SessionHost } from "./session-host.js";
import { CorruptSnapshotError, type SnapshotMeta, type SnapshotStore } from "./snapshot-store.js";

/** Told how long snapshots take (metrics). */
export interface SnapshotObserver {
  snapshotSaved(bytes: number, seconds: number): void;
  snapshotRestored(seconds: number): void;
}

export interface SnapshotStats {
  saved: number;
  savedBytes: number;
  failed: number;
  restored: number;
  rejected: number;
}

export class Snapshotter {
  readonly stats: SnapshotStats = { saved: 0, savedBytes: 0, failed: 0, restored: 0, rejected: 0 };
  readonly #engine: Engine;
  readonly #store: SnapshotStore;
  readonly #log: Logger;
  readonly #dirty = new Set<string>();
  readonly #observer: SnapshotObserver | undefined;
  #host: SessionHost | undefined;
  #metaFor: (session: string) => SnapshotMeta = () => ({});
  #timer: NodeJS.Timeout | undefined;
  #flushing: Promise<void> = Promise.resolve();
  /** Closed sessions whose snapshot delete has not succeeded yet, with the fence to delete under. */
  readonly #deleting = new Map<string, SnapshotMeta>();

  constructor(engine: Engine, store: SnapshotStore, log: Logger, observer?: SnapshotObserver) {
    this.#observer = observer;
    this.#engine = engine;
    this.#store = store;
    this.#log = log;
  }

  /** `metaFor` says what each session's snapshot covers (input offsets). */
  attach(host: SessionHost, intervalMs: number, metaFor?: (session: string) => SnapshotMeta): void {
    this.#host = host;
    if (metaFor) this.#metaFor = metaFor;
    if (intervalMs > 0) {
      this.#timer = setInterval(() => void this.flush(), intervalMs);
      this.#timer.unref();
    }
  }

  markDirty(session: string): void {
    this.#dirty.add(session);
  }

  /**
   * The session was closed: deletes its snapshot once saves already queued
   * are done. Resolves true when the delete is durable; on false it stays
   * pending (restore() ignores the old snapshot) and is retried by the next
   * flush or forget.
   */
  forget(session: string, fence: SnapshotMeta = {}): Promise<boolean> {
    this.closed(session, fence);
    return this.completeDelete(session);
  }

  /** Marks the session closed (its snapshot to be deleted under `fence`) without deleting yet. */
  closed(session: string, fence: SnapshotMeta = {}): void {
    this.#dirty.delete(session);
    this.#deleting.set(session, fence);
    this.#store.forgetWriter?.(session);
  }

  /** The session moved to another worker: the store forgets what it last wrote of it. */
  released(session: string): void {
    this.#store.forgetWriter?.(session);
  }

  /** Deletes a closed session's snapshot (queued behind saves under way); true once durable or superseded. */
  completeDelete(session: string, fence?: SnapshotMeta): Promise<boolean> {
    // Updated in place: a save that began after the close recognises the entry (#savedOver).
    const entry = this.#deleting.get(session);
    if (fence && entry) Object.assign(entry, fence);
    const done = this.#flushing.then(() => this.#deleteNow(session));
    this.#flushing = done.then(() => undefined);
    return done;
  }

  /** True while a closed session's snapshot delete is still pending. */
  deletePending(session: string): boolean {
    return this.#deleting.has(session);
  }

  /** Drops a pending delete without doing it (the partition moved: its new owner replays the close). */
  abandonDelete(session: string): void {
    this.#deleting.delete(session);
  }

  async #deleteNow(session: string): Promise<boolean> {
    const fence = this.#deleting.get(session);
    if (!fence) return true; // a save of a re-created session replaced it
    try {
      await this.#store.delete(session, fence);
      if (this.#deleting.get(session) === fence) this.#deleting.delete(session);
      return true;
    } catch (err) {
      this.#log.warn("snapshot delete failed; will retry", { session, error: String(err) });
      return false;
    }
  }

  /**
   * The session's snapshot, or undefined when it has none (or had a corrupt
   * one, which is logged, counted and deleted), or `closed` with the offset
   * of its close record (a tombstone). Throws OwnerUnavailableError
   * while the store cannot be read.
   */
  async restore(session: string): Promise<{ session: Session; meta: SnapshotMeta } | { rejected: string } | { closed: SnapshotMeta } | undefined> {
    // Closed, but its snapshot is not deleted yet: that snapshot is history.
    if (this.#deleting.has(session)) return undefined;
    const t0 = performance.now();
    let loaded: Awaited<ReturnType<SnapshotStore["load"]>>;
    try {
      loaded = await this.#store.load(session);
    } catch (err) {
      if (err instanceof CorruptSnapshotError) {
        this.stats.rejected++;
        this.#log.error("snapshot rejected; starting the session empty", { session, code: err.code, reason: err.message });
        await this.#store.delete(session).catch(() => undefined);
        return { rejected: err.message };
      }
      // The store is unreachable: the session must not start empty (that
      // would lose its history); the caller retries.
      this.#log.warn("snapshot store unavailable; session restore will be retried", { session, error: String(err) });
      throw new OwnerUnavailableError(`snapshot store unavailable: ${(err as Error).message}`);
    }
    if (!loaded) return undefined;
    // Closed while the load was in flight.
    if (this.#deleting.has(session)) return undefined;
    if ("closed" in loaded) return loaded;
    try {
      const restored = await this.#engine.importSession(loaded.bytes);
      this.stats.restored++;
      this.#observer?.snapshotRestored((performance.now() - t0) / 1000);
      this.#log.info("session restored from snapshot", { session, bytes: loaded.bytes.length, ...loaded.meta });
      return { session: restored, meta: loaded.meta };
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      this.stats.rejected++;
      this.#log.error("snapshot rejected; starting the session empty", { session, code: err.code, reason: err.message });
      await this.#store.delete(session).catch(() => undefined);
      return { rejected: err.message };
    }
  }

  /** Whether the store answers now (a read of the session's snapshot; a corrupt one counts as an answer). */
  async reachable(session: string): Promise<boolean> {
    try {
      await this.#store.load(session);
      return true;
    } catch (err) {
      return err instanceof CorruptSnapshotError;
    }
  }

  /** Saves every session marked dirty (or all, with `all`; or just `only`). */
  flush(all = false, only?: ReadonlySet<string>): Promise<void> {
    this.#flushing = this.#flushing.then(() => this.#flushNow(all, only));
    return this.#flushing;
  }

  async #flushNow(all: boolean, only?: ReadonlySet<string>): Promise<void> {
    const host = this.#host;
    if (!host) return;
    for (const id of [...this.#deleting.keys()]) if (!host.engineSession(id)) await this.#deleteNow(id);
    let ids = all ? host.sessionIds() : [...this.#dirty];
    if (only) ids = ids.filter((id) => only.has(id));
    for (const id of ids) this.#dirty.delete(id);
    for (const id of ids) {
      const session = host.engineSession(id);
      if (!session || session.closed) continue;
      try {
        const t0 = performance.now();
        const meta = this.#metaFor(id);
        const closedBefore = this.#deleting.get(id);
        const base = this.#store.saveDelta ? this.#store.incrementalBase?.(id) : undefined;
        let written: number;
        if (base !== undefined) written = await this.#store.saveDelta!(id, await session.exportSince(base), meta);
        else {
          const bytes = await session.export();
          written = (await this.#store.save(id, bytes, meta)) ?? bytes.length;
        }
        this.#savedOver(id, closedBefore);
        this.stats.saved++;
        this.stats.savedBytes += written;
        this.#observer?.snapshotSaved(written, (performance.now() - t0) / 1000);
      } catch (err) {
        this.stats.failed++;
        this.#dirty.add(id);
        this.#log.warn("snapshot failed; will retry", { session: id, error: String(err) });
      }
    }
  }

  /**
   * Exports one session at its next op boundary (now when it is idle) and
   * saves it, after every store write queued before. `metaNow` is read at
   * that boundary, together with the export, so the meta describes exactly
   * the state exported; undefined from it skips the save. `done` resolves to
   * the meta saved once the snapshot is durable; `now` says whether the
   * boundary was immediate. `before`, called at the boundary too, gives what
   * must be durable before the snapshot is written (the outputs of the ops
   * it covers: a new owner skips those ops).
   */
  saveAtBoundary(
    id: string,
    metaNow: () => SnapshotMeta | undefined,
    before?: () => Promise<unknown>,
  ): { now: boolean; done: Promise<SnapshotMeta | undefined> } {
    const host = this.#host;
    if (!host) return { now: true, done: Promise.resolve(undefined) };
    let resolve!: (m: Promise<SnapshotMeta | undefined> | undefined) => void;
    const done = new Promise<SnapshotMeta | undefined>((r) => (resolve = r));
    const now = host.atBoundary(id, () => {
      const session = host.engineSession(id);
      const meta = session && !session.closed ? metaNow() : undefined;
      if (!session || !meta) return resolve(undefined);
      const t0 = performance.now();
      const closedBefore = this.#deleting.get(id);
      // An incremental store gets only what changed since its last write.
      const base = this.#store.saveDelta ? this.#store.incrementalBase?.(id) : undefined;
      const exported: Promise<{ delta: SessionDelta } | { bytes: Buffer }> =
        base === undefined ? session.export().then((bytes) => ({ bytes })) : session.exportSince(base).then((delta) => ({ delta }));
      exported.catch(() => undefined);
      const prerequisite = before?.();
      prerequisite?.catch(() => undefined);
      const write = this.#flushing
        .then(async () => {
          await prerequisite;
          const e = await exported;
          const written = "delta" in e ? await this.#store.saveDelta!(id, e.delta, meta) : ((await this.#store.save(id, e.bytes, meta)) ?? e.bytes.length);
          this.#savedOver(id, closedBefore);
          this.stats.saved++;
          this.stats.savedBytes += written;
          this.#observer?.snapshotSaved(written, (performance.now() - t0) / 1000);
          return meta;
        })
        .catch((err: unknown) => {
          this.stats.failed++;
          this.#log.warn("snapshot failed; will retry", { session: id, error: String(err) });
          return undefined;
        });
      this.#flushing = write.then(() => undefined);
      resolve(write);
    });
    return { now, done };
  }

  /**
   * A save replaced the snapshot of a session closed before the save began (a
   * re-created session): that pending delete is moot. A close during the save
   * stays pending, and its delete follows.
   */
  #savedOver(id: string, closedBefore: SnapshotMeta | undefined): void {
    if (closedBefore !== undefined && this.#deleting.get(id) === closedBefore) this.#deleting.delete(id);
  }

  /** Stops the timer; with `flushAll`, saves every session first (embedded mode). */
  async stop(flushAll: boolean): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    if (flushAll) await this.flush(true);
  }
}
