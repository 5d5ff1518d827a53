"""What export measures before it commits: agreement with PyTorch per prefix, and the Matryoshka guard.

Quantisation error is not spread evenly over the prefixes: a short prefix, renormalised, can lose
more than the full vector. So cosine to PyTorch is recorded per prefix, and with a calibration set
the nDCG@10 of every prefix is scored for PyTorch and each exported runtime (with the package's own
evaluation, :func:`mrl.eval.evaluate.evaluate_embeddings`); export refuses a runtime that loses more
than ``max_loss`` at any prefix unless the loss is accepted.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mrl.data.beir import BeirDataset
from mrl.errors import MrlError
from mrl.prefix import truncate

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

    from mrl.export.config import ExportConfig

AGREEMENT_TEXTS = 256  # queries and documents, half each, when no calibration set is given
DEMO_DATA = Path(__file__).resolve().parents[1] / "demo_data" / "debian-mini"


def load_calibration(cfg: ExportConfig) -> BeirDataset:
    """The calibration split (subsampled when asked), checked to hold queries and documents."""
    from mrl.data.beir import load_beir
    from mrl.eval.evaluate import subsample

    assert cfg.calibrate is not None
    data = load_beir(cfg.calibrate, cfg.split)
    if cfg.max_queries or cfg.max_docs:
        data = subsample(data, cfg.max_queries or len(data.queries), cfg.max_docs or len(data.corpus))
    empty = [what for what, texts in (("queries", data.queries), ("documents", data.corpus))
             if not any(t.strip() for t in texts.values())]
    if empty:
        raise MrlError(f"--calibrate {cfg.calibrate}: split {data.split!r} has no texts in its {empty[0]}")
    return data


def sample_texts(data: BeirDataset, n: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Up to ``n`` texts, half queries and half documents, seeded."""
    rng = random.Random(seed)
    queries, docs = list(data.queries.values()), list(data.corpus.values())
    half = n // 2
    return (rng.sample(queries, min(half, len(queries))),
            rng.sample(docs, min(n - min(half, len(queries)), len(docs))))


def agreement_texts(data: BeirDataset | None) -> tuple[list[str], list[str]]:
    """Texts to compare the runtimes on: the calibration set's, else the packaged Debian sample."""
    if data is None:
        from mrl.data.beir import load_corpus
        from mrl.data.io import find_file, read_jsonl

        queries = {str(r["_id"]): str(r["text"]) for _, r in read_jsonl(find_file(DEMO_DATA, "queries.jsonl"))}
        data = BeirDataset(load_corpus(DEMO_DATA), queries, {})
    return sample_texts(data, AGREEMENT_TEXTS)


def _encoders(model: SentenceTransformer, folder: Path, runtimes: list[str]) -> dict[str, Any]:
    from mrl.encoders.onnx_runtime import OnnxEncoder
    from mrl.encoders.runtime import TorchEncoder

    return {"torch": TorchEncoder(model), **{r: OnnxEncoder(folder, r) for r in runtimes}}


def agreement(model: SentenceTransformer, folder: Path, runtimes: list[str], texts: tuple[list[str], list[str]],
              cfg: ExportConfig) -> dict[str, Any]:
    """Cosine of each runtime's prefixes to PyTorch's: ``{runtime: {dim: {mean, min}}}`` plus the text count."""
    from mrl.export.config import resolve_dims

    encoders = _encoders(model, folder, runtimes)
    queries, docs = texts

    def both(name: str) -> np.ndarray:
        enc = encoders[name]
        return np.concatenate([enc.encode(queries, "query", cfg.batch_size),
                               enc.encode(docs, "document", cfg.batch_size)])  # (n, D)

    reference = both("torch")
    dims = resolve_dims(str(folder), reference.shape[1], cfg.dims)
    out: dict[str, Any] = {"texts": len(reference), "source": "calibration set" if cfg.calibrate else
                           "the packaged debian-mini sample"}
    for runtime in runtimes:
        x = both(runtime)
        per_dim = {}
        for d in dims:
            cos = (truncate(x, d) * truncate(reference, d)).sum(axis=1)  # (n,)
            per_dim[str(d)] = {"mean": round(float(cos.mean()), 6), "min": round(float(cos.min()), 6)}
        out[runtime] = {"cosine": per_dim, "max_abs_diff": float(np.abs(x - reference).max())}
    return out


def calibration_scores(model: SentenceTransformer, folder: Path, runtimes: list[str], data: BeirDataset,
                       cfg: ExportConfig) -> dict[str, Any]:
    """nDCG@10 per prefix of PyTorch and every runtime on the calibration split."""
    from mrl.eval.evaluate import evaluate_embeddings
    from mrl.export.config import resolve_dims

    encoders = _encoders(model, folder, runtimes)
    doc_ids, qids = list(data.corpus), list(data.queries)
    ndcg: dict[str, dict[str, float]] = {}
    dims: list[int] = []
    for name, enc in encoders.items():
        xb = enc.encode([data.corpus[d] for d in doc_ids], "document", cfg.batch_size)  # (nb, D)
        xq = enc.encode([data.queries[q] for q in qids], "query", cfg.batch_size)  # (nq, D)
        dims = dims or resolve_dims(str(folder), xb.shape[1], cfg.dims)
        report = evaluate_embeddings(xq, xb, qids, doc_ids, data.qrels, dims)
        ndcg[name] = {str(d): round(report.results["truncate"][d]["ndcg@10"], 6) for d in dims}
    return {"data": str(cfg.calibrate), "split": data.split, "n_queries": len(qids), "n_docs": len(doc_ids),
            "max_loss": cfg.max_loss, "accepted_loss": False, "ndcg@10": ndcg}


def guard(scores: dict[str, Any], cfg: ExportConfig) -> None:
    """Refuse (MrlError) a runtime losing more than ``cfg.max_loss`` nDCG@10 to PyTorch at any prefix,
    unless ``cfg.accept_loss``; the message names every such prefix and its loss, worst first."""
    torch_scores = scores["ndcg@10"]["torch"]
    losses = [(torch_scores[d] - s, runtime, d, s)
              for runtime, per_dim in scores["ndcg@10"].items() if runtime != "torch"
              for d, s in per_dim.items() if torch_scores[d] - s > cfg.max_loss]
    if not losses:
        return
    if cfg.accept_loss:
        scores["accepted_loss"] = True
        return
    losses.sort(reverse=True)
    parts = [f"{runtime} at {d} dims loses {loss:.4f} ({torch_scores[d]:.4f} -> {s:.4f})"
             for loss, runtime, d, s in losses]
    raise MrlError(f"nDCG@10 on {scores['data']} ({scores['split']}) drops more than {cfg.max_loss} against "
                   f"PyTorch: {'; '.join(parts)}. Nothing was written; export with --quantize none, or pass "
                   "--accept-loss to keep it")
