/**
 * The compiled `streamsink` CLI as a child process: `score` reports against
 * the golden log-probs, the StreamingLLM acceptance checks through the
 * command line, input formats, and bad usage (non-zero exit, a message on
 * stderr that names the problem, no stack trace).
 */
import { execFile, execFileSync } from "node:child_process";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { loadGolden, modelDir, ROOT, type GoldenCase } from "../helpers/fixtures.js";

const MAIN = join(ROOT, "dist", "services", "cli", "main.js");
const LLAMA = modelDir("llama-gqa");
const TOLERANCE = 1e-4;

interface Run {
  code: number;
  stdout: string;
  stderr: string;
}

function cli(args: readonly string[]): Promise<Run> {
  return new Promise((resolvePromise) => {
    execFile(process.execPath, [MAIN, ...args], { cwd: ROOT, maxBuffer: 16 << 20, env: { ...process.env, NODE_OPTIONS: "" } }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === "number" ? err.code : -1) : 0;
      resolvePromise({ code, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

interface Report {
  model: string;
  architecture: string;
  policy: string;
  sinks: number;
  window: number;
  sink_token: number | null;
  tokens: number;
  nll_mean: number;
  ppl: number;
  logprobs?: number[];
}

/** Runs `score --json` and parses its one-line report; fails with stderr on a non-zero exit. */
async function score(args: readonly string[]): Promise<Report> {
  const r = await cli(["score", "--backend", "cpu", "--json", ...args]);
  if (r.code !== 0) throw new Error(`score ${args.join(" ")} exited ${r.code}: ${r.stderr}`);
  const lines = r.stdout.trim().split("\n");
  expect(lines).toHaveLength(1);
  return JSON.parse(lines[0]!) as Report;
}

function maxAbsDiff(a: readonly number[], b: readonly number[]): number {
  expect(a).toHaveLength(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const STACK_FRAME = /^\s+at .+[(:]/m;

let tmp: string;
let idsJson: string;
let idsText: string;
let textFile: string;

beforeAll(async () => {
  // Compile services/ to dist/ so the CLI under test is the current source.
  try {
    execFileSync("npx", ["tsc", "-p", "tsconfig.json"], { cwd: ROOT, stdio: "pipe" });
  } catch (err) {
    const e = err as { stdout?: Buffer; stderr?: Buffer };
    throw new Error(`npx tsc -p tsconfig.json failed:\n${String(e.stdout ?? "")}${String(e.stderr ?? "")}`);
  }
  tmp = await mkdtemp(join(tmpdir(), "streamsink-cli-"));
  const dense = goldenCase("dense", 0, 0);
  idsJson = join(tmp, "ids.json");
  await writeFile(idsJson, JSON.stringify(dense.ids));
  idsText = join(tmp, "ids.txt");
  // Mixed whitespace: spaces, tabs, newlines, a trailing newline.
  await writeFile(idsText, dense.ids.map((id, i) => (i % 10 === 9 ? `${id}\n` : i % 3 === 0 ? `${id}\t` : `${id}  `)).join("") + "\n");
  textFile = join(tmp, "sample.txt");
  await writeFile(
    textFile,
    "Streaming language models keep a few attention sinks at the start of the cache and a window of recent tokens. " +
      "The quick brown fox jumps over the lazy dog, and the model keeps scoring text long after the window is full.\n",
  );
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

function goldenCase(policy: string, sinks: number, window: number): GoldenCase {
  const c = loadGolden("llama-gqa").cases.find((x) => x.policy === policy && (policy === "dense" || (x.sinks === sinks && x.window === window)));
  if (!c) throw new Error(`no golden case ${policy} ${sinks}+${window}`);
  return c;
}

describe("streamsink score", () => {
  it("--policy dense --json --logprobs matches the golden dense log-probs", async () => {
    const dense = goldenCase("dense", 0, 0);
    const r = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "dense", "--logprobs"]);
    expect(r.policy).toBe("dense");
    expect(r.architecture).toBe("LlamaForCausalLM");
    expect(r.tokens).toBe(dense.ids.length);
    expect(typeof r.sinks).toBe("number");
    expect(typeof r.window).toBe("number");
    expect(r.sink_token).toBeNull();
    expect(r.logprobs).toHaveLength(r.tokens - 1);
    expect(maxAbsDiff(r.logprobs!, dense.logprobs)).toBeLessThanOrEqual(TOLERANCE);
    const mean = r.logprobs!.reduce((s, v) => s + v, 0) / r.logprobs!.length;
    expect(Math.abs(r.nll_mean - -mean)).toBeLessThanOrEqual(1e-9 * Math.abs(mean));
    expect(Math.abs(r.ppl - Math.exp(r.nll_mean))).toBeLessThanOrEqual(1e-9 * r.ppl);
    expect(Number.isFinite(r.ppl)).toBe(true);
  });

  it("--policy sinks and --policy window match their golden cases", async () => {
    const sinks = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "sinks", "--sinks", "4", "--window", "28", "--logprobs"]);
    expect(sinks.policy).toBe("sinks");
    expect([sinks.sinks, sinks.window]).toEqual([4, 28]);
    expect(maxAbsDiff(sinks.logprobs!, goldenCase("sinks", 4, 28).logprobs)).toBeLessThanOrEqual(TOLERANCE);
    const window = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "window", "--window", "32", "--logprobs"]);
    expect(window.policy).toBe("window");
    expect(window.window).toBe(32);
    expect(maxAbsDiff(window.logprobs!, goldenCase("window", 0, 32).logprobs)).toBeLessThanOrEqual(TOLERANCE);
  });

  it("acceptance: sinks with W covering the whole stream gives exactly the dense log-probs", async () => {
    const dense = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "dense", "--logprobs"]);
    const sinks = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "sinks", "--sinks", "4", "--window", "200", "--logprobs"]);
    expect(sinks.tokens).toBe(160);
    expect(sinks.logprobs).toHaveLength(159);
    expect(sinks.logprobs).toEqual(dense.logprobs);
    expect(sinks.nll_mean).toBe(dense.nll_mean);
  });

  it("acceptance: window 32 and sinks 4+28 agree until the stream passes S+W, then differ", async () => {
    const window = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "window", "--window", "32", "--logprobs"]);
    const sinks = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "sinks", "--sinks", "4", "--window", "28", "--logprobs"]);
    const a = window.logprobs!;
    const b = sinks.logprobs!;
    expect(a).toHaveLength(159);
    expect(b).toHaveLength(159);
    // logprobs[j] predicts token j+1 from tokens 0..j: j+1 <= 32 tokens fit both caches.
    expect(a.slice(0, 32)).toEqual(b.slice(0, 32));
    for (let j = 32; j < a.length; j++) {
      if (a[j] === b[j]) throw new Error(`logprob ${j} is identical (${a[j]}) after the cache filled`);
    }
    expect(window.nll_mean).not.toBe(sinks.nll_mean);
  });

  it("an ids file of whitespace-separated ids scores the same as a JSON array", async () => {
    const fromJson = await score(["--model", LLAMA, "--ids-file", idsJson, "--policy", "sinks", "--sinks", "4", "--window", "28", "--logprobs"]);
    const fromText = await score(["--model", LLAMA, "--ids-file", idsText, "--policy", "sinks", "--sinks", "4", "--window", "28", "--logprobs"]);
    expect(fromText.tokens).toBe(fromJson.tokens);
    expect(fromText.logprobs).toEqual(fromJson.logprobs);
    expect(fromText.nll_mean).toBe(fromJson.nll_mean);
  });

  it("--text tokenizes with the model's tokenizer.json and gives a finite perplexity", async () => {
    const r = await score(["--model", LLAMA, "--text", textFile, "--policy", "sinks", "--sinks", "4", "--window", "28"]);
    expect(r.tokens).toBeGreaterThan(32);
    expect(Number.isFinite(r.ppl)).toBe(true);
    expect(r.ppl).toBeGreaterThan(1);
    expect(Number.isFinite(r.nll_mean)).toBe(true);
    expect(r.logprobs).toBeUndefined();
  });

  it("human-readable output reports perplexity", async () => {
    const r = await cli(["score", "--backend", "cpu", "--model", LLAMA, "--ids-file", idsJson, "--policy", "sinks", "--sinks", "4", "--window", "28"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/perplexity \d+\.\d+/);
    expect(r.stdout).toContain("LlamaForCausalLM sinks (4+28)");
    expect(r.stdout).toContain("160 tokens");
    expect(() => JSON.parse(r.stdout)).toThrow();
  });
});

describe("streamsink score: bad usage", () => {
  async function expectFailure(args: readonly string[], code: number, ...patterns: RegExp[]): Promise<Run> {
    const r = await cli(args);
    expect(r.code, `exit status of ${args.join(" ")}; stderr: ${r.stderr}`).toBe(code);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/^streamsink: /);
    for (const p of patterns) expect(r.stderr).toMatch(p);
    expect(r.stderr).not.toMatch(STACK_FRAME);
    return r;
  }

  it("an unknown flag", async () => {
    const r = await expectFailure(["score", "--model", LLAMA, "--ids-file", idsJson, "--frobnicate"], 2, /--frobnicate/, /[Uu]nknown option/);
    expect(r.stderr).toContain("usage: streamsink score");
  });

  it("an unknown command", async () => {
    await expectFailure(["scrore", "--model", LLAMA], 2, /unknown command "scrore"/);
  });

  it("missing --model", async () => {
    await expectFailure(["score", "--ids-file", idsJson], 2, /--model is required/);
  });

  it("both --text and --ids-file", async () => {
    await expectFailure(["score", "--model", LLAMA, "--text", textFile, "--ids-file", idsJson], 2, /exactly one of --text or --ids-file/);
  });

  it("neither --text nor --ids-file", async () => {
    await expectFailure(["score", "--model", LLAMA], 2, /exactly one of --text or --ids-file/);
  });

  it("--policy bogus", async () => {
    await expectFailure(["score", "--model", LLAMA, "--ids-file", idsJson, "--policy", "bogus"], 2, /--policy must be one of dense, window, recompute, sinks/, /"bogus"/);
  });

  it("--window 0", async () => {
    await expectFailure(["score", "--model", LLAMA, "--ids-file", idsJson, "--window", "0"], 2, /--window must be at least 1, got 0/);
  });

  it("--window that is not an integer", async () => {
    await expectFailure(["score", "--model", LLAMA, "--ids-file", idsJson, "--window", "1e3"], 2, /--window must be an integer, got "1e3"/);
  });

  it("an ids file with a non-integer entry (whitespace form)", async () => {
    const path = join(tmp, "bad-word.txt");
    await writeFile(path, "1 2 abc 4\n");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /bad-word\.txt/, /entry 2 \("abc"\)/, /not a non-negative integer token id/);
  });

  it("an ids file with a non-integer entry (JSON form)", async () => {
    const path = join(tmp, "bad-float.json");
    await writeFile(path, "[1, 2, 3.5, 4]");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /bad-float\.json/, /entry 2 \(3\.5\)/);
  });

  it("an ids file that is broken JSON", async () => {
    const path = join(tmp, "broken.json");
    await writeFile(path, "[1, 2,");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /broken\.json/, /not a valid JSON array/);
  });

  it("an ids file with an id >= vocab", async () => {
    const path = join(tmp, "oov.json");
    await writeFile(path, "[1, 384, 2]");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /token id 384 at index 1/, /vocabulary \(384\)/);
  });

  it("an ids file with fewer than two tokens", async () => {
    const path = join(tmp, "one.txt");
    await writeFile(path, "5");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /at least two tokens/);
  });

  it("a nonexistent ids file", async () => {
    const path = join(tmp, "no-such-ids.json");
    await expectFailure(["score", "--model", LLAMA, "--ids-file", path], 2, /cannot read --ids-file/, /no-such-ids\.json/);
  });

  it("a nonexistent model directory", async () => {
    const dir = join(tmp, "no-such-model");
    await expectFailure(["score", "--model", dir, "--ids-file", idsJson], 1, /no-such-model/, /does not exist/, /\(E_IO\)/);
  });

  it("a model directory that is not a model", async () => {
    await expectFailure(["score", "--model", tmp, "--ids-file", idsJson], 1, /config\.json/, /\(E_MODEL_CONFIG\)/);
  });

  it("a nonexistent text file", async () => {
    const path = join(tmp, "no-such-text.txt");
    await expectFailure(["score", "--model", LLAMA, "--text", path], 2, /cannot read --text file/, /no-such-text\.txt/);
  });
});
