"""Per-dimension retrieval quality from embeddings saved by embed_corpus.py (no re-encoding).

    python benchmarks/eval_saved_embeddings.py runs/embeddings/debian-mrl --split test --json out.json
    python benchmarks/eval_saved_embeddings.py runs/embeddings/debian-mrl --precision float32,int8,binary \
        --no-pca --json report.json && mrl select report.json --target 0.95 --max-bytes 64
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mrl.data.beir import load_qrels
from mrl.eval.evaluate import evaluate_embeddings


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("embeddings")
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--split", default="test")
    p.add_argument("--dims", default="32,64,128,256,384")
    p.add_argument("--precision", default="float32", help="e.g. float32,int8,binary (see mrl eval --precision)")
    p.add_argument("--no-pca", action="store_true")
    p.add_argument("--json")
    args = p.parse_args()
    src = Path(args.embeddings)
    xb = np.load(src / "corpus.npy")
    doc_ids = (src / "corpus_ids.txt").read_text().split("\n")[: len(xb)]
    xq = np.load(src / f"queries-{args.split}.npy")
    qids = (src / f"queries-{args.split}_ids.txt").read_text().split("\n")[: len(xq)]
    qrels = load_qrels(Path(args.data), args.split)
    report = evaluate_embeddings(xq, xb, qids, doc_ids, qrels, dims=[int(d) for d in args.dims.split(",")],
                                 baselines=[] if args.no_pca else ["pca"], model_name=str(src), split=args.split,
                                 precisions=args.precision.split(","))
    print(report.to_markdown())
    if args.json:
        report.write_json(args.json)


if __name__ == "__main__":
    main()
