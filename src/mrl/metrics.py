"""Pure numpy ranking metrics over a ranked id matrix and graded relevance judgements.

Conventions follow trec_eval (and so pytrec_eval / BEIR): nDCG uses linear gain
``rel / log2(rank + 1)``, recall counts documents with relevance > 0, MRR@k is the
reciprocal rank of the first relevant document within the top k (0 if none).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

Qrels = Mapping[str, Mapping[str, int]]


def _gains(ranked: Sequence[Sequence[str]], qids: Sequence[str], qrels: Qrels, k: int) -> np.ndarray:
    """Relevance of each of the top ``k`` results, shape ``(nq, k)``; missing slots are 0."""
    gains = np.zeros((len(qids), k), dtype=np.float64)
    for i, (qid, row) in enumerate(zip(qids, ranked)):
        judged = qrels.get(qid, {})
        for j, doc_id in enumerate(row[:k]):
            gains[i, j] = max(judged.get(doc_id, 0), 0)
    return gains


def ndcg_at_k(ranked: Sequence[Sequence[str]], qids: Sequence[str], qrels: Qrels, k: int = 10) -> np.ndarray:
    """nDCG@k per query, shape ``(nq,)``."""
    gains = _gains(ranked, qids, qrels, k)  # (nq, k)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))  # (k,)
    dcg = gains @ discounts
    ideal = np.zeros_like(gains)
    for i, qid in enumerate(qids):
        rels = sorted((r for r in qrels.get(qid, {}).values() if r > 0), reverse=True)[:k]
        ideal[i, : len(rels)] = rels
    idcg = ideal @ discounts
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def recall_at_k(ranked: Sequence[Sequence[str]], qids: Sequence[str], qrels: Qrels, k: int = 10) -> np.ndarray:
    """Recall@k per query, shape ``(nq,)``."""
    hits = (_gains(ranked, qids, qrels, k) > 0).sum(axis=1)
    n_rel = np.array([sum(r > 0 for r in qrels.get(q, {}).values()) for q in qids], dtype=np.float64)
    return np.divide(hits, n_rel, out=np.zeros_like(n_rel), where=n_rel > 0)


def mrr_at_k(ranked: Sequence[Sequence[str]], qids: Sequence[str], qrels: Qrels, k: int = 10) -> np.ndarray:
    """Reciprocal rank of the first relevant result within the top k, per query, shape ``(nq,)``."""
    relevant = _gains(ranked, qids, qrels, k) > 0  # (nq, k)
    first = relevant.argmax(axis=1)
    return np.where(relevant.any(axis=1), 1.0 / (first + 1), 0.0)
