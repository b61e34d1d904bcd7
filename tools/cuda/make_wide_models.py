#!/usr/bin/env python3
"""Random-weight checkpoints with head_dim 128, the shape of the CUDA
backend's decode fast path (attn_decode128), for GPU-vs-CPU checks:

  llama-hd128-g1   Llama, 2 heads / 2 KV heads (multi-head)
  llama-hd128-g2   Llama, 4 heads / 2 KV heads (GQA)
  llama-hd128-g4   Llama, 8 heads / 2 KV heads (GQA, Mistral's group)
  llama-hd128-g8   Llama, 8 heads / 1 KV head  (multi-query)
  mpt-hd128        MPT, 2 heads, ALiBi

Standard library only (the H100 host has no network): safetensors written by
hand, fp32, values from a seeded PRNG.

  make_wide_models.py OUT_DIR
"""
import json
import os
import random
import struct
import sys
from array import array


def tensor(rng, shape, scale):
    n = 1
    for d in shape:
        n *= d
    return array("f", (rng.uniform(-scale, scale) for _ in range(n)))


def write_safetensors(path, tensors):
    header, offset, blobs = {}, 0, []
    for name, (shape, data) in tensors.items():
        raw = data.tobytes()
        header[name] = {"dtype": "F32", "shape": list(shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)


def llama(out, name, heads, kv_heads, layers=2, vocab=256, inter=512, seed=1):
    rng = random.Random(seed)
    hd = 128
    hidden = heads * hd
    t = {"model.embed_tokens.weight": ([vocab, hidden], tensor(rng, [vocab, hidden], 1.0))}
    s = hidden ** -0.5
    for l in range(layers):
        p = f"model.layers.{l}."
        t[p + "input_layernorm.weight"] = ([hidden], array("f", [1.0] * hidden))
        t[p + "post_attention_layernorm.weight"] = ([hidden], array("f", [1.0] * hidden))
        t[p + "self_attn.q_proj.weight"] = ([heads * hd, hidden], tensor(rng, [heads * hd, hidden], 2 * s))
        t[p + "self_attn.k_proj.weight"] = ([kv_heads * hd, hidden], tensor(rng, [kv_heads * hd, hidden], 2 * s))
        t[p + "self_attn.v_proj.weight"] = ([kv_heads * hd, hidden], tensor(rng, [kv_heads * hd, hidden], s))
        t[p + "self_attn.o_proj.weight"] = ([hidden, heads * hd], tensor(rng, [hidden, heads * hd], s))
        t[p + "mlp.gate_proj.weight"] = ([inter, hidden], tensor(rng, [inter, hidden], s))
        t[p + "mlp.up_proj.weight"] = ([inter, hidden], tensor(rng, [inter, hidden], s))
        t[p + "mlp.down_proj.weight"] = ([hidden, inter], tensor(rng, [hidden, inter], inter ** -0.5))
    t["model.norm.weight"] = ([hidden], array("f", [1.0] * hidden))
    t["lm_head.weight"] = ([vocab, hidden], tensor(rng, [vocab, hidden], 4 * s))
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    cfg = {
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": hidden, "head_dim": hd,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "num_hidden_layers": layers,
        "intermediate_size": inter, "vocab_size": vocab, "max_position_embeddings": 4096, "rms_norm_eps": 1e-6,
        "rope_theta": 10000.0, "hidden_act": "silu", "tie_word_embeddings": False,
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


def mpt(out, name, heads=2, layers=2, vocab=256, seed=2):
    rng = random.Random(seed)
    hidden = heads * 128
    s = hidden ** -0.5
    t = {"transformer.wte.weight": ([vocab, hidden], tensor(rng, [vocab, hidden], 1.0))}
    for l in range(layers):
        p = f"transformer.blocks.{l}."
        t[p + "norm_1.weight"] = ([hidden], array("f", [1.0] * hidden))
        t[p + "norm_2.weight"] = ([hidden], array("f", [1.0] * hidden))
        t[p + "attn.Wqkv.weight"] = ([3 * hidden, hidden], tensor(rng, [3 * hidden, hidden], 2 * s))
        t[p + "attn.out_proj.weight"] = ([hidden, hidden], tensor(rng, [hidden, hidden], s))
        t[p + "ffn.up_proj.weight"] = ([4 * hidden, hidden], tensor(rng, [4 * hidden, hidden], s))
        t[p + "ffn.down_proj.weight"] = ([hidden, 4 * hidden], tensor(rng, [hidden, 4 * hidden], 0.5 * s))
    t["transformer.norm_f.weight"] = ([hidden], array("f", [1.0] * hidden))
    d = os.path.join(out, name)
    os.makedirs(d, exist_ok=True)
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    cfg = {
        "architectures": ["MptForCausalLM"], "model_type": "mpt", "d_model": hidden, "n_heads": heads,
        "n_layers": layers, "expansion_ratio": 4, "max_seq_len": 4096, "vocab_size": vocab, "no_bias": True,
        "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True,
        "attn_config": {"alibi": True, "alibi_bias_max": 8, "clip_qkv": None, "qk_ln": False, "softmax_scale": None},
    }
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f, indent=1)


if __name__ == "__main__":
    out = sys.argv[1]
    llama(out, "llama-hd128-g1", 2, 2)
    llama(out, "llama-hd128-g2", 4, 2)
    llama(out, "llama-hd128-g4", 8, 2, layers=1, inter=256)
    llama(out, "llama-hd128-g8", 8, 1, layers=1, inter=256)
    mpt(out, "mpt-hd128")
    print("wrote", ", ".join(sorted(os.listdir(out))))
