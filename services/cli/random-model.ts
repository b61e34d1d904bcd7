/**
 * Writes a Llama-architecture checkpoint with seeded random weights: the
 * benchmark's model of a given size when no trained model is named, and the
 * source of malformed checkpoints in the loader's tests. Speed does not
 * depend on the values; quality is measured on trained models.
 */
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

export interface RandomLlamaShape {
  hidden: number;
  layers: number;
  heads: number;
  kvHeads: number;
  intermediate: number;
  vocab: number;
}

export const BENCH_SHAPE: RandomLlamaShape = { hidden: 256, layers: 8, heads: 8, kvHeads: 8, intermediate: 896, vocab: 4096 };

export type WeightDType = "F32" | "BF16";

export interface SafetensorsTensor {
  name: string;
  shape: number[];
  dtype: WeightDType;
  data: Float32Array;
}

function toBf16(values: Float32Array): Uint8Array {
  const bits = new Uint32Array(values.buffer, values.byteOffset, values.length);
  const out = new Uint16Array(values.length);
  for (let i = 0; i < values.length; i++) {
    const b = bits[i]!;
    // round to nearest even on the dropped 16 bits
    out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
  }
  return new Uint8Array(out.buffer);
}

/** Serialises tensors in the safetensors format (8-byte aligned header). */
export function encodeSafetensors(tensors: readonly SafetensorsTensor[]): Buffer {
  const header: Record<string, unknown> = { __metadata__: { format: "pt" } };
  const blobs: Uint8Array[] = [];
  let offset = 0;
  for (const t of tensors) {
    const bytes = t.dtype === "F32" ? new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength) : toBf16(t.data);
    header[t.name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + bytes.length] };
    blobs.push(bytes);
    offset += bytes.length;
  }
  let json = JSON.stringify(header);
  while ((8 + Buffer.byteLength(json)) % 8 !== 0) json += " ";
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  return Buffer.concat([len, Buffer.from(json), ...blobs]);
}

function gaussian(seed: number): () => number {
  let a = seed >>> 0;
  const uniform = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) + 0.5) / 4294967296;
  };
  return () => Math.sqrt(-2 * Math.log(uniform())) * Math.cos(2 * Math.PI * uniform());
}

export function llamaConfig(shape: RandomLlamaShape): Record<string, unknown> {
  return {
    architectures: ["LlamaForCausalLM"],
    model_type: "llama",
    hidden_size: shape.hidden,
    intermediate_size: shape.intermediate,
    num_hidden_layers: shape.layers,
    num_attention_heads: shape.heads,
    num_key_value_heads: shape.kvHeads,
    vocab_size: shape.vocab,
    max_position_embeddings: 4096,
    rms_norm_eps: 1e-5,
    rope_theta: 10000,
    hidden_act: "silu",
    tie_word_embeddings: false,
    torch_dtype: "float32",
  };
}

export function randomLlamaTensors(shape: RandomLlamaShape, seed: number, dtype: WeightDType = "F32"): SafetensorsTensor[] {
  const rnd = gaussian(seed);
  const hd = shape.hidden / shape.heads;
  const mat = (name: string, rows: number, cols: number, std: number): SafetensorsTensor => {
    const data = new Float32Array(rows * cols);
    for (let i = 0; i < data.length; i++) data[i] = rnd() * std;
    return { name, shape: [rows, cols], dtype, data };
  };
  const ones = (name: string, n: number): SafetensorsTensor => ({ name, shape: [n], dtype, data: new Float32Array(n).fill(1) });
  const std = 1 / Math.sqrt(shape.hidden);
  const tensors: SafetensorsTensor[] = [mat("model.embed_tokens.weight", shape.vocab, shape.hidden, 1)];
  for (let l = 0; l < shape.layers; l++) {
    const p = `model.layers.${l}.`;
    tensors.push(
      ones(p + "input_layernorm.weight", shape.hidden),
      mat(p + "self_attn.q_proj.weight", shape.heads * hd, shape.hidden, std),
      mat(p + "self_attn.k_proj.weight", shape.kvHeads * hd, shape.hidden, std),
      mat(p + "self_attn.v_proj.weight", shape.kvHeads * hd, shape.hidden, std),
      mat(p + "self_attn.o_proj.weight", shape.hidden, shape.heads * hd, std),
      ones(p + "post_attention_layernorm.weight", shape.hidden),
      mat(p + "mlp.gate_proj.weight", shape.intermediate, shape.hidden, std),
      mat(p + "mlp.up_proj.weight", shape.intermediate, shape.hidden, std),
      mat(p + "mlp.down_proj.weight", shape.hidden, shape.intermediate, 1 / Math.sqrt(shape.intermediate)),
    );
  }
  tensors.push(ones("model.norm.weight", shape.hidden), mat("lm_head.weight", shape.vocab, shape.hidden, std));
  return tensors;
}

export function parameterCount(shape: RandomLlamaShape): number {
  const hd = shape.hidden / shape.heads;
  const attn = shape.hidden * hd * (2 * shape.heads + 2 * shape.kvHeads);
  const mlp = 3 * shape.hidden * shape.intermediate;
  return 2 * shape.vocab * shape.hidden + shape.layers * (attn + mlp + 2 * shape.hidden) + shape.hidden;
}

/** Writes config.json and model.safetensors for a random Llama into `dir`. */
export async function writeRandomLlama(dir: string, shape: RandomLlamaShape, seed = 1, dtype: WeightDType = "F32"): Promise<void> {
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, "config.json"), JSON.stringify(llamaConfig(shape), null, 2));
  await writeFile(join(dir, "model.safetensors"), encodeSafetensors(randomLlamaTensors(shape, seed, dtype)));
}
