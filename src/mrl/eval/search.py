"""Exact inner-product top-k, streamed over query blocks."""

from __future__ import annotations

import numpy as np


def exact_search(xq: np.ndarray, xb: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` by inner product.

    Args:
        xq: queries, shape ``(nq, d)``.
        xb: database, shape ``(nb, d)``.
        k: results per query; slots beyond ``nb`` get score ``-inf`` and id ``-1``.

    Returns:
        ``(scores, ids)``, float32 and int64, shape ``(nq, k)``, best first; ties broken by
        lower id.
    """
    nq, nb = xq.shape[0], xb.shape[0]
    kk = min(k, nb)
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    for start in range(0, nq, block):
        s = xq[start : start + block] @ xb.T  # (b, nb)
        if kk < nb:
            part = np.argpartition(-s, kk - 1, axis=1)[:, :kk]  # (b, kk), unordered
        else:
            part = np.broadcast_to(np.arange(nb), (s.shape[0], nb))
        part_scores = np.take_along_axis(s, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)  # score desc, then id asc
        ids[start : start + block, :kk] = np.take_along_axis(part, order, axis=1)
        scores[start : start + block, :kk] = np.take_along_axis(part_scores, order, axis=1)
    return scores, ids
