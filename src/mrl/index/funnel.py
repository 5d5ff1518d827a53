"""The stage loop of a cascade: the first stage, then rescore and keep the best, per query block.

:func:`run_cascade` is the one loop every backend that runs stages itself goes through. A
:class:`~mrl.index.gate.Gate` gives each query its own depth: on the shortlist axis queries are
grouped by the level the gate picked (a handful of groups, no per-query loop), each group
rescores only the head of its shortlist; on the width axis every query scans the narrowest
level, and those the gate sends further scan the lists past it, one group per width.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from mrl.index.cascade import Cascade
from mrl.index.gate import Gate
from mrl.index.work import Work
from mrl.prefix import top_k as top

Rescore = Callable[[np.ndarray, np.ndarray, int], np.ndarray]  # (queries, rows (nq, c), dim) -> scores (nq, c)
# (queries, width, lists to skip, work) -> (scores, rows) (nq, n1): the plan's first stage at that width
FirstStage = Callable[[np.ndarray, "int | None", int, "Work | None"], tuple[np.ndarray, np.ndarray]]


def run_cascade(xq: np.ndarray, k: int, plan: Cascade, first_stage: FirstStage, rescore: Rescore,
                gate: Gate | None = None, work: Work | None = None, itemsize: int = 4,
                chosen: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` ``(scores, rows)`` of ``plan``; with ``gate``, per-query depth or width (``chosen``:
    a level index per query instead of the gate's choice)."""
    if gate is not None and gate.axis == "width":
        scores, rows = _width_gated_scan(first_stage, xq, plan, gate, chosen, work)
        return run_stages(rescore, xq, k, plan, scores, rows, work, itemsize)
    scores, rows = first_stage(xq, plan.width, 0, work)
    if gate is not None:
        return run_gated(rescore, xq, k, plan, scores, rows, gate, work, itemsize, chosen)
    return run_stages(rescore, xq, k, plan, scores, rows, work, itemsize)


def _width_gated_scan(first_stage: FirstStage, xq: np.ndarray, plan: Cascade, gate: Gate,
                      chosen: np.ndarray | None, work: Work | None) -> tuple[np.ndarray, np.ndarray]:
    """A width gate's first stage: every query scans ``gate.levels[0]`` lists; the gate reads those
    scores and the queries it sends further scan the lists up to their width past those first
    ones, one group per width; both scans merged give one scan at that width."""
    (d1, n1), levels = plan.first, gate.levels
    counts: list[Work] = []  # one per scan, only when the caller counts work

    def scan(q: np.ndarray, width: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
        counted = Work() if work is not None else None
        if counted is not None:
            counts.append(counted)
        return first_stage(q, width, skip, counted)

    scores, rows = scan(xq, levels[0])
    chosen = gate.choose(scores) if chosen is None else np.asarray(chosen)
    wider = np.unique(chosen[chosen > 0])
    groups = [np.flatnonzero(chosen == li) for li in wider]
    for sel, li in zip(groups, wider):
        s, r = scan(xq[sel], levels[li], skip=levels[0])
        scores[sel], rows[sel] = top(np.concatenate([scores[sel], s], axis=1),
                                     np.concatenate([rows[sel], r], axis=1), n1)
    if work is not None:
        scanned, read = (a.copy() for a in counts[0].stages[0].totals())
        for sel, again in zip(groups, counts[1:]):
            c, b = again.stages[0].totals()
            scanned[sel] += c
            read[sel] += b
        work.record(0, counts[0].stages[0].name, d1, scanned, read)
    return scores, rows


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
