#!/usr/bin/env python3
"""Train a small Llama-architecture LM for streamsink, with checkpoint and resume.

One invocation trains for at most --time-limit seconds (so a run fits in one
10-minute command on the H100 host), checkpoints to --run/ckpt.pt, and
exports the current weights as a Hugging Face directory to --run/export. The
next invocation with the same --run resumes (model, optimizer, step, data
order), so a run spans several commands. The learning-rate schedule (linear
warm-up, cosine to 10%) runs over --total-seconds of training time (the
budget, stored in the checkpoint at the first invocation), so two models
trained side by side on one GPU get the same budget and a run that spans
several commands ends its schedule where its budget ends.

--extend-seconds continues a run whose budget is spent (from its checkpoint or,
with --init-from, from its export) with a second learning-rate phase: a fresh
warm-up to --phase-lr, then cosine to 10% over the added seconds. The phases
are stored in the checkpoint and in the export's config, so a phase too can
span several commands and machines.

--sink-token prepends the tokenizer's <|sink|> token (id 1) to every training
sample (StreamingLLM section 3.3): the sample is [sink] + 255 text tokens
instead of 256 text tokens, so both models see the same windows at the same
steps (the batch order depends only on --seed and the step) and the same
context length.

Every --eval-every steps the script logs to --run/log.jsonl: training loss,
held-out loss, and the attention-to-first-token metric per layer: the mean
(over held-out windows, heads, and query positions >= 16) attention weight
that a query gives to position 0 (the sink token for the sink-token model).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

SINK_ID = 1


def build_model(args, vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    cfg = LlamaConfig(
        vocab_size=vocab,
        hidden_size=args.hidden,
        intermediate_size=args.inter,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        num_key_value_heads=args.heads,
        max_position_embeddings=args.ctx,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=0,
        pad_token_id=None,
    )
    cfg._attn_implementation = "sdpa"
    torch.manual_seed(args.seed)
    return LlamaForCausalLM(cfg)


def batch_at(data: torch.Tensor, step: int, args, sink: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The batch of a step: the same random offsets for both models."""
    g = torch.Generator(device="cpu")
    g.manual_seed(args.seed * 1_000_003 + step)
    offs = torch.randint(0, data.numel() - args.ctx - 2, (args.batch,), generator=g)
    idx = offs[:, None] + torch.arange(args.ctx + 1)[None, :]
    w = data[idx.to(data.device)].long()  # (B, ctx+1) text tokens
    if sink:
        inp = torch.cat([torch.full_like(w[:, :1], SINK_ID), w[:, : args.ctx - 1]], dim=1)
        tgt = w[:, : args.ctx]
    else:
        inp, tgt = w[:, :-1], w[:, 1:]
    return inp, tgt


def lr_at(step: int, seconds: float, warmup: int, phases: list[dict]) -> float:
    """The learning rate in the schedule phase that holds `seconds` of training time: linear
    warm-up over `warmup` steps from the phase's first step, then cosine to 10% of the phase's
    peak at its end."""
    ph = next((q for q in phases if seconds < q["end_seconds"]), phases[-1])
    k = step - ph["start_step"]
    if k < warmup:
        return ph["peak_lr"] * (k + 1) / warmup
    p = min(1.0, max(0.0, (seconds - ph["start_seconds"]) / (ph["end_seconds"] - ph["start_seconds"])))
    return ph["peak_lr"] * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * p)))


def first_phase(budget: float, lr: float) -> list[dict]:
    return [{"start_step": 0, "start_seconds": 0.0, "end_seconds": budget, "peak_lr": lr}]


@torch.no_grad()
def evaluate(model, held: torch.Tensor, args, sink: bool, device) -> dict:
    """Held-out loss on fixed windows, and attention to position 0 per layer."""
    model.eval()
    n = args.eval_windows
    starts = torch.linspace(0, held.numel() - args.ctx - 2, n).long()
    idx = starts[:, None] + torch.arange(args.ctx + 1)[None, :]
    w = held[idx.to(held.device)].long().to(device)
    if sink:
        inp = torch.cat([torch.full_like(w[:, :1], SINK_ID), w[:, : args.ctx - 1]], dim=1)
        tgt = w[:, : args.ctx]
    else:
        inp, tgt = w[:, :-1], w[:, 1:]
    losses = []
    att0 = None
    model.set_attn_implementation("eager")
    try:
        for i in range(0, n, 16):
            with torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(input_ids=inp[i : i + 16], output_attentions=True)
            logits = out.logits.float()
            # Loss on text positions only (the sink model's first position predicts x0, as a BOS would).
            losses.append(F.cross_entropy(logits.reshape(-1, logits.size(-1)), tgt[i : i + 16].reshape(-1), reduction="sum").item())
            # attentions: per layer (B, H, T, T); queries >= 16, key 0.
            a = torch.stack([x[:, :, 16:, 0].float().mean(dim=(0, 2)) for x in out.attentions])  # (L, H)
            att0 = a * inp[i : i + 16].size(0) if att0 is None else att0 + a * inp[i : i + 16].size(0)
    finally:
        model.set_attn_implementation("sdpa")
    model.train()
    att0 = att0 / n
    return {
        "heldout_loss": sum(losses) / (n * args.ctx),
        "attn_to_first_mean": [round(v, 5) for v in att0.mean(dim=1).tolist()],
        "attn_to_first_max_head": [round(v, 5) for v in att0.max(dim=1).values.tolist()],
    }


def export(model, args, out_dir: str, tokenizer_path: str, sink: bool, meta: dict) -> None:
    """HF directory: config.json, bf16 safetensors shards of at most --shard-mib MiB, tokenizer.json."""
    from safetensors.torch import save_file

    tmp = out_dir + ".tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    cfg = model.config.to_dict()
    for k in ["_attn_implementation_autoset", "_name_or_path", "transformers_version", "dtype", "torch_dtype"]:
        cfg.pop(k, None)
    cfg["architectures"] = ["LlamaForCausalLM"]
    cfg["torch_dtype"] = "bfloat16"
    rp = cfg.get("rope_parameters") or {}
    cfg["rope_theta"] = rp.get("rope_theta", 10000.0)  # also at the top level, where older readers look
    if sink:
        cfg["streamsink"] = {"sink_token_id": SINK_ID}
    cfg["streamsink_training"] = meta
    with open(os.path.join(tmp, "config.json"), "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")
    sd = {k: v.detach().to("cpu", torch.bfloat16).contiguous() for k, v in model.state_dict().items()}
    limit = args.shard_mib * (1 << 20) - (1 << 16)
    shards: list[dict] = [{}]
    size = 0
    for k in sorted(sd):
        nb = sd[k].numel() * 2
        if shards[-1] and size + nb > limit:
            shards.append({})
            size = 0
        shards[-1][k] = sd[k]
        size += nb
    if len(shards) == 1:
        save_file(shards[0], os.path.join(tmp, "model.safetensors"), metadata={"format": "pt"})
    else:
        weight_map = {}
        for i, s in enumerate(shards):
            name = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file(s, os.path.join(tmp, name), metadata={"format": "pt"})
            weight_map.update({k: name for k in s})
        total = sum(v.numel() * 2 for v in sd.values())
        with open(os.path.join(tmp, "model.safetensors.index.json"), "w") as f:
            json.dump({"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2)
    shutil.copy(tokenizer_path, os.path.join(tmp, "tokenizer.json"))
    shutil.rmtree(out_dir, ignore_errors=True)
    os.rename(tmp, out_dir)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=".traindata", help="folder with train.u16, heldout.u16, tokenizer.json")
    ap.add_argument("--run", required=True, help="run folder (checkpoint, log, export)")
    ap.add_argument("--sink-token", action="store_true", help="prepend <|sink|> to every sample")
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--inter", type=int, default=704)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--heads", type=int, default=4)
    ap.add_argument("--ctx", type=int, default=256)
    ap.add_argument("--batch", type=int, default=96)
    ap.add_argument("--lr", type=float, default=1.5e-3)
    ap.add_argument("--wd", type=float, default=0.1)
    ap.add_argument("--warmup", type=int, default=300)
    ap.add_argument("--total-seconds", type=float, default=1200, help="training-time budget of the whole run (fixed at the first invocation)")
    ap.add_argument("--time-limit", type=float, default=540, help="seconds of training in this invocation")
    ap.add_argument("--eval-every", type=int, default=500)
    ap.add_argument("--eval-windows", type=int, default=64)
    ap.add_argument("--ckpt-every", type=float, default=120, help="seconds between checkpoints")
    ap.add_argument("--shard-mib", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--init-from", help="exported HF dir to start from when --run has no checkpoint")
    ap.add_argument("--extend-seconds", type=float, default=0.0,
                    help="when the run's budget is spent, add a learning-rate phase of this many seconds")
    ap.add_argument("--phase-lr", type=float, default=7.5e-4, help="peak learning rate of an added phase")
    ap.add_argument("--compile", action=argparse.BooleanOptionalAction, default=True)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()

    t_start = time.time()
    device = torch.device(args.device)
    os.makedirs(args.run, exist_ok=True)
    ckpt_path = os.path.join(args.run, "ckpt.pt")
    log_path = os.path.join(args.run, "log.jsonl")
    tok_path = os.path.join(args.data, "tokenizer.json")
    with open(tok_path) as f:
        tj = json.load(f)
    vocab = max(len(tj["model"]["vocab"]), max(t["id"] for t in tj["added_tokens"]) + 1)

    def load_u16(name: str) -> np.ndarray:
        path = os.path.join(args.data, name)
        if os.path.exists(path):
            return np.fromfile(path, dtype=np.uint16)
        import lzma

        with lzma.open(path + ".xz", "rb") as f:
            return np.frombuffer(f.read(), dtype=np.uint16)

    train = torch.from_numpy(load_u16("train.u16").astype(np.int32)).to(device)
    held = torch.from_numpy(load_u16("heldout.u16").astype(np.int32)).to(device)

    model = build_model(args, vocab).to(device)
    nparams = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": args.wd}, {"params": no_decay, "weight_decay": 0.0}],
        lr=args.lr, betas=(0.9, 0.95), eps=1e-8, fused=device.type == "cuda",
    )
    step = 0
    rewarm_from = None  # step at which a restart from exported weights began
    best = float("inf")
    train_seconds = 0.0
    phases = first_phase(args.total_seconds, args.lr)
    if os.path.exists(ckpt_path):
        ck = torch.load(ckpt_path, map_location=device, weights_only=False)
        model.load_state_dict(ck["model"])
        if ck.get("optimizer") is not None:
            opt.load_state_dict(ck["optimizer"])
        step, train_seconds = ck["step"], ck["train_seconds"]
        phases = ck.get("phases") or first_phase(ck["total_seconds"], args.lr)
        best = ck.get("best_heldout_loss", best)
        print(f"resumed at step {step} ({train_seconds:.0f} s trained), budget {phases[-1]['end_seconds']:.0f} s", flush=True)
    elif args.init_from:
        # Fallback resume from an exported (bf16) directory when the full checkpoint was lost:
        # weights and step come back, the optimizer state restarts.
        import glob

        from safetensors.torch import load_file

        sd = {}
        for fn in sorted(glob.glob(os.path.join(args.init_from, "*.safetensors"))):
            sd.update(load_file(fn))
        model.load_state_dict({k: v.float() for k, v in sd.items()})
        with open(os.path.join(args.init_from, "config.json")) as f:
            meta = json.load(f)["streamsink_training"]
        step, train_seconds = meta["steps"], meta["train_seconds"]
        phases = meta.get("phases") or first_phase(meta["budget_seconds"], meta["lr"])
        rewarm_from = step
        print(f"initialised from {args.init_from} at step {step} (fresh optimizer state, {args.warmup} steps of re-warm-up)", flush=True)
    if args.extend_seconds > 0 and train_seconds >= phases[-1]["end_seconds"] - 1.0:
        # The budget is spent: a new phase with its own warm-up (which covers a fresh optimizer too).
        phases = phases + [{"start_step": step, "start_seconds": train_seconds,
                            "end_seconds": train_seconds + args.extend_seconds, "peak_lr": args.phase_lr}]
        rewarm_from = None
        print(f"new learning-rate phase: {args.extend_seconds:.0f} s from step {step}, peak {args.phase_lr}", flush=True)
    total = phases[-1]["end_seconds"]
    print(f"params {nparams / 1e6:.2f}M, train tokens {train.numel()}, sink token {args.sink_token}", flush=True)

    fwd = torch.compile(model) if args.compile and device.type == "cuda" else model

    def save_ckpt():
        tmp = ckpt_path + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "train_seconds": train_seconds, "total_seconds": total, "phases": phases, "best_heldout_loss": best,
                    "args": vars(args)}, tmp)
        os.replace(tmp, ckpt_path)

    def log(rec: dict):
        with open(log_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
        print(json.dumps(rec), flush=True)

    model.train()
    last_ckpt = time.time()
    t_loop = time.time()
    seg_start_secs = train_seconds
    loss_acc, loss_n = 0.0, 0

    def meta() -> dict:
        return {"steps": step, "budget_seconds": total, "tokens_seen": step * args.batch * args.ctx,
                "batch": args.batch, "context": args.ctx, "lr": args.lr, "weight_decay": args.wd,
                "sink_token": args.sink_token, "train_seconds": round(train_seconds, 1), "params": nparams,
                "phases": phases}

    def do_step(f):
        lr = lr_at(step, train_seconds, args.warmup, phases)
        if rewarm_from is not None and step - rewarm_from < args.warmup:
            lr *= (step - rewarm_from + 1) / args.warmup  # fresh Adam moments: warm up again
        for g in opt.param_groups:
            g["lr"] = lr
        inp, tgt = batch_at(train, step, args, args.sink_token)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = f(input_ids=inp).logits
        loss = F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), tgt.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss.detach()

    def eval_and_log():
        nonlocal best, loss_acc, loss_n
        try:
            ev = evaluate(model, held, args, args.sink_token, device)
        except Exception as e:  # never lose a run to the metric
            log({"step": step, "eval_error": f"{type(e).__name__}: {e}"})
            return
        log({"step": step, "tokens": step * args.batch * args.ctx, "train_seconds": round(train_seconds, 1),
             "lr": lr_at(max(0, step - 1), train_seconds, args.warmup, phases),
             "train_loss": round(float(loss_acc) / loss_n, 4) if loss_n else None,
             "heldout_loss": round(ev["heldout_loss"], 4), "heldout_ppl": round(math.exp(ev["heldout_loss"]), 3),
             "attn_to_first_mean": ev["attn_to_first_mean"], "attn_to_first_max_head": ev["attn_to_first_max_head"]})
        loss_acc, loss_n = 0.0, 0
        if step > 0 and ev["heldout_loss"] < best:
            best = ev["heldout_loss"]
            export(model, args, os.path.join(args.run, "best"), tok_path, args.sink_token, meta())

    if step == 0:
        eval_and_log()
    while train_seconds < total and time.time() - t_loop < args.time_limit:
        try:
            loss = do_step(fwd)
        except Exception as e:  # a torch.compile failure: carry on eagerly
            if fwd is model:
                raise
            print(f"torch.compile failed ({type(e).__name__}: {e}); continuing eagerly", flush=True)
            fwd = model
            loss = do_step(fwd)
        step += 1
        loss_acc += loss
        loss_n += 1
        train_seconds = seg_start_secs + (time.time() - t_loop)
        if step % args.eval_every == 0:
            eval_and_log()
        if time.time() - last_ckpt >= args.ckpt_every:
            save_ckpt()
            export(model, args, os.path.join(args.run, "export"), tok_path, args.sink_token, meta())
            last_ckpt = time.time()
    if step % args.eval_every != 0:
        eval_and_log()
    save_ckpt()
    export(model, args, os.path.join(args.run, "export"), tok_path, args.sink_token, meta())
    print(f"done: step {step}, {train_seconds:.0f}/{total:.0f} s trained, {time.time() - t_start:.0f} s wall", flush=True)


if __name__ == "__main__":
    main()
