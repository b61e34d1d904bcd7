#!/usr/bin/env python3
"""Generate the golden fixtures of streamsink.

Writes, under --out (normally tests/fixtures):

  models/<name>/   config.json, generation_config.json, *.safetensors
                   (+ model.safetensors.index.json when sharded), tokenizer.json
  golden/<name>.json

Each model is a tiny random-weight Hugging Face checkpoint. The golden file
holds, for one deterministic random token stream, the per-token natural-log
probabilities of the next token under the cache policies of
docs/cache-semantics.md (dense, sinks, window, recompute), computed with
Hugging Face `transformers` in fp32 on CPU.

The `sinks` / `window` cases re-implement the StreamingLLM cache on top of the
HF model: one token per forward, with a `past_key_values` cache rebuilt before
every step from the kept entries. HF caches keys *after* RoPE, so every entry
keeps the key exactly as HF produced it together with the position it was
rotated with; before each step a kept key is rotated from that original
position to its new in-cache position (by the delta, in float64, always from
the original key, never cumulatively). MPT uses ALiBi, computed by HF from the
index of the key inside the key sequence, so evicting is enough there.

Run:  python3 tools/golden/make_golden.py --out tests/fixtures
"""

import argparse
import copy
import glob
import inspect
import json
import math
import os
import shutil
import struct
import sys
import sysconfig

import torch
import transformers
from transformers import (
    AutoModelForCausalLM,
    FalconConfig,
    GPTNeoXConfig,
    LlamaConfig,
    MptConfig,
)
from transformers.cache_utils import DynamicCache
import tokenizers
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

VOCAB = 384
T = 160
HIDDEN = 64
HEADS = 4
HEAD_DIM = 16
MAX_POS = 512
INIT_STD = 0.2  # HF default is 0.02: larger weights make the test sensitive
EOT = "<|endoftext|>"

FORMAT = "streamsink-golden"
VERSION = 1

# (policy, sinks, window); dense uses 0, 0.
CASES = [
    ("dense", 0, 0),
    ("sinks", 4, 28),
    ("sinks", 1, 31),
    ("window", 0, 32),
    ("recompute", 0, 32),
]


# ---------------------------------------------------------------- tokenizer


def corpus_files():
    """Fixed, offline corpus: the top-level *.py modules of the Python stdlib."""
    std = sysconfig.get_paths()["stdlib"]
    files = sorted(glob.glob(os.path.join(std, "*.py")))
    if not files:
        raise SystemExit(f"no corpus files under {std}")
    return files


def build_tokenizer():
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        min_frequency=2,
        special_tokens=[EOT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train(corpus_files(), trainer)
    assert tok.get_vocab_size() == VOCAB, tok.get_vocab_size()
    assert tok.token_to_id(EOT) == 0
    # Byte-level BPE must round-trip arbitrary text.
    sample = "def f(x):\n    return x * 42  # ünïcödé ✓"
    assert tok.decode(tok.encode(sample).ids) == sample
    return tok


# ------------------------------------------------------------------ models


def model_specs():
    common = dict(bos_token_id=0, eos_token_id=0, pad_token_id=None, initializer_range=INIT_STD)
    return [
        dict(
            name="llama-gqa",
            dtype="fp32",
            shard="200KB",
            config=LlamaConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                intermediate_size=176,
                num_hidden_layers=2,
                num_attention_heads=HEADS,
                num_key_value_heads=2,
                head_dim=HEAD_DIM,
                max_position_embeddings=MAX_POS,
                rope_theta=10000.0,
                rms_norm_eps=1e-6,
                hidden_act="silu",
                tie_word_embeddings=False,
                attention_bias=False,
                mlp_bias=False,
                **common,
            ),
        ),
        dict(
            name="pythia",
            dtype="fp16",
            shard=None,
            config=GPTNeoXConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                intermediate_size=4 * HIDDEN,
                num_hidden_layers=3,
                num_attention_heads=HEADS,
                rotary_pct=0.25,
                rotary_emb_base=10000,
                use_parallel_residual=True,
                hidden_act="gelu",
                max_position_embeddings=MAX_POS,
                layer_norm_eps=1e-5,
                tie_word_embeddings=False,
                **common,
            ),
        ),
        dict(
            name="falcon-mq",
            dtype="bf16",
            shard=None,
            config=FalconConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                num_hidden_layers=2,
                num_attention_heads=HEADS,
                new_decoder_architecture=False,
                multi_query=True,
                parallel_attn=True,
                alibi=False,
                bias=False,
                max_position_embeddings=MAX_POS,
                layer_norm_epsilon=1e-5,
                **common,
            ),
        ),
        dict(
            name="falcon-nda",
            dtype="fp32",
            shard=None,
            config=FalconConfig(
                vocab_size=VOCAB,
                hidden_size=HIDDEN,
                num_hidden_layers=2,
                num_attention_heads=HEADS,
                num_kv_heads=2,
                new_decoder_architecture=True,
                parallel_attn=True,
                alibi=False,
                bias=False,
                max_position_embeddings=MAX_POS,
                layer_norm_epsilon=1e-5,
                # older transformers have no such key: there new-arch = 2 LNs
                **({"num_ln_in_parallel_attn": 2} if hasattr(FalconConfig(), "num_ln_in_parallel_attn") else {}),
                **common,
            ),
        ),
        dict(
            name="mpt",
            dtype="fp32",
            shard=None,
            config=MptConfig(
                vocab_size=VOCAB,
                d_model=HIDDEN,
                n_heads=HEADS,
                n_layers=3,
                expansion_ratio=4,
                max_seq_len=MAX_POS,
                no_bias=True,
                layer_norm_epsilon=1e-5,
                attn_config={"alibi": True, "alibi_bias_max": 8},
                use_cache=True,
                **common,
            ),
        ),
    ]


HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def seed_of(name):
    return sum((i + 1) * ord(c) for i, c in enumerate(name))  # stable across runs


def make_model(spec):
    torch.manual_seed(seed_of(spec["name"]))
    model = AutoModelForCausalLM.from_config(spec["config"], attn_implementation="eager")
    model.eval()
    model.to(torch.float32)
    # Own deterministic init (independent of HF's init code): matrices
    # N(0, INIT_STD); norm weights 1 + N(0, 0.2); biases N(0, 0.1), so that a
    # mix-up of any norm/bias tensor shows in the log-probs.
    g = torch.Generator().manual_seed(seed_of(spec["name"]) * 7919)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if p.ndim == 1 and name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)
            elif p.ndim == 1:
                p.copy_(1.0 + torch.randn(p.shape, generator=g) * 0.2)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * INIT_STD)
        half = HALF.get(spec["dtype"])
        if half is not None:
            # Round to the storage type first: the goldens are fp32 math on
            # exactly the weights that the checkpoint holds.
            for p in model.parameters():
                p.copy_(p.to(half).to(torch.float32))
    return model


def rotary_info(model):
    """(inv_freq float64, rotary_ndims) of the model, or (None, 0) for ALiBi."""
    mods = [m for m in model.modules() if hasattr(m, "inv_freq") and isinstance(m.inv_freq, torch.Tensor)]
    if not mods:
        return None, 0
    assert len(mods) == 1, "expected one rotary embedding module"
    m = mods[0]
    assert float(getattr(m, "attention_scaling", 1.0)) == 1.0
    assert getattr(m, "rope_type", "default") == "default"
    inv = m.inv_freq.detach().to(torch.float64).clone()
    return inv, 2 * inv.numel()


def is_tied(model):
    return model.get_output_embeddings().weight.data_ptr() == model.get_input_embeddings().weight.data_ptr()


# ------------------------------------------------------------- golden math


def logprobs_of(logits, ids):
    """logits [n, V] fp32 for tokens ids[0..n-1]; returns log p(ids[t+1])."""
    lp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    n = min(logits.shape[0], len(ids) - 1)
    return [float(lp[t, ids[t + 1]]) for t in range(n)]


@torch.no_grad()
def plain_forward_logits(model, ids):
    out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].to(torch.float32)


@torch.no_grad()
def dense_case(model, ids):
    return logprobs_of(plain_forward_logits(model, ids), ids)


@torch.no_grad()
def recompute_case(model, ids, window):
    res = []
    for t in range(len(ids) - 1):
        ctx = ids[max(0, t - window + 1): t + 1]
        logits = plain_forward_logits(model, ctx)
        lp = torch.log_softmax(logits[-1].to(torch.float64), dim=-1)
        res.append(float(lp[ids[t + 1]]))
    return res


def kept_entries(t, sinks, window):
    """C_t without t itself (docs/cache-semantics.md); window=None: dense."""
    if window is None or t < sinks + window:
        return list(range(t))
    return list(range(sinks)) + list(range(t - window + 1, t))


def rerotate(keys, delta, inv_freq, rot_dims):
    """Rotate post-RoPE keys [L, H, D] (float64) by delta[L] positions, HF's
    rotate_half convention on the first rot_dims dims of every head."""
    ang = delta[:, None] * inv_freq[None, :]
    emb = torch.cat([ang, ang], dim=-1)[:, None, :]
    cos, sin = emb.cos(), emb.sin()
    kr, kp = keys[..., :rot_dims], keys[..., rot_dims:]
    half = rot_dims // 2
    rh = torch.cat([-kr[..., half:], kr[..., :half]], dim=-1)
    return torch.cat([kr * cos + rh * sin, kp], dim=-1)


def cache_layers(cache):
    if hasattr(cache, "layers"):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return [(cache.key_cache[i], cache.value_cache[i]) for i in range(len(cache.key_cache))]


@torch.no_grad()
def streaming_case(model, ids, sinks, window, n_steps=None, trace=None):
    """Token-by-token StreamingLLM cache on top of HF. window=None: dense.
    trace(t, kept, cache) is called before each step (for self-checks)."""
    inv_freq, rot_dims = rotary_info(model)
    rotary = inv_freq is not None
    # per token j: per layer (key [H, D] as HF cached it, value [H, D]); pos[j]
    store, pos = [], []
    res = []
    n_steps = len(ids) - 1 if n_steps is None else n_steps
    for t in range(n_steps):
        kept = kept_entries(t, sinks, window)
        L = len(kept)
        if L == 0:
            cache = DynamicCache()
        else:
            data = []
            n_layers = len(store[kept[0]])
            for layer in range(n_layers):
                k = torch.stack([store[j][layer][0] for j in kept])  # [L, H, D]
                v = torch.stack([store[j][layer][1] for j in kept])
                if rotary:
                    delta = torch.tensor([i - pos[j] for i, j in enumerate(kept)], dtype=torch.float64)
                    k = rerotate(k.to(torch.float64), delta, inv_freq, rot_dims).to(torch.float32)
                data.append((k.permute(1, 0, 2).unsqueeze(0).contiguous(),
                             v.permute(1, 0, 2).unsqueeze(0).contiguous()))
            cache = DynamicCache(data)
            assert cache.get_seq_length() == L
        if trace is not None:
            trace(t, kept, cache)
        kwargs = dict(input_ids=torch.tensor([[ids[t]]]), past_key_values=cache, use_cache=True)
        if rotary:
            kwargs["position_ids"] = torch.tensor([[L]])
        out = model(**kwargs)
        layers = cache_layers(out.past_key_values)
        entry = []
        for k, v in layers:
            assert k.shape[2] == L + 1, (k.shape, L)
            entry.append((k[0, :, L, :].clone(), v[0, :, L, :].clone()))
        store.append(entry)
        pos.append(L)
        lp = torch.log_softmax(out.logits[0, -1].to(torch.float64), dim=-1)
        res.append(float(lp[ids[t + 1]]))
    return res


def max_abs_diff(a, b):
    assert len(a) == len(b)
    return max(abs(x - y) for x, y in zip(a, b)) if a else 0.0


# ------------------------------------------------------------- self-checks


def one_layer_copy(model):
    cfg = copy.deepcopy(model.config)
    cfg.num_hidden_layers = 1
    m1 = AutoModelForCausalLM.from_config(cfg, attn_implementation="eager").eval().to(torch.float32)
    sd = model.state_dict()
    own = m1.state_dict()
    missing = [k for k in own if k not in sd]
    assert not missing, missing
    m1.load_state_dict({k: sd[k] for k in own}, strict=True)
    return m1


@torch.no_grad()
def check_positions_one_layer(model, ids, sinks, window, tol=2e-5):
    """In a 1-layer model the K/V of a token depend only on the token and its
    position, so the streamed cache (with re-rotated keys, or ALiBi from
    in-cache positions) must equal a fresh forward over C_t at positions
    0..|C_t|-1. This checks the rotation convention, inv_freq, rotary_ndims
    and the ALiBi claim for MPT."""
    m1 = one_layer_copy(model)
    got = streaming_case(m1, ids, sinks, window)
    worst = 0.0
    for t in range(len(ids) - 1):
        ctx = [ids[j] for j in kept_entries(t, sinks, window)] + [ids[t]]
        logits = plain_forward_logits(m1, ctx)
        ref = float(torch.log_softmax(logits[-1].to(torch.float64), dim=-1)[ids[t + 1]])
        worst = max(worst, abs(ref - got[t]))
    assert worst < tol, f"1-layer streamed vs fresh C_t forward: {worst}"
    return worst


@torch.no_grad()
def check_layer0_keys(model, ids, sinks, window, at_steps, tol=1e-5):
    """Layer-0 keys of the rebuilt cache equal HF's own layer-0 keys of a fresh
    forward over the kept tokens at positions 0..L-1."""
    worst = [0.0]

    def trace(t, kept, cache):
        if t not in at_steps or not kept:
            return
        out = model(input_ids=torch.tensor([[ids[j] for j in kept]]), use_cache=True)
        ref_k = cache_layers(out.past_key_values)[0][0]
        got_k = cache_layers(cache)[0][0]
        assert ref_k.shape == got_k.shape, (ref_k.shape, got_k.shape)
        worst[0] = max(worst[0], float((ref_k - got_k).abs().max()))

    streaming_case(model, ids, sinks, window, n_steps=max(at_steps) + 1, trace=trace)
    assert worst[0] < tol, f"layer-0 re-rotated keys differ from HF: {worst[0]}"
    return worst[0]


# ------------------------------------------------------------------ output


def safetensors_header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))


def save_checkpoint(model, spec, tok, model_dir):
    if os.path.isdir(model_dir):
        shutil.rmtree(model_dir)
    os.makedirs(model_dir)
    to_save = copy.deepcopy(model)
    half = HALF.get(spec["dtype"])
    if half is not None:
        to_save.to(half)
    kwargs = {}
    params = inspect.signature(to_save.save_pretrained).parameters
    if "safe_serialization" in params:
        kwargs["safe_serialization"] = True
    if spec["shard"]:
        kwargs["max_shard_size"] = spec["shard"]
    to_save.save_pretrained(model_dir, **kwargs)
    tok.save(os.path.join(model_dir, "tokenizer.json"))
    st = sorted(f for f in os.listdir(model_dir) if f.endswith(".safetensors"))
    assert st, "no safetensors written"
    if spec["shard"]:
        assert len(st) >= 2, st
        assert os.path.exists(os.path.join(model_dir, "model.safetensors.index.json"))
    want = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}[spec["dtype"]]
    for f in st:
        for name, info in safetensors_header(os.path.join(model_dir, f)).items():
            if name != "__metadata__":
                assert info["dtype"] == want, (f, name, info["dtype"])


@torch.no_grad()
def check_reload(model, model_dir, ids, dense):
    """The checkpoint on disk, upcast to fp32, is exactly the golden model."""
    re = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, attn_implementation="eager").eval()
    a, b = model.state_dict(), re.state_dict()
    assert set(a) == set(b), set(a) ^ set(b)
    for k in a:
        assert torch.equal(a[k], b[k]), f"reloaded tensor differs: {k}"
    d = max_abs_diff(dense_case(re, ids), dense)
    assert d == 0.0, f"reloaded checkpoint dense differs by {d}"


def write_golden(path, header, cases):
    lines = ["{"]
    for k, v in header.items():
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    lines.append(' "cases": [')
    for i, c in enumerate(cases):
        sep = "," if i + 1 < len(cases) else ""
        lines.append("  " + json.dumps(c, separators=(", ", ": ")) + sep)
    lines.append(" ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    back = json.loads(text)  # valid JSON, floats round-trip exactly
    for c, b in zip(cases, back["cases"]):
        assert c["logprobs"] == b["logprobs"]
    with open(path, "w") as f:
        f.write(text)


# -------------------------------------------------------------------- main


def run_model(spec, tok, out):
    name = spec["name"]
    model = make_model(spec)
    arch = type(model).__name__
    n_params = sum(p.numel() for p in model.parameters())
    g = torch.Generator().manual_seed(seed_of(name) + 12345)
    ids = torch.randint(0, VOCAB, (T,), generator=g).tolist()

    # --- golden cases
    results = {}
    for policy, s, w in CASES:
        if policy == "dense":
            lp = dense_case(model, ids)
        elif policy == "recompute":
            lp = recompute_case(model, ids, w)
        else:
            lp = streaming_case(model, ids, s, w)
        assert len(lp) == T - 1
        assert all(math.isfinite(x) and x <= 0.0 for x in lp), f"{name} {policy}: non-finite log-prob"
        results[(policy, s, w)] = lp
    dense = results[("dense", 0, 0)]

    # --- self-checks (before anything is written)
    cached_dense = streaming_case(model, ids, 0, None)  # (b) token-by-token, no eviction
    d_b = max_abs_diff(cached_dense, dense)
    assert d_b < 1e-5, f"{name}: cached dense vs plain forward {d_b}"
    sinks_wt = streaming_case(model, ids, 4, T)  # (a) never evicts
    d_a = max_abs_diff(sinks_wt, dense)
    assert d_a < 1e-5, f"{name}: sinks S=4 W=T vs dense {d_a}"
    s428, w32 = results[("sinks", 4, 28)], results[("window", 0, 32)]
    pre = max_abs_diff(s428[:32], w32[:32])
    assert pre == 0.0, f"{name}: sinks 4+28 and window 32 differ before t=32 ({pre})"
    post = max_abs_diff(s428[32:], w32[32:])
    assert post > 1e-3, f"{name}: sinks 4+28 and window 32 do not differ after t=32 ({post})"
    n_differ = sum(abs(x - y) > 1e-4 for x, y in zip(s428[32:], w32[32:]))
    assert n_differ > (T - 1 - 32) // 2, f"{name}: only {n_differ} tokens differ after t=32"
    for key in [("sinks", 4, 28), ("sinks", 1, 31), ("window", 0, 32), ("recompute", 0, 32)]:
        k = 32 if key[0] != "recompute" else key[2]
        d = max_abs_diff(results[key][:k], dense[:k])
        assert d < 1e-5, f"{name}: {key} differs from dense before the cache is full ({d})"
    # the S=1 and S=4 caches must differ too once they evict
    assert max_abs_diff(results[("sinks", 1, 31)][32:], s428[32:]) > 1e-3
    d_1l = check_positions_one_layer(model, ids, 4, 28)
    d_1l_w = check_positions_one_layer(model, ids, 0, 32)
    d_k0 = check_layer0_keys(model, ids, 4, 28, at_steps={40, 100, T - 2})

    # --- sensitivity: far from uniform, finite
    with torch.no_grad():
        logits = plain_forward_logits(model, ids)
        p = torch.softmax(logits.to(torch.float64), dim=-1)
        ent = float((-(p * p.clamp_min(1e-300).log()).sum(-1)).mean())
    assert torch.isfinite(logits).all()
    uniform = math.log(VOCAB)
    assert ent < uniform - 0.5, f"{name}: mean entropy {ent} too close to uniform {uniform}"
    assert ent > 0.5, f"{name}: mean entropy {ent}: distributions collapsed"

    # --- write
    model_dir = os.path.join(out, "models", name)
    save_checkpoint(model, spec, tok, model_dir)
    check_reload(model, model_dir, ids, dense)
    header = {
        "format": FORMAT,
        "version": VERSION,
        "model": name,
        "architecture": arch,
        "dtype": spec["dtype"],
        "generator": {"torch": torch.__version__, "transformers": transformers.__version__},
    }
    cases = [
        {"policy": policy, "sinks": s, "window": w, "ids": ids, "logprobs": results[(policy, s, w)]}
        for policy, s, w in CASES
    ]
    os.makedirs(os.path.join(out, "golden"), exist_ok=True)
    write_golden(os.path.join(out, "golden", f"{name}.json"), header, cases)

    size = sum(os.path.getsize(os.path.join(model_dir, f)) for f in os.listdir(model_dir))
    print(f"{name}: {arch} {spec['dtype']} params={n_params} tied_lm_head={is_tied(model)} "
          f"dir={size} bytes mean_entropy={ent:.3f} (uniform {uniform:.3f})")
    for policy, s, w in CASES:
        lp = results[(policy, s, w)]
        print(f"  {policy:9s} S={s:<2d} W={w:<3d} mean logprob {sum(lp) / len(lp):+.6f}")
    print(f"  max|sinks(S=4,W=T) - dense| = {d_a:.3e}   max|cached dense - dense| = {d_b:.3e}")
    print(f"  max|sinks 4+28 - window 32| t>=32: {post:.3e} ({n_differ} tokens > 1e-4)")
    print(f"  1-layer streamed vs fresh C_t: sinks 4+28 {d_1l:.3e}, window 32 {d_1l_w:.3e}; "
          f"layer-0 re-rotated keys vs HF {d_k0:.3e}")
    assert size < 1_500_000, f"{name}: fixture dir too large ({size} bytes)"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="fixtures root (tests/fixtures)")
    ap.add_argument("--only", nargs="*", help="model names to (re)generate")
    args = ap.parse_args()

    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, "
          f"tokenizers {tokenizers.__version__}, python {sys.version.split()[0]}")

    tok = build_tokenizer()
    specs = model_specs()
    if args.only:
        unknown = set(args.only) - {s["name"] for s in specs}
        if unknown:
            raise SystemExit(f"unknown model(s): {sorted(unknown)}")
        specs = [s for s in specs if s["name"] in args.only]
    for spec in specs:
        run_model(spec, tok, args.out)


if __name__ == "__main__":
    main()
