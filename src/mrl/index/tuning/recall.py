"""Recall of a cascade against exact full-dimension search, with ties and a confidence bound."""

from __future__ import annotations

from statistics import NormalDist

import numpy as np

from mrl.index.base import Tunable

TIE_EPS = 1e-6  # a stored vector this close to the k-th true neighbour's score is as true as it
TIE_EXTRA = 10  # how many ranks past k the exact search looks for such ties


def tied_truth(scores: np.ndarray, ids: np.ndarray, k: int, eps: float = TIE_EPS) -> np.ndarray:
    """The exact top-k ids widened by the ids that tie with the k-th (``-1`` pads): ``(nq, >= k)``.

    Real corpora hold duplicates (debian-pkgs' 50,001 descriptions give 48,261 distinct vectors
    in a trained model); which of two identical documents the exact search ranks k-th is an accident of
    order, and a cascade returning the other found a true neighbour. Recall counts it, as
    ann-benchmarks' distance-threshold recall does.
    """
    if ids.shape[1] <= k:
        return ids
    keep = (np.arange(ids.shape[1]) < k) | (scores >= scores[:, k - 1 : k] - eps)
    return np.where(keep, ids, -1)


def true_neighbours(index: Tunable, xq: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k ids of ``xq`` (already in the stored space), ties with the k-th included."""
    scores, ids = index.exact_search(xq, max(k, min(k + TIE_EXTRA, index.count)), adapted=True)
    return tied_truth(np.asarray(scores), np.asarray(ids), k)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    return float(per_query_recall(found, truth).mean())


def per_query_recall(found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Share of each query's k found ids (``found``: ``(nq, k)``) that are true neighbours: ``(nq,)``.

    ``truth`` is the exact top-k, or wider with ``-1`` padding (:func:`tied_truth`).
    """
    k = found.shape[1]
    return np.array([len(set(a[a >= 0].tolist()) & set(b[b >= 0].tolist())) / k for a, b in zip(found, truth)])


def lower_bound(recalls: np.ndarray, confidence: float) -> float:
    """One-sided normal lower confidence bound of the mean of per-query recalls.

    A cascade picked because its sample mean just reaches the target lands below it on new
    queries about half the time; asking the bound to reach it leaves a margin that shrinks with
    more queries (1,000 queries, confidence 0.9: about 0.002 at recall 0.99, 0.004 at 0.95).
    """
    if len(recalls) < 2 or confidence <= 0.5:
        return float(recalls.mean()) if len(recalls) else 0.0
    z = NormalDist().inv_cdf(confidence)
    return float(recalls.mean() - z * recalls.std(ddof=1) / np.sqrt(len(recalls)))


