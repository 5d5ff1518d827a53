"""Encode a BEIR corpus and its queries once, for the index benchmarks (real embeddings).

    python benchmarks/embed_corpus.py --model runs/bench-train/mrl/model \
        --data ../shared/data/debian-pkgs --splits dev,test --out runs/embeddings/debian-mrl

Writes corpus.npy (n, D) float32, corpus_ids.txt, queries-<split>.npy and queries-<split>_ids.txt.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mrl.data.beir import load_beir, load_corpus
from mrl.encoders.model import encode, load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--splits", default="dev,test")
    p.add_argument("--out", required=True)
    p.add_argument("--batch-size", type=int, default=64)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model = load_model(args.model)
    for split in args.splits.split(","):
        ds = load_beir(args.data, split)
        qids = list(ds.queries)
        xq = encode(model, [ds.queries[q] for q in qids], args.batch_size, kind="query")
        np.save(out / f"queries-{split}.npy", xq)
        (out / f"queries-{split}_ids.txt").write_text("\n".join(qids) + "\n")
    if not (out / "corpus.npy").exists():
        corpus = load_corpus(args.data)
        t = time.perf_counter()
        xb = encode(model, list(corpus.values()), args.batch_size, show_progress=True, kind="document")
        np.save(out / "corpus.npy", xb)
        (out / "corpus_ids.txt").write_text("\n".join(corpus) + "\n")
        (out / "meta.json").write_text(json.dumps({"model": args.model, "data": args.data, "n": len(xb),
                                                   "encode_s": round(time.perf_counter() - t, 1)}) + "\n")


if __name__ == "__main__":
    main()
