"""``mrl index tune --adaptive``: a gated cascade built on the tuned fixed one (see :mod:`mrl.index.gate`).

The fixed cascade ``tune`` picked gets room for the hard queries, a ladder of levels below it,
and a gate fitted and calibrated on the tuning queries: on a flat or graph first stage, a
shortlist twice as long and levels of rescoring depth; on an inverted file, where scanning the
lists is most of the time, twice the lists scanned and levels of width (:mod:`mrl.index.gate`).
Only the mrl backend runs gated cascades (Qdrant runs a whole cascade as one nested query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import Searcher
from mrl.index.cascade import Cascade, parse_cascade
from mrl.index.gate import Gate, fit_gate, ladder, width_ladder
from mrl.index.tune import per_query_recall


@dataclass(frozen=True)
class AdaptiveResult:
    gate: Gate
    cascade: Cascade  # gated
    fixed: str
    fixed_p50_ms: float
    gated_p50_ms: float
    gated_batch_ms_per_query: float

    def record(self) -> dict[str, Any]:
        return {"adaptive": True, "fixed_cascade": self.fixed, "fixed_p50_ms": round(self.fixed_p50_ms, 3),
                "gated_p50_ms": round(self.gated_p50_ms, 3),
                "gated_batch_ms_per_query": round(self.gated_batch_ms_per_query, 4), **self.gate.calibration}


def level_data(index: Any, xq: np.ndarray, k: int, plan: Cascade, levels: tuple[int, ...]
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """First-stage scores ``(nq, n1)`` and the ids every level gives (``(nq, k)`` each), one first stage."""
    scores, rows = index._first_stage(xq, plan.kind, plan.first[0], plan.first[1], plan.width)
    always = Gate.always_continue(str(plan), k, levels)
    ids = []
    for li in range(len(levels)):
        _, r = index.gated_rest(xq, k, plan, scores, rows, always, np.full(len(xq), li))
        ids.append(index.row_ids(r))
    return scores, ids


def width_level_data(index: Any, xq: np.ndarray, k: int, plan: Cascade, levels: tuple[int, ...]
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The narrowest scan's scores ``(nq, n1)`` and the ids the cascade gives at every width."""
    scores, _ = index._first_stage(xq, plan.kind, plan.first[0], plan.first[1], levels[0])
    ids = [index.search(xq, k, Cascade(plan.kind, plan.stages, width), adapted=True).ids for width in levels]
    return scores, ids


def tune_adaptive(index: Searcher, fixed: str, xq: np.ndarray, k: int, target: float, confidence: float = 0.9,
                  seed: int = 0, n_single: int = 50) -> AdaptiveResult:
    """Fit and calibrate a gate for the fixed cascade ``fixed``; measure it. Nothing is stored here."""
    from mrl.index.tune import _latency

    if not hasattr(index, "gated_rest"):
        raise MrlError(f"--adaptive: gated cascades run on the mrl backend, not on {type(index).__name__}")
    base = parse_cascade(fixed, index.dim)
    spec = next((s for s in index.first_stages if s.kind == base.kind and s.dim == base.first[0]), None)
    nlist = index.max_width(spec) if spec is not None else 0
    _, truth = index.exact_search(xq, k, adapted=True)
    if nlist:  # an inverted file: the gate picks the lists scanned
        width = min(2 * (base.width or nlist), nlist)
        plan, levels, axis = Cascade(base.kind, base.stages, width), width_ladder(width), "width"
        scores, ids = width_level_data(index, xq, k, plan, levels)
    else:
        if len(base.stages) < 2:
            raise MrlError(f"--adaptive: the tuned cascade {fixed} has no rescoring stage for a gate to shorten")
        n1 = min(2 * base.first[1], index.count)
        plan = Cascade(base.kind, ((base.first[0], n1), *base.stages[1:]), base.width)
        levels, axis = ladder(n1, plan.stages[1][1]), "shortlist"
        scores, ids = level_data(index, xq, k, plan, levels)
    recalls = np.stack([per_query_recall(i, truth) for i in ids], axis=1)  # (nq, L)
    gate = fit_gate(recalls, scores, str(plan), k, levels, target, confidence, seed, axis)
    gated = Cascade(plan.kind, plan.stages, plan.width, gated=True)
    fixed_p50, _, _ = _latency(index, xq, k, base, n_single)
    previous = index.gate
    index.gate = gate  # this snapshot only, to time it; the caller commits it
    try:
        p50, _, batch = _latency(index, xq, k, gated, n_single)
    finally:
        index.gate = previous
    return AdaptiveResult(gate, gated, fixed, fixed_p50, p50, batch)
