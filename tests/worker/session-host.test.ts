/**
 * SessionHost: per-session FIFO order, continuous batching that gives the same
 * numbers as running each session alone, fairness between a long prefill and
 * short requests, bounded queues, generation stop and cancel.
 */
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { argmax, Engine } from "../../services/engine/index.js";
import { InvalidRequestError, LimitExceededError } from "../../services/worker/errors.js";
import type { SessionEvent } from "../../services/worker/operations.js";
import { SessionHost } from "../../services/worker/session-host.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;
const CONFIG = { policy: "sinks" as const, sinks: 4, window: 28 };

describe("SessionHost", () => {
  let engine: Engine;
  let host: SessionHost;
  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
    host = new SessionHost(engine, CONFIG, { maxQueuePerSession: 8, prefillChunk: 16, maxBatchTokens: 64, maxNewTokens: 100 });
  });
  afterAll(async () => {
    await host.close();
    await engine.close();
  });

  async function reference(tokens: number[], generate: number): Promise<{ logprobs: number[]; generated: number[] }> {
    const s = await engine.openSession({ ...CONFIG, sinkToken: "none" });
    const logprobs = Array.from((await s.append(tokens, { logprobs: true })).logprobs!);
    const generated: number[] = [];
    for (let i = 0; i < generate; i++) {
      const t = argmax(s.nextLogprobs!);
      generated.push(t);
      await s.append([t]);
    }
    await s.close();
    return { logprobs, generated };
  }

  it("batches many sessions and gives each exactly its solo results", async () => {
    const n = 12;
    const runs = Array.from({ length: n }, async (_, k) => {
      const events: SessionEvent[] = [];
      const tokens = ids.slice(k, k + 40 + 3 * k);
      await host.execute({ kind: "append", session: `batch-${k}`, requestId: `a${k}`, input: { tokens }, logprobs: true }, (e) => events.push(e));
      await host.execute({ kind: "generate", session: `batch-${k}`, requestId: `g${k}`, maxNewTokens: 10 }, (e) => events.push(e));
      return { tokens, events };
    });
    const results = await Promise.all(runs);
    expect(host.stats.steps).toBeGreaterThan(0);
    // Continuous batching happened: steps carried several sessions on average.
    expect(host.stats.stepTokens / host.stats.steps).toBeGreaterThan(1);
    for (const { tokens, events } of results) {
      const ref = await reference(tokens, 10);
      const appended = events.find((e) => e.kind === "appended")!;
      expect(appended.kind === "appended" && appended.logprobs).toEqual(ref.logprobs);
      const generated = events.filter((e) => e.kind === "token").map((e) => (e.kind === "token" ? e.token : -1));
      expect(generated).toEqual(ref.generated);
      const fin = events.at(-1)!;
      expect(fin).toMatchObject({ kind: "finished", reason: "length", generatedTokens: 10 });
    }
  });

  it("keeps per-session order and serves short requests while a long prefill runs", async () => {
    const order: string[] = [];
    const long = host.execute({ kind: "append", session: "long", requestId: "L", input: { tokens: [...ids, ...ids, ...ids, ...ids] } }, () =>
      order.push("long"),
    );
    const shorts = [0, 1, 2].map((k) =>
      host.execute({ kind: "append", session: `short-${k}`, requestId: `S${k}`, input: { tokens: ids.slice(0, 4) } }, () => order.push(`short-${k}`)),
    );
    const sameSession = [0, 1, 2, 3].map((k) =>
      host.execute({ kind: "append", session: "fifo", requestId: `F${k}`, input: { tokens: ids.slice(k * 5, k * 5 + 5) } }, () => order.push(`fifo-${k}`)),
    );
    await Promise.all([long, ...shorts, ...sameSession]);
    expect(order.indexOf("long")).toBeGreaterThan(order.indexOf("short-2"));
    expect(order.filter((o) => o.startsWith("fifo"))).toEqual(["fifo-0", "fifo-1", "fifo-2", "fifo-3"]);
    expect((await host.info("fifo"))!.tokensSeen).toBe(20);
  });

  it("advances a generation every step however much prefill is queued, and serves prefill oldest first", async () => {
    // Budget 64, chunks 16: eight long appends could fill every step; the
    // generation still gets a token each step, and prefill is served oldest
    // op first, so the appends finish in the order they arrived.
    await host.execute({ kind: "append", session: "fair-gen", requestId: "p", input: { tokens: ids.slice(0, 8) } }, () => {});
    const tokensAtStep: number[] = [];
    const stepsBefore = host.stats.steps;
    const finished: string[] = [];
    const appends = Array.from({ length: 8 }, (_, k) =>
      host.execute({ kind: "append", session: `heavy-${k}`, requestId: `H${k}`, input: { tokens: [...ids, ...ids] } }, () => {}).then(() => {
        finished.push(`heavy-${k}`);
      }),
    );
    const gen = host.execute({ kind: "generate", session: "fair-gen", requestId: "g", maxNewTokens: 20 }, (e) => {
      if (e.kind === "token") tokensAtStep.push(host.stats.steps - stepsBefore);
    });
    await Promise.all([...appends, gen]);
    expect(tokensAtStep).toHaveLength(20);
    // One token per step: token i is emitted while step i+1 is being built.
    for (let i = 1; i < tokensAtStep.length; i++) expect(tokensAtStep[i]! - tokensAtStep[i - 1]!).toBe(1);
    // 8 x 320 prefill tokens at <= 48 per step (a quarter kept for decode is the floor, not a cap) took many steps;
    // the generation (20 steps) ended long before the last append.
    expect(host.stats.steps - stepsBefore).toBeGreaterThan(40);
    expect(finished).toEqual(Array.from({ length: 8 }, (_, k) => `heavy-${k}`));
  });

  it("infoAll gives every session's info in one call, the same as info()", async () => {
    const all = await host.infoAll();
    expect(all.length).toBe(host.sessionIds().length);
    expect(all.length).toBeGreaterThan(5);
    for (const i of all) expect(await host.info(i.session)).toEqual(i);
    expect(all.find((i) => i.session === "fifo")).toMatchObject({ tokensSeen: 20, policy: "sinks", sinks: 4, window: 28 });
  });

  it("bounds each session's queue", async () => {
    const pending = Array.from({ length: 8 }, (_, k) =>
      host.execute({ kind: "append", session: "full", requestId: `q${k}`, input: { tokens: ids.slice(0, 30) } }, () => undefined),
    );
    await expect(host.execute({ kind: "append", session: "full", requestId: "q9", input: { tokens: [1] } }, () => undefined)).rejects.toBeInstanceOf(
      LimitExceededError,
    );
    await Promise.all(pending);
  });

  it("rejects bad input before queueing anything", async () => {
    const bad = [
      { kind: "append" as const, session: "bad", requestId: "b1", input: { tokens: [] } },
      { kind: "append" as const, session: "bad", requestId: "b2", input: { tokens: [384] } },
      { kind: "append" as const, session: "bad", requestId: "b3", input: { text: "x", tokens: [1] } },
      { kind: "append" as const, session: "", requestId: "b4", input: { tokens: [1] } },
    ];
    for (const op of bad) await expect(host.execute(op, () => undefined)).rejects.toBeInstanceOf(InvalidRequestError);
    await expect(host.execute({ kind: "generate", session: "bad", requestId: "b5", maxNewTokens: 101 }, () => undefined)).rejects.toBeInstanceOf(
      LimitExceededError,
    );
    await expect(
      host.execute({ kind: "generate", session: "bad", requestId: "b6", maxNewTokens: 1, sampling: { temperature: -1 } }, () => undefined),
    ).rejects.toBeInstanceOf(InvalidRequestError);
    expect(host.has("bad")).toBe(false);
  });

  it("stops at a stop sequence and on cancel", async () => {
    const events: SessionEvent[] = [];
    await host.execute({ kind: "append", session: "gen", requestId: "p", input: { text: "def main():\n    return" } }, () => undefined);
    await host.execute({ kind: "generate", session: "gen", requestId: "g1", maxNewTokens: 40 }, (e) => events.push(e));
    const full = events.at(-1)!;
    expect(full.kind).toBe("finished");
    const text = full.kind === "finished" ? full.text : "";
    const stop = text.slice(3, 5);
    expect(stop.length).toBe(2);

    await host.execute({ kind: "close", session: "gen", requestId: "c" }, () => undefined);
    await host.execute({ kind: "append", session: "gen", requestId: "p2", input: { text: "def main():\n    return" } }, () => undefined);
    const stopped: SessionEvent[] = [];
    await host.execute({ kind: "generate", session: "gen", requestId: "g2", maxNewTokens: 40, stop: [stop] }, (e) => stopped.push(e));
    expect(stopped.at(-1)).toMatchObject({ kind: "finished", reason: "stop", text: text.slice(0, text.indexOf(stop)) });

    const ac = new AbortController();
    const cancelled: SessionEvent[] = [];
    await host.execute({ kind: "generate", session: "gen", requestId: "g3", maxNewTokens: 100 }, (e) => {
      cancelled.push(e);
      if (e.kind === "token" && e.index === 2) ac.abort();
    }, ac.signal);
    expect(cancelled.at(-1)).toMatchObject({ kind: "finished", reason: "cancelled", generatedTokens: 3 });
  });

  it("closes sessions; a later op starts a fresh one", async () => {
    await host.execute({ kind: "append", session: "c1", requestId: "x", input: { tokens: ids.slice(0, 10) } }, () => undefined);
    const events: SessionEvent[] = [];
    await host.execute({ kind: "close", session: "c1", requestId: "y" }, (e) => events.push(e));
    await host.execute({ kind: "close", session: "c1", requestId: "z" }, (e) => events.push(e));
    expect(events).toMatchObject([{ kind: "closed", existed: true }, { kind: "closed", existed: false }]);
    expect(host.has("c1")).toBe(false);
    await host.execute({ kind: "append", session: "c1", requestId: "w", input: { tokens: ids.slice(0, 3) } }, () => undefined);
    expect((await host.info("c1"))!.tokensSeen).toBe(3);
  });

  it("atBoundary exports a busy session exactly between two of its ops", async () => {
    await host.execute({ kind: "append", session: "boundary", requestId: "b0", input: { tokens: ids.slice(0, 10) } }, () => undefined);
    const first = host.execute({ kind: "append", session: "boundary", requestId: "b1", input: { tokens: ids.slice(10, 40) } }, () => undefined);
    const second = host.execute({ kind: "append", session: "boundary", requestId: "b2", input: { tokens: ids.slice(40, 90) } }, () => undefined);
    // Both are queued within microtasks; an engine step completes only on a later turn of the event loop.
    for (let i = 0; i < 100 && host.queuedOps < 2; i++) await Promise.resolve();
    expect(host.queuedOps).toBe(2);
    let exported: Promise<Buffer> | undefined;
    // Not idle (two ops queued): the callback waits for the first op's end.
    const now = host.atBoundary("boundary", () => (exported = host.engineSession("boundary")!.export()));
    expect(now).toBe(false);
    expect(exported).toBeUndefined();
    await Promise.all([first, second]);
    const restored = await engine.importSession(await exported!);
    expect((await restored.info()).tokensSeen).toBe(40);
    await restored.close();
    expect((await host.info("boundary"))!.tokensSeen).toBe(90);
    // Idle: at once.
    expect(host.atBoundary("boundary", () => undefined)).toBe(true);
  });
});
