"""Turn saved embeddings (benchmarks/embed_corpus.py's layout) into `mrl encode` folders a
precomputed `mrl train --teacher` reads, encoding the train queries with the same model.

    python benchmarks/teacher_from_saved.py --model runs/epoch1/mrl-orth-w12 \\
        --embeddings runs/embeddings/epoch1-mrl-orth-w12 --out runs/teacher-w12
    mrl train ... --teacher runs/teacher-w12/queries,runs/teacher-w12/corpus --distill kl
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from mrl.data import vectors as shards
from mrl.data.beir import load_beir
from mrl.encoders.model import encode, load_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--embeddings", required=True, help="folder with corpus.npy and corpus_ids.txt")
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--split", default="train")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    src, out = Path(args.embeddings), Path(args.out)
    xb = np.load(src / "corpus.npy")
    ids = (src / "corpus_ids.txt").read_text().split("\n")[: len(xb)]
    plan = shards.start(out / "corpus", args.model, f"{args.data} corpus", len(xb), 10_000)
    for i in range(plan.count):
        rows = plan.rows(i)
        shards.write_shard(plan, i, xb[rows], ids[rows])
    shards.finish(plan)
    ds = load_beir(args.data, args.split)
    qids = list(ds.queries)
    xq = encode(load_model(args.model), [ds.queries[q] for q in qids], 128, kind="query")
    plan = shards.start(out / "queries", args.model, f"{args.data} {args.split} queries", len(qids), 50_000)
    shards.write_shard(plan, 0, xq, qids)
    shards.finish(plan)
    print(f"wrote {out}/corpus ({len(xb)} x {xb.shape[1]}) and {out}/queries ({len(qids)} x {xq.shape[1]})")


if __name__ == "__main__":
    main()
