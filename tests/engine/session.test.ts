/**
 * Engine/Session API on the CPU backend with real checkpoints: batch and
 * chunk invariance (bitwise), export/import, learned sink token, generation,
 * error handling that leaves state intact, and the event loop staying free
 * during a long forward pass.
 */
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  argmax,
  BackendUnavailableError,
  CapacityError,
  Engine,
  InvalidArgumentError,
  SessionNotFoundError,
  SnapshotError,
  type SessionOptions,
} from "../../services/engine/index.js";
import { loadGolden, modelDir } from "../helpers/fixtures.js";

const ids = loadGolden("llama-gqa").cases[0]!.ids;

async function stream(engine: Engine, options: SessionOptions, tokens: number[], chunk: number): Promise<number[]> {
  const s = await engine.openSession({ sinkToken: "none", ...options });
  const out: number[] = [];
  for (let i = 0; i < tokens.length; i += chunk) out.push(...(await s.append(tokens.slice(i, i + chunk), { logprobs: true })).logprobs!);
  await s.close();
  return out;
}

describe("engine sessions (llama-gqa)", () => {
  let engine: Engine;
  beforeAll(async () => {
    engine = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
  });
  afterAll(async () => engine.close());

  it("reports the model and counts sessions", async () => {
    expect(engine.info).toMatchObject({ architecture: "LlamaForCausalLM", vocabSize: 384, heads: 4, kvHeads: 2, backend: "cpu" });
    expect(engine.info.modelHash).toMatch(/^[0-9a-f]{16}$/);
    const s = await engine.openSession();
    expect(engine.sessionCount).toBe(1);
    await s.close();
    expect(engine.sessionCount).toBe(0);
  });

  it("is chunk-invariant bitwise: any split of the stream gives identical log-probs", async () => {
    const opts: SessionOptions = { policy: "sinks", sinks: 4, window: 28 };
    const one = await stream(engine, opts, ids, 1);
    const seven = await stream(engine, opts, ids, 7);
    const whole = await stream(engine, opts, ids, ids.length);
    expect(seven).toEqual(one);
    expect(whole).toEqual(one);
  });

  it("is batch-invariant bitwise: a session's numbers do not depend on who shares its step", async () => {
    const policies: SessionOptions[] = [
      { policy: "sinks", sinks: 4, window: 28 },
      { policy: "window", window: 20 },
      { policy: "dense" },
      { policy: "recompute", window: 16 },
    ];
    const alone = await Promise.all(policies.map((p) => stream(engine, p, ids.slice(0, 96), 8)));
    const sessions = await Promise.all(policies.map((p) => engine.openSession({ sinkToken: "none", ...p })));
    const together: number[][] = policies.map(() => []);
    for (let i = 0; i < 96; i += 8) {
      // A varying set of extra sessions shares the step.
      const extra = await engine.openSession({ policy: "sinks", sinks: 2, window: (i % 5) + 3, sinkToken: "none" });
      const results = await engine.step([
        ...sessions.map((s) => ({ session: s, tokens: ids.slice(i, i + 8), logprobs: true })),
        { session: extra, tokens: ids.slice(0, 1 + (i % 13)) },
      ]);
      results.slice(0, sessions.length).forEach((r, k) => together[k]!.push(...r.tokenLogprobs!));
      await extra.close();
    }
    expect(together).toEqual(alone);
    for (const s of sessions) await s.close();
  });

  it("keeps the cache at S+W however long the stream", async () => {
    const s = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await s.append(ids);
    await s.append(ids);
    const info = await s.info();
    expect(info).toMatchObject({ policy: "sinks", sinks: 4, window: 28, cacheFill: 32, capacity: 32, tokensSeen: 320 });
    await s.close();
  });

  it("exports and imports a session: the resumed stream equals the uninterrupted one", async () => {
    for (const options of [
      { policy: "sinks", sinks: 4, window: 28 },
      { policy: "dense" },
      { policy: "recompute", window: 24 },
    ] as SessionOptions[]) {
      const reference = await stream(engine, options, ids, 16);
      const a = await engine.openSession({ sinkToken: "none", ...options });
      const first = (await a.append(ids.slice(0, 100), { logprobs: true })).logprobs!;
      const bytes = await a.export();
      await a.close();
      const other = await Engine.load(modelDir("llama-gqa"), { backend: "cpu" });
      const b = await other.importSession(bytes);
      expect((await b.info()).tokensSeen).toBe(100);
      expect(b.nextLogprobs).toHaveLength(384);
      const rest = (await b.append(ids.slice(100), { logprobs: true })).logprobs!;
      expect([...first, ...rest]).toEqual(reference);
      await other.close();
    }
  });

  it("detects corrupt, truncated and foreign snapshots and keeps serving", async () => {
    const s = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await s.append(ids.slice(0, 50));
    const good = await s.export();
    for (const offset of [0, 10, 30, 120, Math.floor(good.length / 2), good.length - 20, good.length - 3]) {
      const bad = Buffer.from(good);
      bad[offset] = bad[offset]! ^ 0x5a;
      const err = await engine.importSession(bad).catch((e: unknown) => e);
      expect(err, `flipped byte ${offset}`).toBeInstanceOf(SnapshotError);
    }
    for (const cut of [0, 7, 40, good.length - 1]) {
      const err = await engine.importSession(good.subarray(0, cut)).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SnapshotError);
      expect((err as SnapshotError).code).toBe("E_SNAPSHOT_CORRUPT");
    }
    const mpt = await Engine.load(modelDir("mpt"), { backend: "cpu" });
    const foreign = await mpt.importSession(good).catch((e: unknown) => e);
    expect(foreign).toBeInstanceOf(SnapshotError);
    expect((foreign as SnapshotError).code).toBe("E_SNAPSHOT_MISMATCH");
    await mpt.close();
    const restored = await engine.importSession(good);
    expect((await restored.info()).tokensSeen).toBe(50);
    await restored.close();
    await s.close();
  });

  it("rejects a bad step without changing the session", async () => {
    const s = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await s.append(ids.slice(0, 10));
    await expect(s.append([1, 2, 384])).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s.append([-1])).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(s.append([1.5])).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(engine.step([{ session: s, tokens: [1] }, { session: s, tokens: [2] }])).rejects.toBeInstanceOf(InvalidArgumentError);
    const rest = (await s.append(ids.slice(10, 60), { logprobs: true })).logprobs!;
    const reference = await stream(engine, { policy: "sinks", sinks: 4, window: 28 }, ids.slice(0, 60), 60);
    expect(Array.from(rest)).toEqual(reference.slice(10));
    expect((await s.info()).tokensSeen).toBe(60);
    await s.close();
  });

  it("validates session options and limits", async () => {
    await expect(engine.openSession({ policy: "bogus" as never })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(engine.openSession({ policy: "window", window: 0 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(engine.openSession({ policy: "sinks", sinks: -1, window: 8 })).rejects.toBeInstanceOf(InvalidArgumentError);
    await expect(engine.openSession({ sinkToken: 999 })).rejects.toBeInstanceOf(InvalidArgumentError);
    const dense = await engine.openSession({ policy: "dense", maxDenseTokens: 20, sinkToken: "none" });
    await dense.append(ids.slice(0, 20));
    await expect(dense.append([1])).rejects.toBeInstanceOf(CapacityError);
    await dense.close();
    await expect(Engine.load(modelDir("llama-gqa"), { backend: "cuda" })).rejects.toBeInstanceOf(BackendUnavailableError);
  });

  it("closing is idempotent and a closed session is not found", async () => {
    const s = await engine.openSession();
    await s.close();
    await s.close();
    await expect(s.append([1])).rejects.toBeInstanceOf(SessionNotFoundError);
    await expect(s.info()).rejects.toBeInstanceOf(SessionNotFoundError);
  });

  it("runs concurrent calls in order without interference", async () => {
    const opts: SessionOptions = { policy: "sinks", sinks: 4, window: 28 };
    const sessions = await Promise.all([0, 1, 2].map(() => engine.openSession({ sinkToken: "none", ...opts })));
    const pending = sessions.map((s) => Promise.all([0, 40, 80, 120].map((i) => s.append(ids.slice(i, i + 40), { logprobs: true }))));
    const results = await Promise.all(pending);
    const reference = await stream(engine, opts, ids, 40);
    for (const r of results) expect(r.flatMap((x) => Array.from(x.logprobs!))).toEqual(reference);
    for (const s of sessions) await s.close();
  });

  it("generates greedily (argmax) and reproducibly from a seed", async () => {
    const greedy = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await greedy.append(ids.slice(0, 12));
    const expected: number[] = [];
    const shadow = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await shadow.append(ids.slice(0, 12));
    for (let i = 0; i < 40; i++) {
      const t = argmax(shadow.nextLogprobs!);
      expected.push(t);
      await shadow.append([t]);
    }
    const seen: number[] = [];
    const out = await greedy.generate({ maxNewTokens: 40, onToken: (t) => seen.push(t) });
    expect(out).toEqual({ tokens: expected, finishReason: "length" });
    expect(seen).toEqual(expected);

    const sample = async (seed: number) => {
      const s = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
      await s.append(ids.slice(0, 12));
      const r = await s.generate({ maxNewTokens: 30, temperature: 1.0, topP: 0.9, seed });
      await s.close();
      return r.tokens;
    };
    expect(await sample(7)).toEqual(await sample(7));
    expect(await sample(7)).not.toEqual(await sample(8));

    const stopAt = expected[5]!;
    const stopper = await engine.openSession({ policy: "sinks", sinks: 4, window: 28, sinkToken: "none" });
    await stopper.append(ids.slice(0, 12));
    const stopped = await stopper.generate({ maxNewTokens: 40, stopTokens: [stopAt] });
    expect(stopped.finishReason).toBe("stop");
    expect(stopped.tokens.at(-1)).toBe(stopAt);
    for (const s of [greedy, shadow, stopper]) await s.close();
  });

  it("returns only the next token when asked, and the distribution on demand", async () => {
    const opts: SessionOptions = { policy: "sinks", sinks: 4, window: 28, sinkToken: "none" };
    const full = await engine.openSession(opts);
    const lean = await engine.openSession(opts);
    expect(lean.nextToken).toBeUndefined();
    // An empty session has no next token: nothing comes back about it.
    const [empty] = await engine.step([{ session: lean, tokens: [], next: "token" }]);
    expect(empty).toEqual({});
    for (let i = 0; i < 24; i += 6) {
      const chunk = ids.slice(i, i + 6);
      const [a, b] = await engine.step([
        { session: full, tokens: chunk },
        { session: lean, tokens: chunk, next: "token" },
      ]);
      expect(b!.nextLogprobs).toBeUndefined();
      expect(lean.nextLogprobs).toBeUndefined();
      expect(a!.nextToken).toEqual({ token: argmax(a!.nextLogprobs!), logprob: a!.nextLogprobs![argmax(a!.nextLogprobs!)] });
      expect(b!.nextToken).toEqual(a!.nextToken);
      expect(lean.nextToken).toEqual(a!.nextToken);
    }
    // Fetched on demand: the same distribution, and the session is unchanged by the fetch.
    const before = await lean.info();
    expect(await lean.nextDistribution()).toEqual(full.nextLogprobs);
    expect(lean.nextLogprobs).toEqual(full.nextLogprobs);
    expect(await lean.info()).toEqual(before);
    // Token-only steps still export the whole state: an import samples from the same distribution.
    await lean.append([ids[30]!], { logprobs: true });
    await full.append([ids[30]!], { logprobs: true });
    const [step] = await engine.step([{ session: lean, tokens: [ids[31]!], logprobs: true, next: "token" }]);
    const [ref] = await engine.step([{ session: full, tokens: [ids[31]!], logprobs: true }]);
    expect(step!.tokenLogprobs).toEqual(ref!.tokenLogprobs);
    const copy = await engine.importSession(await lean.export());
    expect(copy.nextLogprobs).toEqual(full.nextLogprobs);
    expect(copy.nextToken).toEqual(full.nextToken);
    await expect(engine.step([{ session: lean, tokens: [1], next: "all" as "token" }])).rejects.toBeInstanceOf(InvalidArgumentError);
    // A sampling generation after token-only steps fetches the distribution first.
    const sampled = async (s: typeof lean) => (await s.generate({ maxNewTokens: 6, temperature: 1, seed: 3 })).tokens;
    await lean.append([ids[32]!], { logprobs: false });
    await engine.step([{ session: lean, tokens: [ids[33]!], next: "token" }]);
    await full.append([ids[32]!, ids[33]!]);
    expect(await sampled(lean)).toEqual(await sampled(full));
    for (const s of [full, lean, copy]) await s.close();
  });

  it("stops generating when cancelled", async () => {
    const s = await engine.openSession({ sinkToken: "none" });
    await s.append(ids.slice(0, 4));
    const ac = new AbortController();
    const r = await s.generate({ maxNewTokens: 1000, signal: ac.signal, onToken: (t) => (t >= 0 && s && ac.abort()) });
    expect(r.finishReason).toBe("cancelled");
    expect(r.tokens).toHaveLength(1);
    await s.close();
  });

  it("keeps the event loop ticking during a long forward pass", async () => {
    const s = await engine.openSession({ policy: "recompute", window: 160, sinkToken: "none" });
    let ticks = 0;
    const timer = setInterval(() => ticks++, 1);
    let immediateRan = false;
    const work = s.append([...ids, ...ids, ...ids], { logprobs: true });
    setImmediate(() => (immediateRan = true));
    let settled = false;
    void work.finally(() => (settled = true));
    await new Promise((r) => setImmediate(r));
    expect(settled).toBe(false);
    expect(immediateRan).toBe(true);
    await work;
    clearInterval(timer);
    expect(ticks).toBeGreaterThan(0);
    await s.close();
  });
});

describe("learned sink token", () => {
  const dir = mkdtempSync(join(tmpdir(), "streamsink-sinktoken-"));
  let engine: Engine;
  beforeAll(async () => {
    cpSync(modelDir("pythia"), dir, { recursive: true });
    const config = JSON.parse(readFileSync(join(dir, "config.json"), "utf8")) as Record<string, unknown>;
    config.streamsink = { sink_token_id: 0 };
    writeFileSync(join(dir, "config.json"), JSON.stringify(config));
    engine = await Engine.load(dir, { backend: "cpu" });
  });
  afterAll(async () => {
    await engine.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it("prepends the model's sink token (config streamsink.sink_token_id) and defaults to one sink", async () => {
    expect(engine.info.sinkTokenId).toBe(0);

    const withSink = await engine.openSession({ policy: "sinks", window: 20 });
    expect((await withSink.info()).sinks).toBe(1);
    const got = (await withSink.append(ids.slice(0, 80), { logprobs: true })).logprobs!;
    expect(Number.isNaN(got[0])).toBe(false);

    const manual = await engine.openSession({ policy: "sinks", sinks: 1, window: 20, sinkToken: "none" });
    const reference = (await manual.append([0, ...ids.slice(0, 80)], { logprobs: true })).logprobs!;
    expect(Array.from(got)).toEqual(Array.from(reference).slice(1));

    const without = await engine.openSession({ policy: "sinks", sinks: 1, window: 20, sinkToken: "none" });
    const plain = (await without.append(ids.slice(0, 80), { logprobs: true })).logprobs!;
    expect(Array.from(plain).slice(1)).not.toEqual(Array.from(got).slice(1));
  });

  it("keeps the sink token at the head of every recomputed window (recompute W = sink + W-1 tokens)", async () => {
    const W = 12;
    const rec = await engine.openSession({ policy: "recompute", window: W });
    const chunks = [ids.slice(0, 7), ids.slice(7, 40), ids.slice(40, 60)];
    const got: number[] = [];
    for (const c of chunks) got.push(...(await rec.append(c, { logprobs: true })).logprobs!);
    // got[j] = log P(ids[j] | sink token, ids[j-W+1 .. j-1]): a dense session
    // with the sink token over exactly those tokens predicts the same.
    for (const j of [3, W - 1, W, W + 1, 30, 59]) {
      const ref = await engine.openSession({ policy: "dense" });
      const lp = (await ref.append(ids.slice(Math.max(0, j - W + 1), j + 1), { logprobs: true })).logprobs!;
      await ref.close();
      expect(Math.abs(got[j]! - lp[lp.length - 1]!), `token ${j}`).toBeLessThan(1e-5);
    }
    // Without the sink token the windows are the plain last W tokens.
    const plain = await engine.openSession({ policy: "recompute", window: W, sinkToken: "none" });
    const p = (await plain.append(ids.slice(0, 60), { logprobs: true })).logprobs!;
    const ref = await engine.openSession({ policy: "dense", sinkToken: "none" });
    const lp = (await ref.append(ids.slice(59 - W, 60), { logprobs: true })).logprobs!;
    expect(Math.abs(p[59]! - lp[lp.length - 1]!)).toBeLessThan(1e-5);
    expect(Math.abs(p[59]! - got[59]!)).toBeGreaterThan(1e-4);
  });
});
