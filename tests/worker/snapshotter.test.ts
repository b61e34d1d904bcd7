/**
 * Snapshotter against a real file store: a close that races a flush never
 * leaves the closed session's snapshot behind, and a failed delete never
 * brings a closed session back (it is retried by the next flush).
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Engine } from "../../services/engine/index.js";
import { createLogger } from "../../services/worker/logger.js";
import type { SessionEvent } from "../../services/worker/operations.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { FileSnapshotStore, type SnapshotMeta } from "../../services/worker/snapshot-store.js";
import { Snapshotter } from "../../services/worker/snapshotter.js";
import { modelDir } from "../helpers/fixtures.js";

/** A real file store whose saves can be held at a gate, and whose deletes can be made to fail. */
class GatedStore extends FileSnapshotStore {
  gate: Promise<void> | undefined;
  saveStarted: (() => void) | undefined;
  failDeletes = 0;
  override async save(session: string, bytes: Uint8Array, meta: SnapshotMeta): Promise<void> {
    this.saveStarted?.();
    if (this.gate) await this.gate;
    await super.save(session, bytes, meta);
  }
  override async delete(session: string): Promise<void> {
    if (this.failDeletes > 0) {
      this.failDeletes--;
      throw new Error("store unreachable (injected)");
    }
    await super.delete(session);
  }
}

describe("Snapshotter", () => {
  let engine: Engine;
  const dir = mkdtempSync(join(tmpdir(), "snapshotter-"));
  const config = { policy: "sinks" as const, sinks: 4, window: 28 };
  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu", threads: 1 });
  });
  afterAll(async () => {
    await engine?.close();
    rmSync(dir, { recursive: true, force: true });
  });

  function setup(sub: string): { store: GatedStore; snapshots: Snapshotter; host: SessionHost; run: (op: Parameters<SessionHost["execute"]>[0]) => Promise<SessionEvent[]>; forgotten: Array<Promise<boolean>> } {
    const store = new GatedStore(join(dir, sub));
    const forgotten: Array<Promise<boolean>> = [];
    const snapshots = new Snapshotter(engine, store, createLogger("error"));
    const host = new SessionHost(engine, config, {}, {
      restore: async (id) => {
        const r = await snapshots.restore(id);
        return r && "session" in r ? r.session : undefined;
      },
      changed: (id) => snapshots.markDirty(id),
      closed: (id) => {
        forgotten.push(snapshots.forget(id));
      },
    });
    snapshots.attach(host, 0);
    const run = async (op: Parameters<SessionHost["execute"]>[0]) => {
      const events: SessionEvent[] = [];
      await host.execute(op, (e) => events.push(e));
      return events;
    };
    return { store, snapshots, host, run, forgotten };
  }

  it("a close during a flush's save deletes the snapshot after that save", async () => {
    const { store, snapshots, host, run } = setup("race");
    await run({ kind: "append", session: "s", requestId: "a", input: { tokens: [1, 2, 3, 4, 5] } });
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    const started = new Promise<void>((r) => (store.saveStarted = r));
    const flushed = snapshots.flush();
    await started; // the save of "s" is under way, held at the gate
    await run({ kind: "close", session: "s", requestId: "c" });
    open();
    await flushed;
    await snapshots.flush(); // the delete queued behind the save has run
    expect(await store.load("s")).toBeUndefined();
    // Re-opened, the session starts empty.
    const events = await run({ kind: "append", session: "s", requestId: "b", input: { tokens: [7] } });
    expect(events[0]).toMatchObject({ kind: "appended", tokensSeen: 1 });
    await host.close();
  });

  it("a failed delete is retried by the next flush", async () => {
    const { store, snapshots, host, run, forgotten } = setup("fail");
    await run({ kind: "append", session: "s", requestId: "a", input: { tokens: [1, 2, 3, 4, 5] } });
    await snapshots.flush();
    store.failDeletes = 1;
    await run({ kind: "close", session: "s", requestId: "c" });
    expect(await forgotten[0]).toBe(false); // the close's delete failed (injected)
    expect(snapshots.deletePending("s")).toBe(true);
    expect(await store.load("s")).toBeDefined();
    await snapshots.flush();
    expect(snapshots.deletePending("s")).toBe(false);
    expect(await store.load("s")).toBeUndefined();
    await host.close();
  });

  it("while a delete keeps failing, the old snapshot is never restored", async () => {
    const { store, snapshots, host, run } = setup("stuck");
    await run({ kind: "append", session: "s", requestId: "a", input: { tokens: [1, 2, 3, 4, 5] } });
    await snapshots.flush();
    store.failDeletes = 1000;
    await run({ kind: "close", session: "s", requestId: "c" });
    await snapshots.flush();
    expect(snapshots.deletePending("s")).toBe(true);
    expect(await new FileSnapshotStore(join(dir, "stuck")).load("s")).toBeDefined(); // still on disk
    const events = await run({ kind: "append", session: "s", requestId: "b", input: { tokens: [9, 9] } });
    expect(events[0]).toMatchObject({ kind: "appended", tokensSeen: 2 });
    // The re-created session's own snapshot replaces the old one and ends the pending delete.
    store.failDeletes = 0;
    await snapshots.flush();
    expect(snapshots.deletePending("s")).toBe(false);
    const got = await store.load("s");
    const restored = await engine.importSession(got!.bytes);
    expect((await restored.info()).tokensSeen).toBe(2);
    await restored.close();
    await host.close();
  });
});
