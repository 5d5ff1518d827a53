"""The stage loop of a cascade after its first stage: rescore, keep the best, per query block.

``run_stages`` is the fixed cascade; ``run_gated`` lets a :class:`~mrl.index.gate.Gate` give each
query its own depth: queries are grouped by the level the gate picked (a handful of groups, no
per-query loop), each group rescores only the head of its shortlist, and results are put back in
query order.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mrl.index.cascade import Cascade
from mrl.index.gate import Gate
from mrl.index.work import Work
from mrl.prefix import top_k as top

Rescore = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (queries, rows (nq, c), dim) -> scores (nq, c)


def run_stages(rescore: Rescore, xq: np.ndarray, k: int, plan: Cascade, scores: np.ndarray, rows: np.ndarray,
               work: Work | None = None, itemsize: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Every stage after the first on the first stage's ``(scores, rows)``, best-first; the top ``k``."""
    rescored = _empty_counts(plan, len(xq)) if work is not None else None
    for i, (d, n) in enumerate(plan.stages[1:], start=1):
        scores = rescore(xq, rows, d)
        if rescored is not None:
            rescored[i] += (rows >= 0).sum(axis=1)
        scores, rows = top(scores, rows, n)
    if work is not None and rescored is not None:
        _record(work, plan, rescored, itemsize)
    return top(scores, rows, k)


def run_gated(rescore: Rescore, xq: np.ndarray, k: int, plan: Cascade, scores: np.ndarray, rows: np.ndarray,
              gate: Gate, work: Work | None = None, itemsize: int = 4,
              chosen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The cascade with each query's depth from ``gate`` (or from ``chosen``: a level index per query)."""
    n1 = rows.shape[1]
    levels = [min(level, n1) for level in gate.levels]
    chosen = gate.choose(scores) if chosen is None else np.asarray(chosen)
    out_s = np.full((len(xq), k), -np.inf, np.float32)
    out_r = np.full((len(xq), k), -1, np.int64)
    rescored = _empty_counts(plan, len(xq))
    used = np.unique(chosen)
    for li in used:
        sel: slice | np.ndarray = slice(None) if len(used) == 1 else np.flatnonzero(chosen == li)  # one level: views
        s, r = scores[sel], rows[sel]
        if levels[li] == 0:  # the first stage's own top-k
            out_s[sel], out_r[sel] = top(s, r, k)
            continue
        s, r = s[:, : levels[li]], r[:, : levels[li]]  # the head of a best-first shortlist
        for i, (d, n) in enumerate(plan.stages[1:], start=1):
            s = rescore(xq[sel], r, d)
            rescored[i, sel] += (r >= 0).sum(axis=1)
            s, r = top(s, r, n)
        out_s[sel], out_r[sel] = top(s, r, k)
    if work is not None:
        _record(work, plan, rescored, itemsize)
    return out_s, out_r


def _empty_counts(plan: Cascade, nq: int) -> np.ndarray:
    return np.zeros((len(plan.stages), nq), np.int64)


def _record(work: Work, plan: Cascade, rescored: np.ndarray, itemsize: int) -> None:
    for i, (d, _) in enumerate(plan.stages[1:], start=1):
        work.record(i, f"rescore@{d}", d, rescored[i], rescored[i] * d * itemsize)
