"""Encode corpus and queries once at full dimension, then score every prefix (and PCA)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from mrl.adapt.base import Adaptor, fit_pca
from mrl.data.beir import BeirDataset
from mrl.errors import MrlError
from mrl.eval.precision import RESCORE_SHORTLIST, RESCORED, check_precision_dims, parse_precisions, ranked_all
from mrl.eval.report import EvalReport
from mrl.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from mrl.prefix import check_dim, exact_top_k, truncate

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

logger = logging.getLogger(__name__)

BASELINES = ("pca", "adaptor")  # "adaptor" needs an adaptor to score
METRIC_DEPTH = 100  # deepest cut any metric reads (recall@100)


def score_run(
    xq: np.ndarray, xb: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str], qrels: dict
) -> dict[str, float]:
    """nDCG@10, Recall@10, Recall@100 and MRR@10 (means over queries) of exact search."""
    _, idx = exact_top_k(xq, xb, METRIC_DEPTH)
    return score_ranking(idx, qids, doc_ids, qrels)


def score_ranking(idx: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str], qrels: dict) -> dict[str, float]:
    """The metrics of ranked corpus rows ``idx`` ``(nq, >= 100)``, -1 for empty slots."""
    doc_arr = np.asarray(doc_ids, dtype=object)
    ranked = [doc_arr[row[row >= 0]].tolist() for row in idx]
    return {
        "ndcg@10": float(ndcg_at_k(ranked, qids, qrels, 10).mean()),
        "recall@10": float(recall_at_k(ranked, qids, qrels, 10).mean()),
        "recall@100": float(recall_at_k(ranked, qids, qrels, 100).mean()),
        "mrr@10": float(mrr_at_k(ranked, qids, qrels, 10).mean()),
    }


def evaluate_embeddings(
    xq: np.ndarray,
    xb: np.ndarray,
    qids: Sequence[str],
    doc_ids: Sequence[str],
    qrels: dict,
    dims: Sequence[int],
    baselines: Sequence[str] = (),
    model_name: str = "",
    dataset: str = "",
    split: str = "",
    adaptors: Adaptor | Mapping[str, Adaptor] | None = None,
    precisions: Sequence[str] = ("float32",),
    rescore: int = RESCORE_SHORTLIST,
) -> EvalReport:
    """Score every prefix of precomputed full-dimension embeddings (from any model or API).

    Args:
        baselines: ``"pca"`` (fitted on ``xb``: rotate, then truncate) and/or ``"adaptor"``.
        adaptors: fitted adaptors applied to ``xq`` and ``xb`` before truncation; one is reported
            as method ``"adaptor"``, a mapping under its names. Giving one implies ``"adaptor"``.
        precisions: besides ``float32`` (method ``truncate``), ``int8`` and/or ``binary`` codes of
            every prefix, each alone and with a float rescore of ``rescore`` candidates
            (methods ``int8``, ``int8+rescore`` ...; see :mod:`mrl.eval.precision`).
    """
    full = xb.shape[1]
    named = _check_inputs(xq, xb, dims, baselines, adaptors)
    dims = sorted(set(dims) | {full})
    results: dict[str, dict[int, dict[str, float]]] = {"truncate": {}}
    for d in dims:
        results["truncate"][d] = score_run(truncate(xq, d), truncate(xb, d), qids, doc_ids, qrels)
    methods = ({"pca": fit_pca(xb)} if "pca" in baselines else {}) | named
    for name, adaptor in methods.items():
        aq, ab = adaptor.transform(xq), adaptor.transform(xb)
        results[name] = {d: score_run(truncate(aq, d), truncate(ab, d), qids, doc_ids, qrels) for d in dims}
    results |= _score_quantised(xq, xb, qids, doc_ids, qrels, dims, precisions, rescore)
    return EvalReport(
        model=model_name, dataset=dataset, split=split, n_queries=len(qids), n_docs=len(doc_ids),
        full_dim=full, results=results,
    )


def _check_inputs(xq: np.ndarray, xb: np.ndarray, dims: Sequence[int], baselines: Sequence[str],
                  adaptors: Adaptor | Mapping[str, Adaptor] | None) -> dict[str, Adaptor]:
    """The adaptors by method name, after checking dimensions, dims and baselines."""
    full = xb.shape[1]
    if xq.shape[1] != full:
        raise MrlError(f"query dimension {xq.shape[1]} differs from corpus dimension {full}")
    for d in dims:
        check_dim(d, full, "dim")
    for b in baselines:
        if b not in BASELINES:
            raise MrlError(f"unknown baseline {b!r} (choose from: {', '.join(BASELINES)})")
    named = {"adaptor": adaptors} if isinstance(adaptors, Adaptor) else dict(adaptors or {})
    if "adaptor" in baselines and not named:
        raise MrlError("baseline 'adaptor' needs an adaptor (--adaptor ADAPTOR)")
    for name, adaptor in named.items():
        if adaptor.input_dim != full:
            raise MrlError(f"{name}: the adaptor takes {adaptor.input_dim}-dim vectors, the embeddings have {full}")
    return named


def _score_quantised(xq: np.ndarray, xb: np.ndarray, qids: Sequence[str], doc_ids: Sequence[str], qrels: dict,
                     dims: list[int], precisions: Sequence[str],
                     rescore: int) -> dict[str, dict[int, dict[str, float]]]:
    """Per quantised precision (not float32): the metrics of the codes alone and with a float rescore."""
    results: dict[str, dict[int, dict[str, float]]] = {}
    quantised = [p for p in parse_precisions(",".join(precisions)) if p != "float32"]
    check_precision_dims(quantised, dims)
    for p in quantised:
        results[p], results[p + RESCORED] = {}, {}
        for d in dims:  # one structure per (precision, dim) serves the codes alone and the rescore
            alone, rescored = ranked_all(truncate(xq, d), truncate(xb, d), p, METRIC_DEPTH, [None, rescore])
            results[p][d] = score_ranking(alone, qids, doc_ids, qrels)
            results[p + RESCORED][d] = score_ranking(rescored, qids, doc_ids, qrels)
    return results


def evaluate(
    model: SentenceTransformer,
    data: BeirDataset,
    dims: Sequence[int] | None = None,
    baselines: Sequence[str] = (),
    batch_size: int = 64,
    show_progress: bool = True,
    model_name: str = "",
    adaptors: Adaptor | Mapping[str, Adaptor] | None = None,
    precisions: Sequence[str] = ("float32",),
) -> EvalReport:
    """Encode ``data`` once with ``model`` (a Sentence-Transformers model, or any
    :class:`~mrl.encoders.runtime.Encoder`, e.g. an exported ONNX graph) at full dimension and score every prefix."""
    full, embed = embedder(model, batch_size, show_progress)
    if dims is None:
        from mrl.prefix import default_dims

        dims = default_dims(full)
    for d in dims:
        check_dim(d, full, "dim")
    doc_ids = list(data.corpus)
    qids = list(data.queries)
    xb = embed([data.corpus[i] for i in doc_ids], "document")
    xq = embed([data.queries[i] for i in qids], "query")
    return evaluate_embeddings(
        xq, xb, qids, doc_ids, data.qrels, dims, baselines, model_name, data.name, data.split, adaptors, precisions
    )


def embedder(model: Any, batch_size: int, show_progress: bool) -> tuple[int, Any]:
    """``(dim, embed(texts, kind))`` for a Sentence-Transformers model or an :class:`Encoder`."""
    from mrl.encoders.model import embedding_dim, encode
    from mrl.encoders.runtime import Encoder

    if isinstance(model, Encoder):
        return model.dim, lambda texts, kind: model.encode(texts, kind, batch_size)
    return embedding_dim(model), lambda texts, kind: encode(model, texts, batch_size, show_progress, f"{kind}s",
                                                             kind=kind)


def subsample(data: BeirDataset, max_queries: int, max_docs: int, seed: int = 0) -> BeirDataset:
    """A smaller evaluation set: up to ``max_queries`` queries, their judged documents, and
    random other documents up to ``max_docs`` (distractors). Deterministic for a seed."""
    rng = np.random.default_rng(seed)
    qids = sorted(data.queries)
    if len(qids) > max_queries:
        qids = sorted(rng.choice(qids, size=max_queries, replace=False).tolist())
    qrels = {q: data.qrels[q] for q in qids}
    judged = sorted({d for q in qids for d in qrels[q]})
    others = sorted(set(data.corpus) - set(judged))
    n_more = max(0, min(len(others), max_docs - len(judged)))
    picked: list[int] = rng.choice(len(others), size=n_more, replace=False).tolist() if n_more else []
    keep = judged + [others[i] for i in sorted(picked)]
    return BeirDataset(
        corpus={d: data.corpus[d] for d in keep},
        queries={q: data.queries[q] for q in qids},
        qrels=qrels,
        name=f"{data.name}[{len(qids)}q/{len(keep)}d]",
        split=data.split,
    )
