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

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import Tunable
from mrl.index.cascade import Cascade, parse_cascade
from mrl.index.gate import Gate, features
from mrl.index.tuning.recall import lower_bound, per_query_recall, true_neighbours
from mrl.index.tuning.tune import latency

MIN_TUNING_QUERIES = 200  # half fit the models, half calibrate the threshold


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


def level_data(index: Tunable, xq: np.ndarray, k: int, plan: Cascade, levels: tuple[int, ...]
               ) -> tuple[np.ndarray, list[np.ndarray]]:
    """First-stage scores ``(nq, n1)`` and the ids every level gives (``(nq, k)`` each)."""
    scores = index.first_stage_scores(xq, plan)
    always = Gate.always_continue(str(plan), k, levels)
    ids = [index.search_gated(xq, k, plan, always, np.full(len(xq), li)).ids for li in range(len(levels))]
    return scores, ids


def width_level_data(index: Tunable, xq: np.ndarray, k: int, plan: Cascade, levels: tuple[int, ...]
                     ) -> tuple[np.ndarray, list[np.ndarray]]:
    """The narrowest scan's scores ``(nq, n1)`` and the ids the cascade gives at every width."""
    scores = index.first_stage_scores(xq, plan, levels[0])
    ids = [index.search(xq, k, Cascade(plan.kind, plan.stages, width), adapted=True).ids for width in levels]
    return scores, ids


WIDENING = (2, 4, 8)  # the gated cascade's room over the fixed one, tried in turn until it meets the target


def _widened(index: Tunable, base: Cascade, nlist: int, factor: int) -> tuple[Cascade, tuple[int, ...], str]:
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


def tune_adaptive(index: Tunable, fixed: str, xq: np.ndarray, k: int, target: float, confidence: float = 0.9,
                  seed: int = 0, n_single: int = 50) -> AdaptiveResult:
    """Fit and calibrate a gate for the fixed cascade ``fixed``; measure it. Nothing is stored here."""
    if not index.supports_gates:
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
    fixed_p50, _, _ = latency(lambda q: index.search(q, k, base, adapted=True), xq, n_single)
    p50, _, batch = latency(lambda q: index.search_gated(q, k, plan, gate), xq, n_single)
    return AdaptiveResult(gate, gated, fixed, fixed_p50, p50, batch)


class GateMissesTarget(MrlError):
    """The gated cascade's widest level itself misses the target on the calibration queries."""


def ladder(n1: int, next_shortlist: int, steps: int = 6) -> tuple[int, ...]:
    """0 (no rescoring), then n1 / 2^j down to the next stage's shortlist, then n1 itself."""
    levels = {n1}
    for j in range(1, steps):
        size = n1 >> j
        if size >= next_shortlist:
            levels.add(size)
    return (0, *sorted(levels))


def width_ladder(width: int, steps: int = 6) -> tuple[int, ...]:
    """Lists scanned: width / 2^j for j = steps - 1 .. 0 (at least 1), ascending, distinct."""
    return tuple(sorted({max(1, width >> j) for j in range(steps)}))


def fit_gate(level_recalls: np.ndarray, scores: np.ndarray, cascade: str, k: int, levels: tuple[int, ...],
             target: float, confidence: float = 0.9, seed: int = 0, axis: str = "shortlist") -> Gate:
    """Fit the per-level models on half the queries and calibrate the threshold on the other half.

    Args:
        level_recalls: ``(nq, L)`` recall@k of every query at every level (the last: the whole shortlist).
        scores: ``(nq, n1)`` the first stage's scores of the same queries (width axis: of the
            narrowest scan, the one the gate reads at search time).

    Raises:
        MrlError: too few queries; GateMissesTarget: the whole shortlist itself misses the target on the
            calibration half.
    """
    nq = len(level_recalls)
    if nq < MIN_TUNING_QUERIES:
        raise MrlError(f"an adaptive tune needs at least {MIN_TUNING_QUERIES} tuning queries to fit and calibrate "
                       f"the gate (half each), got {nq}; pass more --queries or a larger --n-queries")
    order = np.random.default_rng(seed).permutation(nq)
    fit_rows, cal_rows = order[: nq // 2], order[nq // 2 :]
    gate = _fit_levels(level_recalls[fit_rows], features(scores[fit_rows], k), cascade, k, levels, axis)
    full = level_recalls[cal_rows, -1]
    fixed_low = lower_bound(full, confidence)
    if fixed_low < target:
        raise GateMissesTarget(f"the cascade {cascade} itself reaches recall@{k} {full.mean():.4f} (lower "
                               f"bound {fixed_low:.4f}) on the calibration queries, below the target {target}: a "
                               "gate can only save work on a cascade that meets it")
    probs = gate.probabilities(scores[cal_rows])  # (nc, L - 1)
    best_tau, best = float("inf"), (float(full.mean()), fixed_low, float(levels[-1]))
    for tau in np.unique(np.concatenate([probs.ravel(), [1.0]]))[::-1]:  # lower tau = shallower levels
        ok = probs >= tau
        chosen = np.where(ok.any(axis=1), ok.argmax(axis=1), len(levels) - 1)
        recalls = level_recalls[cal_rows, chosen]
        low = lower_bound(recalls, confidence)
        if low < target:
            break  # recall falls as tau falls: the previous tau was the lowest that holds
        best_tau, best = float(tau), (float(recalls.mean()), low, float(np.mean(np.asarray(levels)[chosen])))
    calibration = {"queries_fit": len(fit_rows), "queries_calibrate": len(cal_rows), "target_recall": target,
                   "confidence": confidence, "recall": round(best[0], 4), "recall_low": round(best[1], 4),
                   "mean_level": round(best[2], 1), "fixed_recall": round(float(full.mean()), 4)}
    return replace(gate, threshold=best_tau, calibration=calibration)


def _fit_levels(level_recalls: np.ndarray, x: np.ndarray, cascade: str, k: int, levels: tuple[int, ...],
                axis: str) -> Gate:
    """One logistic model per level below the last (does it lose nothing against the whole shortlist?),
    on standardised features ``x`` of the fitting half; the threshold is left open (inf)."""
    from sklearn.linear_model import LogisticRegression

    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 1e-12, scale, 1.0)
    z = (x - mean) / scale
    full = level_recalls[:, -1]
    weights, bias = [], []
    for i in range(len(levels) - 1):
        y = (level_recalls[:, i] >= full - 1e-9).astype(int)
        if y.min() == y.max():  # one class: a constant model (logit +-10)
            weights.append(np.zeros(x.shape[1]))
            bias.append(10.0 if y[0] else -10.0)
            continue
        model = LogisticRegression(C=1.0, max_iter=1000).fit(z, y)
        weights.append(model.coef_[0])
        bias.append(float(model.intercept_[0]))
    return Gate(cascade, k, tuple(levels), mean, scale, np.array(weights), np.array(bias), float("inf"), {}, axis)
