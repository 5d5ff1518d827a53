"""English and cross-lingual nDCG@10 per prefix, with the corpus encoded once and kept.

    python benchmarks/eval_xling.py --model runs/epoch1/mrl-orth-w12 --embeddings runs/embeddings/epoch1-mrl-orth-w12 \
        --split test --out runs/xling/teacher-test.json

The corpus embeddings are read from <embeddings>/corpus.npy (+ corpus_ids.txt) or from a complete
`mrl encode --what corpus` folder (<embeddings>/shards.json) when there, else encoded and saved
there (the layout of benchmarks/embed_corpus.py, which the index benchmarks read).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from mrl.data import vectors as shards
from mrl.data.beir import load_beir
from mrl.encoders.model import encode, load_model
from mrl.eval.evaluate import evaluate_embeddings
from mrl.eval.xling import evaluate_cross_lingual, load_sets


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--embeddings", required=True)
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--xling", default="../shared/data/debian-xling")
    p.add_argument("--split", default="test")
    p.add_argument("--langs", default=None)
    p.add_argument("--dims", default="32,64,128,256,384")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    ds = load_beir(args.data, args.split)
    sets = load_sets(args.xling, args.langs.split(",") if args.langs else None, ds)
    model = load_model(args.model)
    emb = Path(args.embeddings)
    emb.mkdir(parents=True, exist_ok=True)
    if (emb / "corpus.npy").exists():
        xb, doc_ids = np.load(emb / "corpus.npy"), (emb / "corpus_ids.txt").read_text().split("\n")[:-1]
    elif (emb / shards.PLAN).exists():  # an `mrl encode --what corpus` folder (resumable shards)
        xb, ids = shards.load_folder(emb)
        doc_ids = [str(i) for i in ids.tolist()]
    else:
        doc_ids = list(ds.corpus)
        t = time.perf_counter()
        xb = encode(model, [ds.corpus[d] for d in doc_ids], 64, True, "documents", kind="document")
        print(f"encoded {len(doc_ids)} documents in {time.perf_counter() - t:.0f} s")
        np.save(emb / "corpus.npy", xb)
        (emb / "corpus_ids.txt").write_text("\n".join(doc_ids) + "\n")
    qids = list(ds.queries)
    xq = encode(model, [ds.queries[q] for q in qids], kind="query")
    np.save(emb / f"queries-{args.split}.npy", xq)
    (emb / f"queries-{args.split}_ids.txt").write_text("\n".join(qids) + "\n")
    dims = [int(d) for d in args.dims.split(",")]
    report = evaluate_embeddings(xq, xb, qids, doc_ids, ds.qrels, dims, model_name=args.model, dataset=ds.name,
                                 split=args.split)
    xl = evaluate_cross_lingual(model, ds, sets, dims, 64, False, args.model, (xb, doc_ids))
    doc = {**report.to_dict(), "cross_lingual": xl.to_dict()}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2) + "\n")
    print("english", {d: round(v["ndcg@10"], 4) for d, v in doc["dims"].items()})
    for row in xl.rows():
        print(" | ".join(row))


if __name__ == "__main__":
    main()
