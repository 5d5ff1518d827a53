"""``mrl index tune --adaptive``: a gated cascade built on the tuned fixed one (see :mod:`mrl.index.gate`).

The fixed cascade ``tune`` picked gets room for the hard queries, a ladder of levels below it,
and a gate fitted and calibrated on the tuning queries: on a flat or graph first stage, a
shortlist twice as long and levels of rescoring depth; on an inverted file, where scanning the
lists is most of the time, twice the lists scanned and levels of width (:mod:`mrl.index.gate`).
When that widest level misses the target on the calibration queries (a pick that meets it with
no margin), the room doubles again, up to 8x.
Only the mrl backend runs gated cascades (Qdrant runs a whole cascade as one nested query).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import Searcher
from mrl.index.cascade import Cascade, parse_cascade
from mrl.index.gate import Gate, GateMissesTarget, fit_gate, ladder, width_ladder
from mrl.index.tune import per_query_recall, true_neighbours


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


WIDENING = (2, 4, 8)  # the gated cascade's room over the fixed one, tried in turn until it meets the target


def _widened(index: Any, base: Cascade, nlist: int, factor: int) -> tuple[Cascade, tuple[int, ...], str]:
    """The gated plan with ``factor`` x the room of ``base``, its levels, and the gate's axis.

    Flat or graph first stage: the first shortlist ``factor`` x longer, levels of rescoring depth.
    Inverted file: ``factor`` x the lists scanned, levels of width; beyond 2x the shortlist grows
    with the lists (as ``tune``'s widening does), or the extra lists would bring nothing in.
    """
    if nlist:
        n1 = base.first[1] if factor <= 2 else min(base.first[1] * factor // 2, index.count)
        width = min(factor * (base.width or nlist), nlist)
        plan = Cascade(base.kind, ((base.first[0], n1), *base.stages[1:]), width)
        return plan, width_ladder(width), "width"
    n1 = min(factor * base.first[1], index.count)
    plan = Cascade(base.kind, ((base.first[0], n1), *base.stages[1:]), base.width)
    return plan, ladder(n1, plan.stages[1][1]), "shortlist"


def tune_adaptive(index: Searcher, fixed: str, xq: np.ndarray, k: int, target: float, confidence: float = 0.9,
                  seed: int = 0, n_single: int = 50) -> AdaptiveResult:
    """Fit and calibrate a gate for the fixed cascade ``fixed``; measure it. Nothing is stored here."""
    from mrl.index.tune import _latency

    if not hasattr(index, "gated_rest"):
        raise MrlError(f"--adaptive: gated cascades run on the mrl backend, not on {type(index).__name__}")
    base = parse_cascade(fixed, index.dim)
    spec = next((s for s in index.first_stages if s.kind == base.kind and s.dim == base.first[0]), None)
    nlist = index.max_width(spec) if spec is not None else 0
    if not nlist and len(base.stages) < 2:
        raise MrlError(f"--adaptive: the tuned cascade {fixed} has no rescoring stage for a gate to shorten")
    truth = true_neighbours(index, xq, k)
    for factor in WIDENING:
        plan, levels, axis = _widened(index, base, nlist, factor)
        data = width_level_data if axis == "width" else level_data
        scores, ids = data(index, xq, k, plan, levels)
        recalls = np.stack([per_query_recall(i, truth) for i in ids], axis=1)  # (nq, L)
        try:
            gate = fit_gate(recalls, scores, str(plan), k, levels, target, confidence, seed, axis)
            break
        except GateMissesTarget as e:
            # a pick that meets the target with no margin misses it on the calibration half: give the hard
            # queries more room, while room is left
            widest = plan == _widened(index, base, nlist, 2 * factor)[0]
            if factor == WIDENING[-1] or widest:
                raise GateMissesTarget(f"{e} (the gate's room was widened {factor}x over {fixed})") from None
    gated = Cascade(plan.kind, plan.stages, plan.width, gated=True)
    fixed_p50, _, _ = _latency(index, xq, k, base, n_single)
    previous = index.gate
    index.gate = gate  # this snapshot only, to time it; the caller commits it
    try:
        p50, _, batch = _latency(index, xq, k, gated, n_single)
    finally:
        index.gate = previous
    return AdaptiveResult(gate, gated, fixed, fixed_p50, p50, batch)
