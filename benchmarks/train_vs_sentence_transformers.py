"""mrl train vs sentence-transformers, same base model, data, batch size, steps and seed.

Runs (each cached under --out, so an interrupted benchmark picks up where it stopped):
  base        all-MiniLM-L6-v2 as shipped (plain truncation)
  st-mnrl     sentence-transformers MultipleNegativesRankingLoss (no Matryoshka)
  st-mrl      sentence-transformers MatryoshkaLoss(MultipleNegativesRankingLoss)
  st-trainer-mrl-loss  mrl's MatryoshkaInfoNCELoss through the sentence-transformers trainer
  mrl-equal   mrl train, equal weights, no self-distillation (the peer's objective)
  mrl*        mrl train with --weights/--distill-weight/--head (any other name starting with
              "mrl" takes these options too, so variants can be cached side by side)
Then a clean back-to-back timing (--overhead-steps each): st-mrl through the sentence-transformers
trainer, mrl with 5 dims, and mrl with the full dim alone (same batches: the Matryoshka overhead).

Every model is evaluated on the dev and test queries of debian-pkgs over one corpus
(all judged dev/test documents plus random others up to --eval-docs; 0 = the full corpus),
encoded once per model.

    python benchmarks/train_vs_sentence_transformers.py --steps 261 --eval-docs 15000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402

from mrl.data.beir import BeirDataset, load_beir  # noqa: E402
from mrl.data.pairs import pairs_from_beir  # noqa: E402
from mrl.encoders.model import encode, load_model, resolve_model_path  # noqa: E402
from mrl.eval.evaluate import evaluate_embeddings, subsample  # noqa: E402

DIMS = [32, 64, 128, 256, 384]


def eval_corpus(data: str, max_docs: int, max_queries: int, seed: int
                ) -> tuple[dict[str, str], dict[str, BeirDataset]]:
    splits = {s: load_beir(data, s) for s in ("dev", "test")}
    corpus = splits["test"].corpus  # every split shares the one corpus
    if max_queries:
        splits = {s: subsample(ds, max_queries, 0, seed) for s, ds in splits.items()}
    if max_docs and max_docs < len(corpus):
        judged = sorted({d for ds in splits.values() for j in ds.qrels.values() for d in j})
        max_docs = max(max_docs, len(judged))
        others = sorted(set(corpus) - set(judged))
        rng = np.random.default_rng(seed)
        picked = rng.choice(len(others), size=max(0, max_docs - len(judged)), replace=False)
        corpus = {d: corpus[d] for d in judged + [others[i] for i in sorted(picked)]}
    return corpus, splits


def evaluate_model(path: str, label: str, corpus: dict[str, str], splits: dict[str, BeirDataset],
                   max_seq_length: int) -> dict:
    model = load_model(path, max_seq_length=max_seq_length)
    doc_ids = list(corpus)
    t0 = time.perf_counter()
    xb = encode(model, [corpus[d] for d in doc_ids], 64, show_progress=True, kind="document")
    out: dict = {"encode_docs_per_s": len(doc_ids) / (time.perf_counter() - t0)}
    for split, ds in splits.items():
        qids = list(ds.queries)
        xq = encode(model, [ds.queries[q] for q in qids], 128, kind="query")
        report = evaluate_embeddings(xq, xb, qids, doc_ids, ds.qrels, DIMS, ("pca",) if label == "base" else (),
                                     label, ds.name, split)
        out[split] = report.to_dict()
    return out


def train_st(kind: str, args: argparse.Namespace, out: Path, steps: int | None = None) -> dict:
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss
    from sentence_transformers.sentence_transformer.training_args import BatchSamplers

    model = load_model("minilm", max_seq_length=args.max_seq_length)
    pairs = pairs_from_beir(args.data, "train")
    train_ds = Dataset.from_dict({"anchor": pairs.anchors, "positive": pairs.positives})
    loss = MultipleNegativesRankingLoss(model)
    if kind == "st-mrl":
        loss = MatryoshkaLoss(model, loss, DIMS)
    elif kind == "st-trainer-mrl-loss":  # mrl's loss through the peer's trainer: isolates loss vs loop
        from mrl.losses import MatryoshkaInfoNCELoss

        loss = MatryoshkaInfoNCELoss(model, DIMS)
    targs = SentenceTransformerTrainingArguments(
        output_dir=str(out / "trainer"), per_device_train_batch_size=args.batch_size, max_steps=steps or args.steps,
        learning_rate=args.lr, warmup_ratio=args.warmup_ratio, seed=args.seed, save_strategy="no",
        report_to="none", logging_steps=10, batch_sampler=BatchSamplers.NO_DUPLICATES,
        dataloader_drop_last=True,
    )
    trainer = SentenceTransformerTrainer(model=model, args=targs, train_dataset=train_ds, loss=loss)
    metrics = trainer.train().metrics
    model.save(str(out / "model"))
    return {"train_time_s": metrics["train_runtime"], "steps": steps or args.steps}


def train_mrl(kind: str, args: argparse.Namespace, out: Path, steps: int | None = None,
              dims: list[int] | None = None) -> dict:
    from mrl.training.config import TrainConfig
    from mrl.training.loop import train

    tuned = kind != "mrl-equal"  # every other mrl* run takes the tuned options below
    cfg = TrainConfig(
        model="minilm", data=args.data, output=str(out / "model"), dims=tuple(dims or DIMS),
        weights=tuple(args.weights) if tuned and not dims else None,
        distill_weight=args.distill_weight if tuned else 0.0,
        head=args.head if tuned and not dims else "none", head_lr=args.head_lr,
        batch_size=args.batch_size, lr=args.lr, warmup_ratio=args.warmup_ratio,
        max_steps=steps or args.steps, max_seq_length=args.max_seq_length, seed=args.seed,
    )
    s = train(cfg)
    return {"train_time_s": s["train_time_s"], "steps": s["steps"], "config": s["config"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="../shared/data/debian-pkgs")
    p.add_argument("--out", default="runs/bench-train")
    p.add_argument("--steps", type=int, default=261)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--warmup-ratio", type=float, default=0.1)
    p.add_argument("--max-seq-length", type=int, default=128)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--weights", type=float, nargs=5, default=[4, 2, 1, 1, 1], help="mrl run, per dim 32..384")
    p.add_argument("--distill-weight", type=float, default=1.0, help="mrl run self-distillation weight")
    p.add_argument("--head", default="none", help="mrl run: 'linear' adds a linear head after pooling")
    p.add_argument("--head-lr", type=float, default=1e-3)
    p.add_argument("--eval-docs", type=int, default=0, help="eval corpus size (0: full corpus)")
    p.add_argument("--eval-queries", type=int, default=0, help="queries per split (0: all)")
    p.add_argument("--runs", default="base,st-mnrl,st-mrl,mrl,mrl-equal")
    p.add_argument("--overhead-steps", type=int, default=20, help="0 skips the overhead timing")
    args = p.parse_args()
    root = Path(args.out)
    root.mkdir(parents=True, exist_ok=True)
    corpus, splits = eval_corpus(args.data, args.eval_docs, args.eval_queries, args.seed)
    print(f"eval corpus: {len(corpus)} docs; dev {len(splits['dev'].queries)} / test "
          f"{len(splits['test'].queries)} queries", flush=True)
    results = {}
    for kind in args.runs.split(","):
        out = root / kind
        cached = out / "result.json"
        if cached.exists():
            results[kind] = json.loads(cached.read_text())
            continue
        out.mkdir(parents=True, exist_ok=True)
        print(f"== {kind}", flush=True)
        if kind == "base":
            info, path = {}, resolve_model_path("minilm")
        elif kind.startswith("st-"):
            info, path = train_st(kind, args, out), str(out / "model")
        else:
            info, path = train_mrl(kind, args, out), str(out / "model")
        info.update(evaluate_model(path, kind, corpus, splits, args.max_seq_length))
        info["eval_docs"] = len(corpus)
        cached.write_text(json.dumps(info, indent=2))
        results[kind] = info
    if args.overhead_steps and not (root / "overhead.json").exists():
        # Back to back on an otherwise idle machine: the step-time figures to quote.
        n = args.overhead_steps
        times = {"st-mrl": train_st("st-mrl", args, root / "timing-st-mrl", n)["train_time_s"]}
        for name, dims in (("full-dim-only", [384]), ("5-dims", DIMS)):
            times[name] = train_mrl("mrl-equal", args, root / f"timing-{name}", n, dims)["train_time_s"]
        (root / "overhead.json").write_text(json.dumps(times, indent=2))
    print_summary(results, root, args)


def print_summary(results: dict, root: Path, args: argparse.Namespace) -> None:
    lines = [f"steps={args.steps} batch={args.batch_size} lr={args.lr} seq={args.max_seq_length} "
             f"seed={args.seed} threads={os.environ.get('OMP_NUM_THREADS', 'default')}"]
    ref = results.get("st-mrl", {}).get("train_time_s")
    for split in ("dev", "test"):
        lines.append(f"\n{split}: nDCG@10 per dim (retention vs own full dim)")
        lines.append("| run | " + " | ".join(map(str, DIMS)) + " | s/step | step-time vs st-mrl |")
        lines.append("|---|" + "---|" * (len(DIMS) + 2))
        for kind, r in results.items():
            dims = r[split]["dims"]
            cells = [f"{dims[str(d)]['ndcg@10']:.4f} ({dims[str(d)]['ndcg@10_retention']:.1%})" for d in DIMS]
            t = r.get("train_time_s")
            step = f"{t / r['steps']:.2f}" if t else "-"
            ratio = f"{t / ref:.2f}x" if t and ref else "-"
            lines.append(f"| {kind} | " + " | ".join(cells) + f" | {step} | {ratio} |")
            if kind == "base" and "baselines" in r[split]:
                pca = r[split]["baselines"]["pca"]["dims"]
                cells = [f"{pca[str(d)]['ndcg@10']:.4f} ({pca[str(d)]['ndcg@10_retention']:.1%})" for d in DIMS]
                lines.append("| base + PCA | " + " | ".join(cells) + " | - | - |")
    overhead = root / "overhead.json"
    if overhead.exists():
        o = json.loads(overhead.read_text())
        lines.append(f"\nTiming, {args.overhead_steps} steps each, back to back: st-mrl {o['st-mrl']:.1f}s, "
                     f"mrl 5 dims {o['5-dims']:.1f}s (throughput {o['st-mrl'] / o['5-dims']:.2f}x the peer's), "
                     f"mrl full dim only {o['full-dim-only']:.1f}s (Matryoshka overhead "
                     f"{o['5-dims'] / o['full-dim-only'] - 1:+.1%})")
    text = "\n".join(lines)
    print(text)
    (root / "summary.md").write_text(text + "\n")


if __name__ == "__main__":
    sys.exit(main())
