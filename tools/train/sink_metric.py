#!/usr/bin/env python3
"""Attention-to-first-token metric of a shipped model, by layer (CPU is enough).

  python3 tools/train/sink_metric.py --model models/NAME --text FILE [--windows 32] [--ctx 256]

Cuts --windows evenly spaced windows of --ctx tokens from the text (with the
model's learned sink token, from config.json `streamsink.sink_token_id`, put
in front of each window in place of its first token, as in training), runs
the Hugging Face model with eager attention, and reports per layer the mean
attention weight from queries at positions >= 16 to position 0 (mean over
windows, heads and queries) and the same for the head that attends most.
`uniform_baseline` is the value uniform causal attention would give (mean
of 1/(q+1) over the queries), the level with no sink at all.

Writes MODEL/sink_metric.json (drawn by `streamsink plot`) and prints it.
"""
from __future__ import annotations

import argparse
import json
import os

import torch
from tokenizers import Tokenizer
from transformers import AutoModelForCausalLM


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--windows", type=int, default=32)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--first-query", type=int, default=16)
    ap.add_argument("--out", help="default: MODEL/sink_metric.json")
    args = ap.parse_args()

    with open(os.path.join(args.model, "config.json")) as f:
        cfg = json.load(f)
    sink = (cfg.get("streamsink") or {}).get("sink_token_id")
    tok = Tokenizer.from_file(os.path.join(args.model, "tokenizer.json"))
    with open(args.text, encoding="utf-8") as f:
        ids = tok.encode(f.read()).ids
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    n = len(ids) - args.ctx
    if n <= 0:
        raise SystemExit(f"{args.text}: {len(ids)} tokens, need more than {args.ctx}")
    starts = [round(i * n / max(1, args.windows - 1)) for i in range(args.windows)]
    acc = None
    with torch.no_grad():
        for s in starts:
            w = ids[s : s + args.ctx]
            if sink is not None:
                w = [sink] + w[: args.ctx - 1]
            out = model(input_ids=torch.tensor([w]), output_attentions=True)
            a = torch.stack([x[0, :, args.first_query :, 0].mean(dim=1) for x in out.attentions])  # (L, H)
            acc = a if acc is None else acc + a
    acc = acc / len(starts)
    q = torch.arange(args.first_query, args.ctx, dtype=torch.float64)
    res = {
        "model": os.path.basename(os.path.normpath(args.model)),
        "sink_token": sink,
        "text": os.path.basename(args.text),
        "windows": len(starts),
        "context": args.ctx,
        "first_query": args.first_query,
        "layers": acc.size(0),
        "attn_to_first_mean": [round(v, 5) for v in acc.mean(dim=1).tolist()],
        "attn_to_first_max_head": [round(v, 5) for v in acc.max(dim=1).values.tolist()],
        "uniform_baseline": round(float((1.0 / (q + 1)).mean()), 5),
    }
    out = args.out or os.path.join(args.model, "sink_metric.json")
    with open(out, "w") as f:
        json.dump(res, f, indent=1)
        f.write("\n")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
