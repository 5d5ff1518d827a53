"""Matryoshka adaptors on frozen embeddings vs plain truncation and PCA (issue 13).

    python benchmarks/embed_corpus.py --model minilm --splits dev,test,train --out runs/embeddings/base-minilm
    python benchmarks/adaptor_vs_baselines.py runs/embeddings/base-minilm --out runs/bench-adapt/base

Fits each adaptor kind unsupervised (corpus vectors only) and supervised (train query/document
pairs), on the embeddings as they are and on a copy under a fixed random rotation (``--rotate``,
a stand-in for an API model whose coordinates carry no order), then reports nDCG@10 per prefix
on ``--split`` (test; use dev for tuning) over the full corpus, with fit times, as JSON and Markdown.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mrl.adapt import FitConfig, fit_adaptor
from mrl.data.beir import load_qrels
from mrl.eval.evaluate import evaluate_embeddings


def load(src: Path, name: str) -> tuple[np.ndarray, list[str]]:
    x = np.load(src / f"{name}.npy")
    ids = (src / f"{name}_ids.txt").read_text().split("\n")[: len(x)]
    return x, ids


def train_pairs(src: Path, data: Path, xb: np.ndarray, doc_ids: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """(query vectors, positive document vectors), one row per judged train pair."""
    xq, qids = load(src, "queries-train")
    qrels = load_qrels(data, "train")
    row_of_doc = {d: i for i, d in enumerate(doc_ids)}
    qi, di = [], []
    for i, q in enumerate(qids):
        for d, rel in qrels.get(q, {}).items():
            if rel > 0 and d in row_of_doc:
                qi.append(i)
                di.append(row_of_doc[d])
    return xq[qi], xb[di]


def config(args: argparse.Namespace, kind: str, dims: tuple[int, ...]) -> FitConfig:
    return FitConfig(kind=kind, dims=dims, epochs=args.epochs, neighbours=args.neighbours, lr=args.lr,
                     pairwise_weight=args.pairwise_weight, neighbour_weight=args.neighbour_weight,
                     distribution_weight=args.distribution_weight, ranking_weight=args.ranking_weight,
                     batch_size=args.batch_size, seed=args.seed)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("embeddings", type=Path, help="folder written by benchmarks/embed_corpus.py")
    p.add_argument("--data", type=Path, default=Path("../shared/data/debian-pkgs"))
    p.add_argument("--split", default="test")
    p.add_argument("--dims", default="32,64,128,256,384")
    p.add_argument("--kinds", default="orthogonal,mlp")
    p.add_argument("--modes", default="unsupervised,supervised")
    p.add_argument("--rotate", default="0,1", help="0: embeddings as they are; 1: under a fixed random rotation")
    p.add_argument("--epochs", type=int, default=FitConfig.epochs)
    p.add_argument("--neighbours", type=int, default=FitConfig.neighbours)
    p.add_argument("--lr", type=float, default=FitConfig.lr)
    p.add_argument("--pairwise-weight", type=float, default=FitConfig.pairwise_weight)
    p.add_argument("--neighbour-weight", type=float, default=FitConfig.neighbour_weight)
    p.add_argument("--distribution-weight", type=float, default=FitConfig.distribution_weight)
    p.add_argument("--ranking-weight", type=float, default=FitConfig.ranking_weight)
    p.add_argument("--batch-size", type=int, default=FitConfig.batch_size)
    p.add_argument("--ceiling", default="", help="e.g. 64,128: also fit an unsupervised orthogonal adaptor for "
                   "each of these dims alone (all of the loss on it): what a prefix of that width can keep")
    p.add_argument("--ceiling-supervised", default="", help="the same, fitted on the train pairs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    dims = tuple(int(d) for d in args.dims.split(","))
    xb, doc_ids = load(args.embeddings, "corpus")
    xq, qids = load(args.embeddings, f"queries-{args.split}")
    qrels = load_qrels(args.data, args.split)
    wants_pairs = "supervised" in args.modes or args.ceiling_supervised
    pq, pd = train_pairs(args.embeddings, args.data, xb, doc_ids) if wants_pairs else (None, None)
    args.out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"args": {k: str(v) for k, v in vars(args).items()}, "runs": {}}
    lines = []
    for rotate in [int(r) for r in args.rotate.split(",")]:
        rot = np.linalg.qr(np.random.default_rng(1234).normal(size=(xb.shape[1],) * 2))[0].astype(np.float32)
        if not rotate:
            rot = np.eye(xb.shape[1], dtype=np.float32)

        def tx(x: np.ndarray | None, rot: np.ndarray = rot) -> np.ndarray | None:
            return None if x is None else x @ rot
        adaptors, fit_s = {}, {}
        for mode in args.modes.split(","):
            for kind in args.kinds.split(","):
                cfg = config(args, kind, dims)
                t0 = time.perf_counter()
                sup = mode == "supervised"
                adaptor = fit_adaptor(tx(xb), cfg, tx(pq) if sup else None, tx(pd) if sup else None)
                name = f"{kind}-{mode}"
                fit_s[name] = round(time.perf_counter() - t0, 1)
                adaptor.save(args.out / f"{name}-rot{rotate}")
                adaptors[name] = adaptor
                print(f"rotate={rotate} {name}: fit {fit_s[name]} s; held-out {adaptor.info['scores']}", flush=True)
        ceilings = [(int(c), False) for c in args.ceiling.split(",") if c]
        ceilings += [(int(c), True) for c in args.ceiling_supervised.split(",") if c]
        for d, sup in ceilings if rotate == 0 else []:
            t0 = time.perf_counter()
            name = f"orthogonal-{'supervised' if sup else 'unsupervised'}-only-{d}"
            adaptors[name] = fit_adaptor(xb, config(args, "orthogonal", (d,)), pq if sup else None, pd if sup else None)
            fit_s[name] = round(time.perf_counter() - t0, 1)
        report = evaluate_embeddings(tx(xq), tx(xb), qids, doc_ids, qrels, dims, ["pca"],
                                     f"{args.embeddings}{' rotated' if rotate else ''}", "debian-pkgs", args.split,
                                     adaptors=adaptors)
        tag = f"rot{rotate}"
        report.write_json(args.out / f"report-{args.split}-{tag}.json")
        summary["runs"][tag] = {"fit_s": fit_s, "ndcg@10": {m: {d: r[d]["ndcg@10"] for d in r}
                                                            for m, r in report.results.items()}}
        full = report.results["truncate"][xb.shape[1]]["ndcg@10"]
        lines += [f"### {args.split}, {'rotated' if rotate else 'as is'} (reference: frozen 384-dim {full:.4f})", "",
                  "| method | " + " | ".join(map(str, report.dims)) + " | fit s |",
                  "|---|" + "---|" * (len(report.dims) + 1)]
        for method, by_dim in report.results.items():
            cells = [f"{by_dim[d]['ndcg@10']:.4f} ({by_dim[d]['ndcg@10'] / full:.1%})" for d in report.dims]
            lines.append(f"| {method} | " + " | ".join(cells) + f" | {fit_s.get(method, '')} |")
        lines.append("")
        print("\n".join(lines[-(len(report.results) + 4):]), flush=True)
    (args.out / f"summary-{args.split}.json").write_text(json.dumps(summary, indent=2) + "\n")
    (args.out / f"summary-{args.split}.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
