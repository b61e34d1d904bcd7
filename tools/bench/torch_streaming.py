#!/usr/bin/env python3
"""PyTorch + transformers baseline of the StreamingLLM cache (issue #3).

The speed reference the native CUDA engine is compared against: a
random-weight Llama-2-7B-shaped model (or Mistral-7B-shaped, for GQA) in
bf16 on the GPU, decoding B sessions in lockstep with an attention-sink
cache of S sink tokens + the W most recent tokens (default 4 + 2044), built
on transformers' own Cache API.

The cache (`SinkWindowLayer`, one per decoder layer, in a `Cache` subclass):
  * Positions are in-cache positions: a token gets the cache length before
    it, capped at S+W-1 (sinks at 0..S-1, window at S..S+W-1); the caller
    passes them as position_ids, HF's attention applies RoPE with them and
    hands the post-RoPE key to `Cache.update`.
  * When a token would overflow S+W slots, `update` drops the oldest window
    entry. Two key layouts (--keys):
      post-rope (default): keys kept as HF produced them; the remaining window
        is re-rotated by -1 position, one batched GEMM with the (d x d) RoPE
        matrix of delta -1 (HF's former SinkCache layout).
      pre-rope: the new key is rotated back to pre-RoPE once, and the whole
        cache is rotated to positions 0..L-1 for every forward (the paper's
        reference code, and docs/cache-semantics.md).
    Both rebuild K/V with torch.cat each step, as DynamicLayer does.
  * Numerics: cumulative re-rotation (post-rope) is exact in fp32 (--check)
    but lossy in bf16: a shift smaller than half an ulp rounds back, so slow
    RoPE frequencies stop turning. Measured on CPU, a key shifted 2044 times
    one position at a time, rounding to bf16 after each (even with exact
    rotation math), is off by ~80% (median relative error) against one direct
    rotation. Speed does not depend on it; pre-rope has no such drift.

Usage (on the H100 host; no network needed, only torch + transformers):
  python3 tools/bench/torch_streaming.py --out bench/results/torch-streaming.json
  python3 tools/bench/torch_streaming.py --shape mistral-7b --batches 1,32 --out ...
  python3 tools/bench/torch_streaming.py --keys pre-rope --out ...
  python3 tools/bench/torch_streaming.py --tiny --out /tmp/tiny.json     # CPU smoke test
  python3 tools/bench/torch_streaming.py --check                         # correctness, CPU fp32

`--check` verifies both layouts on tiny random models in fp32 against two
independent references (see run_check), within 1e-4 per log-prob.
"""

import argparse
import gc
import json
import sys
import time

import torch
import transformers
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.cache_utils import Cache, DynamicCache, DynamicLayer
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

SHAPES = {
    "llama-2-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008, vocab_size=32000),
    "mistral-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=8, intermediate_size=14336, vocab_size=32000),
    # Same structure as the real shapes (GQA 2:1), small enough for a CPU.
    "tiny": dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=128, vocab_size=384),
}

CHECK_TOLERANCE = 1e-4

KEY_LAYOUTS = {
    "post-rope": "keys cached after RoPE; on eviction the window is re-rotated by -1 position (HF's former SinkCache)",
    "pre-rope": "keys cached before RoPE; the whole cache is rotated to in-cache positions 0..L-1 at every step "
                "(the paper's reference code)",
}


# ----------------------------------------------------------------------------
# The StreamingLLM cache on transformers' Cache API
# ----------------------------------------------------------------------------

class Rope:
    """HF Llama's RoPE, for keys the cache moves or stores.

    HF rotates a key at position p as
        y = x * cos(p f) + rotate_half(x) * sin(p f),  rotate_half(x) = (-x2, x1),
    f the model's inverse frequencies over both halves. Rotating a post-RoPE
    key by delta positions is the same map with angle delta * f: for a fixed
    delta one (head_dim x head_dim) matrix M with, for frequency j (h = d/2),
        M[j, j] = M[j+h, j+h] = cos(delta f_j),  M[j, j+h] = -M[j+h, j] = sin(delta f_j).
    """

    def __init__(self, inv_freq, dtype, device):
        self.inv_freq = inv_freq.detach().to("cpu", torch.float64)
        self.dtype, self.device = dtype, device
        self.matrices = {}  # delta -> (high, residual or None)
        self.tables = None  # (cos, sin) for positions 0..n-1, each (n, d/2), in self.dtype

    def _shift_matrices(self, delta):
        if delta not in self.matrices:
            half = self.inv_freq.numel()
            angle = delta * self.inv_freq
            j = torch.arange(half)
            m = torch.zeros(2 * half, 2 * half, dtype=torch.float64)
            m[j, j] = m[j + half, j + half] = torch.cos(angle)
            m[j, j + half] = torch.sin(angle)
            m[j + half, j] = -torch.sin(angle)
            high = m.to(self.dtype)
            # In bf16/fp16 the rounded matrix is not a rotation (its cos^2+sin^2
            # is off by up to ~1e-3, compounded over the W evictions a key lives
            # through); the residual, applied in the same fp32 accumulation,
            # restores it to ~1e-5.
            residual = None
            if torch.finfo(self.dtype).bits < 32:
                residual = (m - high.to(torch.float64)).to(self.dtype).to(self.device)
            self.matrices[delta] = (high.to(self.device), residual)
        return self.matrices[delta]

    def shift(self, keys, delta):
        """Post-RoPE keys (batch, kv_heads, n, head_dim), a strided slice of the
        cache, moved by delta positions. Returns a new tensor."""
        b, h, n, d = keys.shape
        high, residual = self._shift_matrices(delta)
        flat = keys.flatten(0, 1)  # (b*h, n, d): strided batches for bmm, no copy
        high = high.expand(b * h, d, d)
        if residual is None:
            out = torch.bmm(flat, high)
        else:
            out = torch.baddbmm(torch.bmm(flat, residual.expand(b * h, d, d)), flat, high)
        return out.view(b, h, n, d)

    def _cos_sin(self, positions, dtype):
        angle = positions.to("cpu", torch.float64)[:, None] * self.inv_freq[None, :]
        return torch.cos(angle).to(self.device, dtype), torch.sin(angle).to(self.device, dtype)

    @staticmethod
    def _rotate(x, cos, sin):
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)

    def unrotate(self, keys, positions):
        """Post-RoPE keys (batch, kv_heads, n, d) at `positions` (n,) back to
        pre-RoPE, computed in fp32 (only the new tokens go through here)."""
        cos, sin = self._cos_sin(positions, torch.float32)
        return self._rotate(keys.float(), cos, -sin).to(keys.dtype)

    def rotate_all(self, keys):
        """Pre-RoPE keys (batch, kv_heads, n, d) rotated to positions 0..n-1, in
        the cache dtype with tables rounded to it, as HF's own RoPE does."""
        n = keys.shape[-2]
        if self.tables is None or self.tables[0].shape[0] < n:
            self.tables = self._cos_sin(torch.arange(max(n, 1)), self.dtype)
        return self._rotate(keys, self.tables[0][:n], self.tables[1][:n])


class SinkWindowLayer(DynamicLayer):
    """One decoder layer's K/V: S attention sinks + the W latest tokens,
    contiguous along the sequence axis (sinks first), at in-cache positions.

    keys="post-rope": keys stored as HF hands them over (after RoPE), the
        window re-rotated by -n positions when n tokens are evicted (the
        layout of HF's former SinkCache).
    keys="pre-rope": keys stored before RoPE (the new token's key is rotated
        back from its position), and the whole cache rotated to positions
        0..L-1 for every forward (the paper's reference code, "pos shift").
    """

    def __init__(self, sinks, window, rope, keys):
        super().__init__()
        self.sinks, self.window, self.rope, self.pre_rope = sinks, window, rope, keys == "pre-rope"

    def update(self, key_states, value_states, *args, **kwargs):
        # key_states, value_states: (batch, kv_heads, new_tokens, head_dim), keys after RoPE
        if not self.is_initialized:
            self.lazy_initialization(key_states, value_states)
        held, new = self.get_seq_length(), key_states.shape[-2]
        capacity = self.sinks + self.window
        evict = max(held + new - capacity, 0)
        # Once the cache is full, per-token sink+window semantics hold for one
        # token at a time (the first tokens of a chunk would not see what the
        # chunk itself evicts); `feed` only overflows with single tokens.
        if evict and new != 1:
            raise ValueError(f"an overflowing update must be one token, got {new}")
        if self.pre_rope:
            first = held - evict  # the in-cache position of the first new token
            key_states = self.rope.unrotate(key_states, torch.arange(first, first + new))
        if evict:
            kept = slice(self.sinks + evict, held)
            kept_keys = self.keys[:, :, kept] if self.pre_rope else self.rope.shift(self.keys[:, :, kept], -evict)
            sinks = slice(0, self.sinks)
            self.keys = torch.cat([self.keys[:, :, sinks], kept_keys, key_states], dim=-2)
            self.values = torch.cat([self.values[:, :, sinks], self.values[:, :, kept], value_states], dim=-2)
        else:
            self.keys = torch.cat([self.keys, key_states], dim=-2)
            self.values = torch.cat([self.values, value_states], dim=-2)
        keys = self.rope.rotate_all(self.keys) if self.pre_rope else self.keys
        return keys, self.values

    def get_mask_sizes(self, query_length):
        # The mask is built before `update` evicts: never more than S+W keys.
        return min(self.get_seq_length() + query_length, self.sinks + self.window), 0

    def get_max_length(self):
        return self.sinks + self.window


class SinkWindowCache(Cache):
    def __init__(self, model, sinks, window, keys="post-rope"):
        rope = Rope(model.model.rotary_emb.inv_freq, model.dtype, model.device)
        super().__init__(layers=[SinkWindowLayer(sinks, window, rope, keys)
                                 for _ in range(model.config.num_hidden_layers)])
        self.sinks, self.window = sinks, window

    def next_positions(self, new_tokens):
        """In-cache position ids of the next `new_tokens` tokens: the cache length
        before each, capped at S+W-1 (a full cache evicts to make room)."""
        start = min(self.get_seq_length(), self.sinks + self.window - new_tokens)
        return torch.arange(start, start + new_tokens)


def feed(model, cache, input_ids, logits_to_keep=0):
    """Forward input_ids (batch, n) through the model with the sink cache;
    returns logits (batch, n or logits_to_keep, vocab)."""
    n = input_ids.shape[1]
    if cache.get_seq_length() + n > cache.sinks + cache.window and n != 1:
        raise ValueError("prefill longer than the cache; feed such a stream token by token")
    positions = cache.next_positions(n).to(input_ids.device).expand(input_ids.shape[0], n)
    out = model(input_ids=input_ids, position_ids=positions, past_key_values=cache,
                use_cache=True, logits_to_keep=logits_to_keep)
    return out.logits


# ----------------------------------------------------------------------------
# Model
# ----------------------------------------------------------------------------

def build_model(shape, device, dtype, init_std=0.02, norm_std=0.0, seed=0, layers=None):
    """A random-weight LlamaForCausalLM, created directly on `device` in `dtype`."""
    dims = dict(SHAPES[shape], **({"num_hidden_layers": layers} if layers else {}))
    config = LlamaConfig(**dims, rms_norm_eps=1e-5, max_position_embeddings=4096,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                         tie_word_embeddings=False, attn_implementation="sdpa")
    with torch.device(device):
        model = LlamaForCausalLM._from_config(config, dtype=dtype, attn_implementation="sdpa")
    generator = torch.Generator(device=device).manual_seed(seed)
    with torch.no_grad():
        # Weights are filled here whatever transformers' own init did: speed
        # does not depend on the values, but NaN/garbage memory must not leak in.
        for name, p in model.named_parameters():
            if p.ndim == 1:  # RMSNorm weights
                p.fill_(1.0)
                if norm_std:
                    p.add_(torch.randn(p.shape, generator=generator, device=device, dtype=p.dtype),
                           alpha=norm_std)
            else:
                p.normal_(0.0, init_std, generator=generator)
    return model.eval()


# ----------------------------------------------------------------------------
# --check: the cache against two independent references, CPU fp32
# ----------------------------------------------------------------------------
#
# The cache keeps each token's K/V as computed in the context that token saw
# (docs/cache-semantics.md, "cached"). From layer 1 on those differ from a
# from-scratch forward over the kept tokens, whose early window tokens would
# see a different context. So:
#   A. a one-layer model, where K/V depend only on the token and its position:
#      the cache must equal a from-scratch forward over the kept tokens at
#      in-cache positions (sinks 0..S-1, window S..);
#   B. a two-layer GQA model: the cache must equal a token-by-token run on a
#      plain DynamicCache rebuilt before every step from each kept token's K/V
#      as HF first produced them, the key moved from its original position to
#      its in-cache position by HF's own RoPE in one rotation (never
#      cumulatively, never through RopeShift).
# Both references are also run without moving the keys (no re-rotation), which
# must differ: the check would catch a missing or wrong re-rotation.

def kept_context(t, sinks, window):
    """Token indices the query of token t attends to (t is 0-based, included)."""
    if t + 1 <= sinks + window:
        return list(range(t + 1))
    return list(range(sinks)) + list(range(t - window + 1, t + 1))


def cache_logprobs(model, ids, sinks, window, prefill, keys):
    """Per-token log-softmax through SinkWindowCache: `prefill` tokens in one
    forward, then one token per step. (batch, length - 1, vocab), float64."""
    cache = SinkWindowCache(model, sinks, window, keys)
    logits = [feed(model, cache, ids[:, :prefill])]
    for t in range(prefill, ids.shape[1] - 1):
        logits.append(feed(model, cache, ids[:, t:t + 1]))
    return torch.log_softmax(torch.cat(logits, dim=1).double(), dim=-1)


def from_scratch_logprobs(model, ids, sinks, window, rerotate=True):
    """Reference A: for every t, one cache-less forward over C_t."""
    rows = []
    for t in range(ids.shape[1] - 1):
        ctx = kept_context(t, sinks, window)
        pos = torch.arange(len(ctx)) if rerotate else torch.tensor(ctx)
        logits = model(input_ids=ids[:, ctx], position_ids=pos.expand(ids.shape[0], -1),
                       use_cache=False).logits[:, -1:]
        rows.append(logits)
    return torch.log_softmax(torch.cat(rows, dim=1).double(), dim=-1)


def rebuilt_cache_logprobs(model, ids, sinks, window, rerotate=True):
    """Reference B: token by token on a DynamicCache rebuilt from original K/V."""
    layers = model.config.num_hidden_layers
    kv = {}  # token -> (position it was produced at, [(key, value) per layer])
    rows = []
    for t in range(ids.shape[1] - 1):
        past = kept_context(t, sinks, window)[:-1]
        cache = DynamicCache()
        if past:
            produced = torch.tensor([kv[j][0] for j in past])
            delta = (torch.arange(len(past)) - produced) if rerotate else torch.zeros(len(past), dtype=torch.long)
            for layer in range(layers):
                keys = torch.cat([kv[j][1][layer][0] for j in past], dim=-2)
                values = torch.cat([kv[j][1][layer][1] for j in past], dim=-2)
                cos, sin = model.model.rotary_emb(keys, delta[None])
                _, keys = apply_rotary_pos_emb(keys, keys, cos, sin)
                cache.update(keys, values, layer)
        logits = model(input_ids=ids[:, t:t + 1], position_ids=torch.tensor([[len(past)]]).expand(ids.shape[0], 1),
                       past_key_values=cache, use_cache=True).logits
        kv[t] = (len(past), [(cache.layers[layer].keys[:, :, -1:].clone(),
                              cache.layers[layer].values[:, :, -1:].clone()) for layer in range(layers)])
        rows.append(logits)
    return torch.log_softmax(torch.cat(rows, dim=1).double(), dim=-1)


def run_check(args):
    sinks, window, length, batch = 4, 12, 64, 2
    evictions = length - 1 - (sinks + window)  # tokens 0..length-2 are fed
    cases = [("A: 1 layer vs from-scratch forward over C_t", 1, from_scratch_logprobs),
             ("B: 2 layers vs DynamicCache rebuilt from original K/V", 2, rebuilt_cache_logprobs)]
    ok = True
    torch.manual_seed(0)
    ids = torch.randint(0, SHAPES["tiny"]["vocab_size"], (batch, length))
    with torch.inference_mode():
        for name, n_layers, reference in cases:
            # Weights N(0, 0.2) (HF's default 0.02 makes attention nearly uniform,
            # blind to positions) and norm weights 1 + N(0, 0.2).
            model = build_model("tiny", "cpu", torch.float32, init_std=0.2, norm_std=0.2, seed=1,
                                layers=n_layers)
            expected = reference(model, ids, sinks, window)
            unrotated = reference(model, ids, sinks, window, rerotate=False)
            sensitivity = (expected - unrotated)[:, sinks + window:].abs().max().item()
            print(f"{name} (batch {batch}, {length}-token streams, {evictions} evictions; "
                  f"without re-rotation the reference moves by up to {sensitivity:.2f})")
            ok &= sensitivity > 100 * CHECK_TOLERANCE
            for keys in ("post-rope", "pre-rope"):
                for prefill in (1, 9, sinks + window):
                    got = cache_logprobs(model, ids, sinks, window, prefill, keys)
                    err = (got - expected).abs().max().item()
                    ok &= err <= CHECK_TOLERANCE
                    print(f"  --keys {keys:9s} prefill {prefill:2d} + {length - 1 - prefill} decode steps: "
                          f"max |log-prob error| {err:.2e} over {got.numel()} log-probs")
    print(f"check {'PASSED' if ok else 'FAILED'} (tolerance {CHECK_TOLERANCE:g}, cache {sinks}+{window}, "
          f"fp32 CPU, torch {torch.__version__}, transformers {transformers.__version__})")
    return 0 if ok else 1


# ----------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------

class Clock:
    """CUDA events on a GPU, wall clock after a barrier elsewhere."""

    def __init__(self, device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def mark(self):
        if self.cuda:
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            return event
        return time.perf_counter()

    def elapsed_ms(self, start, end):
        self.sync()
        return start.elapsed_time(end) if self.cuda else (end - start) * 1e3


def progress(label, i, n):
    if sys.stdout.isatty():
        print(f"\r  {label} {i}/{n}", end="" if i < n else "\n", flush=True)


def bench_batch(model, batch, args, device, clock):
    sinks, window = args.sinks, args.window
    vocab = model.config.vocab_size
    gen = torch.Generator(device=device).manual_seed(batch)
    prompt = torch.randint(0, vocab, (batch, sinks + window), generator=gen, device=device)
    cache = SinkWindowCache(model, sinks, window, args.keys)
    if clock.cuda:
        torch.cuda.reset_peak_memory_stats()
    print(f"batch {batch}: prefill {sinks + window} tokens per session", flush=True)
    with torch.inference_mode():
        start = clock.mark()
        logits = feed(model, cache, prompt, logits_to_keep=1)
        prefill_ms = clock.elapsed_ms(start, clock.mark())
        token = logits[:, -1].argmax(-1, keepdim=True)
        prefill_peak = torch.cuda.max_memory_allocated() / 1e9 if clock.cuda else None
        del logits
        # From here every step evicts the oldest window token.
        for i in range(args.warmup):
            token = feed(model, cache, token)[:, -1].argmax(-1, keepdim=True)
            progress("warm-up", i + 1, args.warmup)
        clock.sync()
        if clock.cuda:
            torch.cuda.reset_peak_memory_stats()
        if not sys.stdout.isatty():
            print(f"  timing {args.steps} decode steps", flush=True)
        start = clock.mark()
        for i in range(args.steps):
            token = feed(model, cache, token)[:, -1].argmax(-1, keepdim=True)
            progress("decode", i + 1, args.steps)
        total_ms = clock.elapsed_ms(start, clock.mark())
    assert cache.get_seq_length() == sinks + window
    ms = total_ms / args.steps
    result = {
        "batch": batch,
        "ms_per_step": round(ms, 4),
        "tokens_per_s": round(batch * 1e3 / ms, 2),
        "peak_mem_gb": round(torch.cuda.max_memory_allocated() / 1e9, 3) if clock.cuda else None,
        "prefill_ms": round(prefill_ms, 2),
        "prefill_peak_mem_gb": round(prefill_peak, 3) if prefill_peak is not None else None,
    }
    print(f"  batch {batch}: {ms:.3f} ms/step, {result['tokens_per_s']:.1f} tokens/s, "
          f"peak {result['peak_mem_gb']} GB (prefill {prefill_ms:.1f} ms, peak {result['prefill_peak_mem_gb']} GB)",
          flush=True)
    del cache, token
    gc.collect()
    if clock.cuda:
        torch.cuda.empty_cache()
    return result


def bench_recompute(model, window, args, device, clock):
    """The sliding-window-with-recomputation baseline: one forward over the
    last `window` tokens (no cache, last logits only) per generated token."""
    ids = torch.randint(0, model.config.vocab_size, (1, window), device=device)
    with torch.no_grad():
        for _ in range(2):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        reps = max(3, args.steps // 4)
        start = clock.mark()
        for _ in range(reps):
            model(input_ids=ids, use_cache=False, logits_to_keep=1)
        end = clock.mark()
    ms = clock.elapsed_ms(start, end) / reps
    print(f"recompute W={window}: {ms:.2f} ms per token", flush=True)
    return {"window": window, "ms_per_token": ms}


def run_bench(args):
    shape = "tiny" if args.tiny else args.shape
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() and not args.tiny else "cpu"))
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[
        args.dtype or ("bf16" if device.type == "cuda" else "fp32")]
    batches = [int(b) for b in args.batches.split(",")]
    clock = Clock(device)
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "none (CPU)"
    print(f"{shape} {str(dtype).removeprefix('torch.')} on {gpu}; torch {torch.__version__}, "
          f"transformers {transformers.__version__}; cache {args.sinks}+{args.window}, {args.keys} keys", flush=True)

    start = time.perf_counter()
    model = build_model(shape, device, dtype)
    clock.sync()
    attn = model.config._attn_implementation
    params = sum(p.numel() for p in model.parameters())
    print(f"model: {params / 1e6:,.1f}M parameters, attention {attn}, built in "
          f"{time.perf_counter() - start:.1f} s", flush=True)

    results = [bench_batch(model, b, args, device, clock) for b in batches]
    recompute = [bench_recompute(model, w, args, device, clock) for w in
                 ([int(x) for x in args.recompute.split(",")] if args.recompute else [])]
    report = {
        "gpu": gpu,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": sys.version.split()[0],
        "shape": {"name": shape, **SHAPES[shape], "parameters": params},
        "dtype": str(dtype).removeprefix("torch."),
        "attn_implementation": attn,
        "cache": {"sinks": args.sinks, "window": args.window,
                  "keys": args.keys, "layout": KEY_LAYOUTS[args.keys]},
        "method": {"prefill_tokens": args.sinks + args.window, "warmup_steps": args.warmup,
                   "timed_steps": args.steps, "regime": "cache full, every step evicts",
                   "timer": "CUDA events" if clock.cuda else "wall clock"},
        "results": results,
        "recompute": recompute,
    }
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
            f.write("\n")
        print(f"wrote {args.out}")
    print("batch  ms/step  tokens/s  peak GB")
    for r in results:
        print(f"{r['batch']:5d}  {r['ms_per_step']:7.2f}  {r['tokens_per_s']:8.1f}  {r['peak_mem_gb']}")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shape", choices=["llama-2-7b", "mistral-7b"], default="llama-2-7b")
    p.add_argument("--tiny", action="store_true", help="tiny random model on CPU (smoke test)")
    p.add_argument("--batches", default="1,32", help="comma-separated batch sizes (default 1,32)")
    p.add_argument("--steps", type=int, default=32, help="timed decode steps (default 32)")
    p.add_argument("--warmup", type=int, default=4, help="untimed decode steps first (default 4)")
    p.add_argument("--keys", choices=list(KEY_LAYOUTS), default="post-rope",
                   help="cache layout (default post-rope): " + "; ".join(f"{k}: {v}" for k, v in KEY_LAYOUTS.items()))
    p.add_argument("--sinks", type=int, default=4)
    p.add_argument("--window", type=int, default=2044)
    p.add_argument("--device", help="default: cuda if available (cpu with --tiny)")
    p.add_argument("--dtype", choices=["bf16", "fp16", "fp32"], help="default: bf16 on cuda, fp32 on cpu")
    p.add_argument("--out", help="JSON report path")
    p.add_argument("--recompute", default="", help="also time the recompute baseline at these windows, e.g. 256,1024")
    p.add_argument("--check", action="store_true",
                   help="verify the cache against a from-scratch recompute (CPU, fp32) and exit")
    args = p.parse_args()
    if args.check:
        return run_check(args)
    return run_bench(args)


if __name__ == "__main__":
    sys.exit(main())
