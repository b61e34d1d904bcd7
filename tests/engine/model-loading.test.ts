/**
 * Hostile and malformed model directories. Every broken checkpoint or config
 * must be rejected with a ModelLoadError carrying the right code and a message
 * that names the problem (file, tensor or key) — never a crash, never a
 * generic error — and the process must still load and run a good model after
 * all of them. Each broken model is a copy of a fixture with one thing broken,
 * in a temporary directory removed afterwards.
 */
import { cp, mkdir, mkdtemp, readFile, rm, truncate, unlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { writeRandomLlama, type RandomLlamaShape } from "../../services/cli/random-model.js";
import { Engine, EngineError, ModelLoadError, type EngineErrorCode } from "../../services/engine/index.js";
import { loadGolden, modelDir, type ModelName } from "../helpers/fixtures.js";

const LOAD_OPTIONS = { backend: "cpu", threads: 1 } as const;

// ---------------------------------------------------------------------------
// safetensors helpers

interface TensorMeta {
  dtype: unknown;
  shape: unknown;
  data_offsets: unknown;
}

interface Safetensors {
  header: Record<string, unknown>;
  data: Buffer;
}

function parseSafetensors(buf: Buffer): Safetensors {
  const len = Number(buf.readBigUInt64LE(0));
  const header = JSON.parse(buf.subarray(8, 8 + len).toString("utf8")) as Record<string, unknown>;
  return { header, data: buf.subarray(8 + len) };
}

/** Serialises a header object (or raw header text) in front of the data bytes. */
function buildSafetensors(header: Record<string, unknown> | string, data: Buffer): Buffer {
  let json = typeof header === "string" ? header : JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), data]);
}

async function editHeader(path: string, edit: (header: Record<string, TensorMeta>) => void): Promise<void> {
  const st = parseSafetensors(await readFile(path));
  edit(st.header as Record<string, TensorMeta>);
  await writeFile(path, buildSafetensors(st.header, st.data));
}

async function editJson(path: string, edit: (doc: Record<string, unknown>) => void): Promise<void> {
  const doc = JSON.parse(await readFile(path, "utf8")) as Record<string, unknown>;
  edit(doc);
  await writeFile(path, JSON.stringify(doc, null, 2));
}

// ---------------------------------------------------------------------------
// loading helpers

let root: string;
let counter = 0;

/** A fresh copy of a fixture model in the temporary root. */
async function copyFixture(name: ModelName): Promise<string> {
  const dir = join(root, `${name}-${++counter}`);
  await cp(modelDir(name), dir, { recursive: true });
  return dir;
}

/** Loads `dir`; returns the rejection (or fails the test if the load succeeds). */
async function loadError(dir: string): Promise<EngineError> {
  let engine: Engine | undefined;
  try {
    engine = await Engine.load(dir, LOAD_OPTIONS);
  } catch (err) {
    return err as EngineError;
  }
  await engine.close();
  throw new Error(`expected loading ${dir} to fail, but it loaded`);
}

async function expectLoadError(dir: string, code: EngineErrorCode, ...patterns: RegExp[]): Promise<EngineError> {
  const err = await loadError(dir);
  expect(err).toBeInstanceOf(ModelLoadError);
  expect(err.name).toBe("ModelLoadError");
  expect(err.code).toBe(code);
  for (const p of patterns) expect(err.message).toMatch(p);
  return err;
}

/** Scores a golden case on a freshly loaded model: the process still works. */
async function checkGoodModel(name: ModelName): Promise<void> {
  const golden = loadGolden(name);
  const c = golden.cases.find((x) => x.policy === "dense")!;
  const engine = await Engine.load(modelDir(name), LOAD_OPTIONS);
  try {
    expect(engine.info.architecture).toBe(golden.architecture);
    const session = await engine.openSession({ policy: "dense", sinkToken: "none" });
    const r = await session.append(c.ids, { logprobs: true });
    await session.close();
    const got = Array.from(r.logprobs!).slice(1);
    expect(got).toHaveLength(c.logprobs.length);
    let maxErr = 0;
    for (let j = 0; j < got.length; j++) maxErr = Math.max(maxErr, Math.abs(got[j]! - c.logprobs[j]!));
    expect(maxErr).toBeLessThanOrEqual(1e-4);
  } finally {
    await engine.close();
  }
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "streamsink-model-loading-"));
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

// ---------------------------------------------------------------------------

describe("model directory and config.json", () => {
  it("a missing directory is E_IO naming the directory", async () => {
    const dir = join(root, "does-not-exist");
    const err = await expectLoadError(dir, "E_IO", /does not exist/);
    expect(err.message).toContain(dir);
  });

  it("a directory without config.json is E_MODEL_CONFIG naming config.json", async () => {
    const dir = await copyFixture("pythia");
    await unlink(join(dir, "config.json"));
    await expectLoadError(dir, "E_MODEL_CONFIG", /config\.json/, /cannot open/);
  });

  it("config.json that is not JSON is E_MODEL_CONFIG saying bad JSON", async () => {
    const dir = await copyFixture("pythia");
    await writeFile(join(dir, "config.json"), '{"architectures": ["GPTNeoXForCausalLM"], "hidden_size": 64,,}');
    await expectLoadError(dir, "E_MODEL_CONFIG", /bad JSON/, /config\.json/);
  });

  it("an empty config.json is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("pythia");
    await writeFile(join(dir, "config.json"), "");
    await expectLoadError(dir, "E_MODEL_CONFIG", /bad JSON/, /config\.json/);
  });

  it("config.json that is a JSON array is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("pythia");
    await writeFile(join(dir, "config.json"), "[1, 2, 3]");
    await expectLoadError(dir, "E_MODEL_CONFIG", /not a JSON object/);
  });

  it("config.json that is a directory is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("pythia");
    await unlink(join(dir, "config.json"));
    await mkdir(join(dir, "config.json"));
    await expectLoadError(dir, "E_MODEL_CONFIG", /config\.json/);
  });

  it("a config missing hidden_size is E_MODEL_CONFIG naming the key", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => delete c.hidden_size);
    await expectLoadError(dir, "E_MODEL_CONFIG", /missing "hidden_size"/);
  });

  it("a non-integer num_hidden_layers is E_MODEL_CONFIG naming the key", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => (c.num_hidden_layers = "two"));
    await expectLoadError(dir, "E_MODEL_CONFIG", /"num_hidden_layers" must be a positive integer/);
  });

  it("a negative vocab_size is E_MODEL_CONFIG naming the key", async () => {
    const dir = await copyFixture("pythia");
    await editJson(join(dir, "config.json"), (c) => (c.vocab_size = -5));
    await expectLoadError(dir, "E_MODEL_CONFIG", /"vocab_size" must be a positive integer/);
  });

  it("unknown architecture GPT2LMHeadModel is E_UNSUPPORTED_MODEL listing the supported ones", async () => {
    const dir = await copyFixture("pythia");
    await editJson(join(dir, "config.json"), (c) => {
      c.architectures = ["GPT2LMHeadModel"];
      c.model_type = "gpt2";
    });
    await expectLoadError(
      dir,
      "E_UNSUPPORTED_MODEL",
      /GPT2LMHeadModel/,
      /LlamaForCausalLM/,
      /GPTNeoXForCausalLM/,
      /FalconForCausalLM/,
      /MptForCausalLM/,
    );
  });

  it("a config without architectures or a known model_type is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("pythia");
    await editJson(join(dir, "config.json"), (c) => {
      delete c.architectures;
      c.model_type = "bert";
    });
    await expectLoadError(dir, "E_MODEL_CONFIG", /architectures/, /model_type/);
  });

  it("unsupported rope scaling is E_UNSUPPORTED_MODEL naming the type", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => {
      c.rope_parameters = { rope_theta: 10000.0, rope_type: "yarn", factor: 4.0 };
    });
    await expectLoadError(dir, "E_UNSUPPORTED_MODEL", /rope scaling type "yarn"/);
  });

  it("heads not a multiple of KV heads is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => (c.num_key_value_heads = 3));
    await expectLoadError(dir, "E_MODEL_CONFIG", /KV heads/);
  });

  it("a learned sink token outside the vocabulary is E_MODEL_CONFIG", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => (c.streamsink = { sink_token_id: 384 }));
    await expectLoadError(dir, "E_MODEL_CONFIG", /sink_token_id/, /vocabulary/);
  });

  it("a learned sink token beyond 32 bits is rejected, not truncated to a valid id", async () => {
    // 2^32 would wrap to token 0 if narrowed to int before the range check.
    const dir = await copyFixture("llama-gqa");
    await editJson(join(dir, "config.json"), (c) => (c.streamsink = { sink_token_id: 4294967296 }));
    await expectLoadError(dir, "E_MODEL_CONFIG", /sink_token_id/);
  });
});

describe("single-file safetensors checkpoints", () => {
  const weights = (dir: string) => join(dir, "model.safetensors");

  it("no checkpoint file is E_IO", async () => {
    const dir = await copyFixture("pythia");
    await unlink(weights(dir));
    await expectLoadError(dir, "E_IO", /no model\.safetensors/);
  });

  it("an empty file is E_MODEL_FORMAT (truncated) naming the file", async () => {
    const dir = await copyFixture("pythia");
    await writeFile(weights(dir), Buffer.alloc(0));
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.safetensors/, /truncated/);
  });

  it("a file cut in half is E_MODEL_FORMAT naming the file and a tensor past the end", async () => {
    const dir = await copyFixture("pythia");
    const size = (await readFile(weights(dir))).length;
    await truncate(weights(dir), Math.floor(size / 2));
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.safetensors/, /truncated|exceeds/, /tensor \S+/);
  });

  it("a file cut inside its header is E_MODEL_FORMAT (header exceeds the file)", async () => {
    const dir = await copyFixture("pythia");
    await truncate(weights(dir), 100);
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.safetensors/, /exceeds the file/);
  });

  it("a header length field larger than the file is E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("pythia");
    const buf = await readFile(weights(dir));
    buf.writeBigUInt64LE(BigInt(buf.length) + 1n, 0);
    await writeFile(weights(dir), buf);
    await expectLoadError(dir, "E_MODEL_FORMAT", /header length \d+ exceeds the file/, /model\.safetensors/);
  });

  it("a header length field of 2^64-1 is E_MODEL_FORMAT, not an overflow", async () => {
    const dir = await copyFixture("pythia");
    const buf = await readFile(weights(dir));
    buf.writeBigUInt64LE(0xffffffffffffffffn, 0);
    await writeFile(weights(dir), buf);
    await expectLoadError(dir, "E_MODEL_FORMAT", /header length \d+ exceeds the file/);
  });

  it("a header that is not JSON is E_MODEL_FORMAT naming the file", async () => {
    const dir = await copyFixture("pythia");
    const st = parseSafetensors(await readFile(weights(dir)));
    const text = JSON.stringify(st.header).replace('"dtype"', "dtype");
    await writeFile(weights(dir), buildSafetensors(text, st.data));
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.safetensors header/, /at byte \d+/);
  });

  it("a header that is JSON but not an object is E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("pythia");
    const st = parseSafetensors(await readFile(weights(dir)));
    await writeFile(weights(dir), buildSafetensors("[1,2,3]", st.data));
    await expectLoadError(dir, "E_MODEL_FORMAT", /not a JSON object/);
  });

  it("a deeply nested header is E_MODEL_FORMAT, not a stack overflow", async () => {
    const dir = await copyFixture("pythia");
    const st = parseSafetensors(await readFile(weights(dir)));
    const depth = 200_000;
    await writeFile(weights(dir), buildSafetensors("[".repeat(depth) + "]".repeat(depth), st.data));
    await expectLoadError(dir, "E_MODEL_FORMAT", /nesting too deep/);
  });

  it("a tensor with the wrong shape is E_TENSOR_SHAPE naming the tensor and both shapes", async () => {
    const dir = await copyFixture("pythia");
    const name = "gpt_neox.layers.0.mlp.dense_h_to_4h.weight";
    await editHeader(weights(dir), (h) => {
      const shape = h[name]!.shape as number[];
      h[name]!.shape = [shape[1], shape[0]]; // same byte length, transposed
    });
    await expectLoadError(dir, "E_TENSOR_SHAPE", new RegExp(`tensor ${name.replace(/\./g, "\\.")} has shape \\[64, 256\\], expected \\[256, 64\\]`));
  });

  it("a tensor whose byte length does not match its shape is E_MODEL_FORMAT naming it", async () => {
    const dir = await copyFixture("pythia");
    const name = "gpt_neox.final_layer_norm.bias";
    await editHeader(weights(dir), (h) => (h[name]!.shape = [65]));
    await expectLoadError(dir, "E_MODEL_FORMAT", new RegExp(name.replace(/\./g, "\\.")), /byte length does not match/);
  });

  it("a missing tensor is E_MISSING_TENSOR naming it", async () => {
    const dir = await copyFixture("pythia");
    const name = "gpt_neox.layers.1.mlp.dense_4h_to_h.weight";
    await editHeader(weights(dir), (h) => delete h[name]);
    await expectLoadError(dir, "E_MISSING_TENSOR", new RegExp(`missing tensor ${name.replace(/\./g, "\\.")}`));
  });

  it("an unsupported dtype (I64) is E_UNSUPPORTED_MODEL naming the tensor and dtype", async () => {
    const dir = await copyFixture("pythia");
    const name = "gpt_neox.layers.0.attention.dense.bias";
    await editHeader(weights(dir), (h) => (h[name]!.dtype = "I64"));
    await expectLoadError(dir, "E_UNSUPPORTED_MODEL", new RegExp(name.replace(/\./g, "\\.")), /unsupported dtype I64/);
  });

  it("a tensor entry without dtype / shape / data_offsets is E_MODEL_FORMAT naming the tensor", async () => {
    for (const field of ["dtype", "shape", "data_offsets"] as const) {
      const dir = await copyFixture("pythia");
      const name = "embed_out.weight";
      await editHeader(weights(dir), (h) => delete h[name]![field]);
      await expectLoadError(dir, "E_MODEL_FORMAT", /embed_out\.weight/, new RegExp(`missing ${field}`));
    }
  });

  it("negative or reversed data_offsets are E_MODEL_FORMAT", async () => {
    for (const offsets of [[-8, 0], [100, 50], [0.5, 8], ["0", "8"]]) {
      const dir = await copyFixture("pythia");
      await editHeader(weights(dir), (h) => (h["embed_out.weight"]!.data_offsets = offsets));
      await expectLoadError(dir, "E_MODEL_FORMAT", /embed_out\.weight/, /bad data_offsets/);
    }
  });

  it("data_offsets past the end of the file are E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("pythia");
    await editHeader(weights(dir), (h) => (h["embed_out.weight"]!.data_offsets = [0, 1e15]));
    await expectLoadError(dir, "E_MODEL_FORMAT", /embed_out\.weight/, /truncated/);
  });

  it("a negative dimension is E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("pythia");
    await editHeader(weights(dir), (h) => (h["embed_out.weight"]!.shape = [-384, -64]));
    await expectLoadError(dir, "E_MODEL_FORMAT", /embed_out\.weight/, /bad dimension/);
  });

  it("a shape whose element count overflows 64 bits is E_MODEL_FORMAT, not accepted as empty", async () => {
    // 2^40 * 2^24 = 2^64 wraps to 0 elements in uint64 arithmetic, which would
    // match data_offsets [0, 0]: the header must be rejected instead.
    const dir = await copyFixture("pythia");
    await editHeader(weights(dir), (h) => {
      h["extra.overflow"] = { dtype: "F32", shape: [2 ** 40, 2 ** 24], data_offsets: [0, 0] };
    });
    await expectLoadError(dir, "E_MODEL_FORMAT", /extra\.overflow/, /too many elements/);
  });

  it("a header with a duplicate tensor name is E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("pythia");
    const st = parseSafetensors(await readFile(weights(dir)));
    const entry = JSON.stringify(st.header["embed_out.weight"]);
    const text = JSON.stringify(st.header).replace(/^\{/, `{"embed_out.weight":${entry},`);
    await writeFile(weights(dir), buildSafetensors(text, st.data));
    await expectLoadError(dir, "E_MODEL_FORMAT", /duplicate key "embed_out\.weight"/);
  });

  it("a tokenizer.json that is not JSON is E_TOKENIZER naming the file", async () => {
    const dir = await copyFixture("pythia");
    await writeFile(join(dir, "tokenizer.json"), "{ not json");
    await expectLoadError(dir, "E_TOKENIZER", /tokenizer\.json/);
  });
});

describe("sharded safetensors checkpoints", () => {
  const index = (dir: string) => join(dir, "model.safetensors.index.json");
  const shard = (dir: string, i: number) => join(dir, `model-0000${i}-of-00003.safetensors`);

  it("an index pointing to a missing shard file is E_IO naming the shard", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(index(dir), (doc) => {
      (doc.weight_map as Record<string, string>)["model.norm.weight"] = "model-00004-of-00003.safetensors";
    });
    await expectLoadError(dir, "E_IO", /model-00004-of-00003\.safetensors/, /cannot open/);
  });

  it("a deleted shard is E_IO naming it", async () => {
    const dir = await copyFixture("llama-gqa");
    await unlink(shard(dir, 2));
    await expectLoadError(dir, "E_IO", /model-00002-of-00003\.safetensors/);
  });

  it("an index listing a tensor that its shard lacks is E_MISSING_TENSOR naming tensor and shard", async () => {
    const dir = await copyFixture("llama-gqa");
    // lm_head.weight is listed in shard 3; take it out of that shard only.
    await editHeader(shard(dir, 3), (h) => delete h["lm_head.weight"]);
    await expectLoadError(dir, "E_MISSING_TENSOR", /lm_head\.weight/, /model-00003-of-00003\.safetensors/);
  });

  it("an index naming the wrong shard for a tensor is E_MISSING_TENSOR", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(index(dir), (doc) => {
      (doc.weight_map as Record<string, string>)["model.norm.weight"] = "model-00001-of-00003.safetensors";
    });
    await expectLoadError(dir, "E_MISSING_TENSOR", /model\.norm\.weight/, /model-00001-of-00003\.safetensors/);
  });

  it("a tensor missing from both the index and the shards is E_MISSING_TENSOR naming it", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(index(dir), (doc) => delete (doc.weight_map as Record<string, string>)["lm_head.weight"]);
    await editHeader(shard(dir, 3), (h) => delete h["lm_head.weight"]);
    await expectLoadError(dir, "E_MISSING_TENSOR", /missing tensor lm_head\.weight/);
  });

  it("a tensor defined in two shards is E_MODEL_FORMAT naming it", async () => {
    const dir = await copyFixture("llama-gqa");
    // Copy shard 1's embed_tokens entry (and its bytes) into shard 3.
    const s1 = parseSafetensors(await readFile(shard(dir, 1)));
    const e = s1.header["model.embed_tokens.weight"] as TensorMeta;
    const [b, end] = e.data_offsets as [number, number];
    const s3 = parseSafetensors(await readFile(shard(dir, 3)));
    s3.header["model.embed_tokens.weight"] = { ...e, data_offsets: [s3.data.length, s3.data.length + end - b] };
    await writeFile(shard(dir, 3), buildSafetensors(s3.header, Buffer.concat([s3.data, s1.data.subarray(b, end)])));
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.embed_tokens\.weight/, /defined twice/);
  });

  it("an index that is not JSON is E_MODEL_FORMAT naming the index", async () => {
    const dir = await copyFixture("llama-gqa");
    await writeFile(index(dir), '{"weight_map": {"lm_head.weight": ');
    await expectLoadError(dir, "E_MODEL_FORMAT", /model\.safetensors\.index\.json/);
  });

  it("an index without weight_map is E_MODEL_FORMAT", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(index(dir), (doc) => delete doc.weight_map);
    await expectLoadError(dir, "E_MODEL_FORMAT", /weight_map/);
  });

  it("shard names that escape the model directory are E_MODEL_FORMAT", async () => {
    for (const bad of ["../model-00001-of-00003.safetensors", "/etc/passwd", "", 7]) {
      const dir = await copyFixture("llama-gqa");
      await editJson(index(dir), (doc) => ((doc.weight_map as Record<string, unknown>)["model.norm.weight"] = bad));
      await expectLoadError(dir, "E_MODEL_FORMAT", /bad shard file name/, /model\.norm\.weight/);
    }
  });

  it("a shard name that is a directory is an error, not a crash", async () => {
    const dir = await copyFixture("llama-gqa");
    await editJson(index(dir), (doc) => ((doc.weight_map as Record<string, unknown>)["model.norm.weight"] = ".."));
    const err = await loadError(dir);
    expect(err).toBeInstanceOf(ModelLoadError);
    expect(["E_IO", "E_MODEL_FORMAT"]).toContain(err.code);
    expect(err.message).toContain(`${dir}/..`);
  });
});

// ---------------------------------------------------------------------------
// Fuzzing: mutated safetensors files and index files. Every load either
// succeeds or rejects with a ModelLoadError whose code is one of the loader's
// codes; E_INTERNAL / E_OUT_OF_MEMORY (unvalidated input reaching an
// allocation or a std:: exception) and crashes fail the test.

const LOADER_CODES: readonly string[] = ["E_IO", "E_MODEL_FORMAT", "E_MISSING_TENSOR", "E_TENSOR_SHAPE", "E_UNSUPPORTED_MODEL"];

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

describe("fuzzing the checkpoint reader", () => {
  const TINY: RandomLlamaShape = { hidden: 8, layers: 1, heads: 2, kvHeads: 1, intermediate: 16, vocab: 16 };
  let base: Buffer;
  let baseHeader: Record<string, TensorMeta>;

  beforeAll(async () => {
    const dir = join(root, "fuzz-base");
    await writeRandomLlama(dir, TINY, 7);
    base = await readFile(join(dir, "model.safetensors"));
    baseHeader = parseSafetensors(base).header as Record<string, TensorMeta>;
  });

  async function attempt(dir: string): Promise<string> {
    let engine: Engine;
    try {
      engine = await Engine.load(dir, LOAD_OPTIONS);
    } catch (err) {
      if (!(err instanceof EngineError)) throw new Error(`non-EngineError rejection: ${String(err)}`);
      if (!(err instanceof ModelLoadError) || !LOADER_CODES.includes(err.code))
        throw new Error(`unexpected ${err.name} ${err.code}: ${err.message}`);
      if (!err.code.startsWith("E_") || err.message.length === 0) throw new Error(`bad error ${err.code}: "${err.message}"`);
      return err.code;
    }
    await engine.close();
    return "ok";
  }

  it("300 mutated safetensors files: each loads or rejects with a loader code", async () => {
    const rand = rng(0x5eed);
    const int = (n: number) => Math.floor(rand() * n);
    const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
    const headerLen = Number(base.readBigUInt64LE(0));
    const { data } = parseSafetensors(base);
    const names = Object.keys(baseHeader).filter((n) => n !== "__metadata__");
    const dir = join(root, "fuzz-single");
    await mkdir(dir, { recursive: true });
    await writeFile(join(dir, "config.json"), await readFile(join(root, "fuzz-base", "config.json")));

    const weirdNumbers = [0, 1, -1, 2, 7, 8, 16, 64, 2 ** 31, 2 ** 32, 2 ** 40, 2 ** 53, -(2 ** 53), 1.5, 1e300, "8", null, true, [], {}];
    const randomJson = (depth: number): unknown => {
      const k = int(depth > 3 ? 4 : 7);
      if (k === 0) return pick(weirdNumbers);
      if (k === 1) return pick(["F32", "F16", "BF16", "I64", "F64", "U8", "", "\u0000", "x".repeat(int(50))]);
      if (k === 2) return null;
      if (k === 3) return rand() < 0.5;
      if (k === 4) return Array.from({ length: int(4) }, () => randomJson(depth + 1));
      const o: Record<string, unknown> = {};
      for (let i = int(4); i > 0; i--) o[pick([...names, "dtype", "shape", "data_offsets", "__metadata__", "a"])] = randomJson(depth + 1);
      return o;
    };

    const mutations: Array<[string, () => Buffer]> = [
      ["flip header bytes", () => {
        const b = Buffer.from(base);
        for (let i = 1 + int(8); i > 0; i--) b[8 + int(headerLen)] = int(256);
        return b;
      }],
      ["flip any bytes", () => {
        const b = Buffer.from(base);
        for (let i = 1 + int(16); i > 0; i--) b[int(b.length)] = int(256);
        return b;
      }],
      ["random header length", () => {
        const b = Buffer.from(base);
        const choices = [0n, 1n, 7n, 8n, BigInt(headerLen - 1), BigInt(headerLen + 1), BigInt(headerLen + 8), BigInt(b.length - 8), BigInt(b.length),
          BigInt(int(b.length)), 1n << 32n, 1n << 63n, (1n << 64n) - 1n, BigInt(100 << 20), BigInt(int(2 ** 31)) * BigInt(int(2 ** 31))];
        b.writeBigUInt64LE(pick(choices) & ((1n << 64n) - 1n), 0);
        return b;
      }],
      ["truncate", () => base.subarray(0, int(base.length))],
      ["insert/delete header bytes", () => {
        const at = 8 + int(headerLen);
        const n = 1 + int(8);
        const text = rand() < 0.5
          ? Buffer.concat([base.subarray(8, at), Buffer.from(Array.from({ length: n }, () => int(256))), base.subarray(at, 8 + headerLen)])
          : Buffer.concat([base.subarray(8, at), base.subarray(Math.min(at + n, 8 + headerLen), 8 + headerLen)]);
        return buildSafetensors(text.toString("latin1"), data);
      }],
      ["random JSON header", () => buildSafetensors(JSON.stringify(randomJson(0)) ?? "null", data)],
      ["mutate one tensor field", () => {
        const h = structuredClone(baseHeader) as unknown as Record<string, Record<string, unknown>>;
        const name = pick(names);
        const t = h[name]!;
        const field = pick(["dtype", "shape", "data_offsets"]);
        const r = int(6);
        if (r === 0) delete t[field];
        else if (r === 1) t[field] = randomJson(2);
        else if (field === "shape") {
          const s = [...(t.shape as number[])];
          if (r === 2 && s.length > 0) s[int(s.length)] = pick(weirdNumbers) as number;
          else if (r === 3) s.reverse();
          else if (r === 4) s.push(pick([0, 1, 2, 2 ** 40]));
          else s.pop();
          t.shape = s;
        } else if (field === "data_offsets") {
          const o = [...(t.data_offsets as number[])];
          o[int(2)] = (o[int(2)] ?? 0) + pick([-4, -1, 1, 4, 2 ** 32, -(2 ** 40)]);
          t.data_offsets = r === 5 ? [o[1], o[0]] : o;
        } else {
          t.dtype = pick(["F16", "BF16", "F64", "I32", "I64", "BOOL", "f32", 32]);
        }
        return buildSafetensors(h, data);
      }],
      ["rename or drop a tensor", () => {
        const h = structuredClone(baseHeader) as Record<string, unknown>;
        const name = pick(names);
        const entry = h[name];
        delete h[name];
        if (rand() < 0.5) h[name.replace(/\d/, "9").replace("weight", "wieght")] = entry;
        return buildSafetensors(h, data);
      }],
      ["mutate data bytes only", () => {
        const b = Buffer.from(base);
        for (let i = 1 + int(32); i > 0; i--) b[8 + headerLen + int(b.length - 8 - headerLen)] = int(256);
        return b;
      }],
      ["random bytes", () => Buffer.from(Array.from({ length: int(256) }, () => int(256)))],
    ];

    const outcomes = new Map<string, number>();
    for (let i = 0; i < 300; i++) {
      const [label, make] = mutations[i % mutations.length]!;
      const bytes = make();
      await writeFile(join(dir, "model.safetensors"), bytes);
      let outcome: string;
      try {
        outcome = await attempt(dir);
      } catch (err) {
        throw new Error(`fuzz case ${i} (${label}): ${(err as Error).message}`);
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    // The mutations must actually exercise the reader: many rejections, of
    // several kinds, and some intact (data-only) mutations that still load.
    const rejected = [...outcomes].filter(([k]) => k !== "ok").reduce((s, [, n]) => s + n, 0);
    expect(rejected).toBeGreaterThan(150);
    expect(outcomes.get("ok") ?? 0).toBeGreaterThanOrEqual(30);
    expect(outcomes.has("E_MODEL_FORMAT")).toBe(true);
    expect(outcomes.has("E_MISSING_TENSOR")).toBe(true);
    expect([...outcomes.keys()].filter((k) => k !== "ok").length).toBeGreaterThanOrEqual(3);
  });

  it("60 mutated shard index files: each loads or rejects with a loader code", async () => {
    const rand = rng(0x1dec5);
    const int = (n: number) => Math.floor(rand() * n);
    const dir = await copyFixture("llama-gqa");
    await unlink(join(dir, "tokenizer.json"));
    const path = join(dir, "model.safetensors.index.json");
    const original = await readFile(path);
    const outcomes = new Map<string, number>();
    for (let i = 0; i < 60; i++) {
      const b = Buffer.from(original);
      if (i % 3 === 0) {
        for (let k = 1 + int(6); k > 0; k--) b[int(b.length)] = int(256);
        await writeFile(path, b);
      } else if (i % 3 === 1) {
        await writeFile(path, b.subarray(0, int(b.length)));
      } else {
        // Swap the shard of one tensor, or point it at a made-up file.
        const doc = JSON.parse(original.toString("utf8")) as { weight_map: Record<string, string> };
        const names = Object.keys(doc.weight_map);
        const name = names[int(names.length)]!;
        doc.weight_map[name] = [
          "model-00001-of-00003.safetensors",
          "model-00002-of-00003.safetensors",
          "model-00003-of-00003.safetensors",
          "config.json",
          "tokenizer.json",
          "nope.safetensors",
        ][int(6)]!;
        await writeFile(path, JSON.stringify(doc));
      }
      let outcome: string;
      try {
        outcome = await attempt(dir);
      } catch (err) {
        throw new Error(`index fuzz case ${i}: ${(err as Error).message}`);
      }
      outcomes.set(outcome, (outcomes.get(outcome) ?? 0) + 1);
    }
    const rejected = [...outcomes].filter(([k]) => k !== "ok").reduce((s, [, n]) => s + n, 0);
    expect(rejected).toBeGreaterThan(30);
  });
});

describe("after all the failures", () => {
  it("the process still loads and runs good models", async () => {
    await checkGoodModel("llama-gqa");
    await checkGoodModel("pythia");
  });

  it("a fixture copy with nothing broken loads (the breakage, not the copy, caused each failure)", async () => {
    for (const name of ["llama-gqa", "pythia"] as const) {
      const dir = await copyFixture(name);
      const engine = await Engine.load(dir, LOAD_OPTIONS);
      try {
        expect(engine.info.architecture).toBe(loadGolden(name).architecture);
        expect(engine.tokenizer).toBeDefined();
      } finally {
        await engine.close();
      }
    }
  });
});
