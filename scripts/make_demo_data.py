"""Build the small BEIR set shipped inside the package (src/mrl/demo_data/debian-mini).

A seeded subset of ../shared/data/debian-pkgs: 2,048 train pairs, 300 test queries, and a
corpus of their documents plus 700 random others as distractors.

    python scripts/make_demo_data.py ../shared/data/debian-pkgs src/mrl/demo_data/debian-mini
"""

from __future__ import annotations

import gzip
import json
import sys
from pathlib import Path

import numpy as np

from mrl.data.beir import load_beir


def main(src: str, dst: str, n_train: int = 2048, n_test: int = 300, n_extra: int = 700, seed: int = 7) -> None:
    rng = np.random.default_rng(seed)
    train, test = load_beir(src, "train"), load_beir(src, "test")
    train_q = sorted(rng.choice(sorted(train.qrels), n_train, replace=False).tolist())
    test_q = sorted(rng.choice(sorted(test.qrels), n_test, replace=False).tolist())
    docs = {d for q in train_q for d in train.qrels[q]} | {d for q in test_q for d in test.qrels[q]}
    others = sorted(set(train.corpus) - docs)
    docs |= set(rng.choice(others, n_extra, replace=False).tolist())
    out = Path(dst)
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with gzip.open(out / "corpus.jsonl.gz", "wt", encoding="utf-8") as f:
        for d in sorted(docs):
            f.write(json.dumps({"_id": d, "title": "", "text": train.corpus[d]}) + "\n")
    with gzip.open(out / "queries.jsonl.gz", "wt", encoding="utf-8") as f:
        for q in train_q:
            f.write(json.dumps({"_id": q, "text": train.queries[q]}) + "\n")
        for q in test_q:
            f.write(json.dumps({"_id": q, "text": test.queries[q]}) + "\n")
    for name, ds, qids in (("train", train, train_q), ("test", test, test_q)):
        with open(out / "qrels" / f"{name}.tsv", "w") as f:
            f.write("query-id\tcorpus-id\tscore\n")
            for q in qids:
                for d, s in ds.qrels[q].items():
                    f.write(f"{q}\t{d}\t{s}\n")
    (out / "README.md").write_text(
        "# debian-mini\n\nA seeded subset of debian-pkgs (Debian 12 package descriptions; query = synopsis,\n"
        f"document = long description): {n_train} train pairs, {n_test} test queries, {len(docs)} documents.\n"
        "Built by scripts/make_demo_data.py. Descriptions are by the Debian maintainers and upstream authors.\n"
    )
    print(f"{len(docs)} docs, {n_train} train, {n_test} test -> {out}")


if __name__ == "__main__":
    main(*sys.argv[1:3])
