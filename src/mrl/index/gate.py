"""A learned per-query gate: how much of the first stage's shortlist a query's rescoring needs.

Most queries are easy: the top of their short-prefix shortlist already holds their true
neighbours, and rescoring a thousand candidates at the full dimension changes nothing. The gate
reads the first stage's scores of one query (the score at rank k, its gaps to ranks 1, k + 1,
2k ... and to the end of the shortlist, their spread) and picks a *level*: the number of
candidates the next stage rescores, from a ladder ``levels`` (0 = stop after the first stage and
return its top-k; the largest = the whole shortlist, the fixed cascade).

Fitting (:func:`fit_gate`, run by ``mrl index tune --adaptive``): on tuning queries with exact
neighbours, every level's recall is measured per query; a logistic regression per level (scikit-
learn) predicts whether that level loses nothing against the whole shortlist. The queries are
split in two: one half fits the models, the other calibrates one threshold ``tau``: a query takes
the smallest level whose probability reaches ``tau``, and ``tau`` is the lowest value whose
gated recall on the calibration half still has its lower confidence bound at the target. So the
target is checked on queries the models never saw.

On an inverted-file first stage (``ivf8``, ``ivfpq``, ``rabitq``), where scanning the lists costs
more than the rescoring, the gate's *axis* is the width instead (``axis="width"``): levels are
numbers of lists to scan, every query first scans the narrowest, and the gate reads that scan's
scores to pick how many lists the query scans in the end (queries that need more are searched
again at their width, in one group per width); the rescoring then runs as in the fixed cascade.

At search time the gate is numpy only: a (queries x features) matrix, one matrix product, a
comparison; queries of one batch take different levels and are rescored in one group per level.
The fitted gate is a small JSON file in the index (``gate-<digest>.json``, checksummed in the
manifest), read back without pickle.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl.errors import MrlError

GATE_FORMAT, GATE_VERSION = "mrl-gate", 2  # 2 added the axis; 1 files are shortlist gates
AXES = ("shortlist", "width")
FEATURE_NAMES = ("s_k", "s_1 - s_k", "s_k - s_k+1", "s_k - s_2k", "s_k - s_4k", "s_k - s_n/8", "s_k - s_n/2",
                 "s_k - s_n", "std s_1..k", "mean s_1..k - mean s_k+1..4k")


def features(scores: np.ndarray, k: int) -> np.ndarray:
    """Per-query features ``(nq, F)`` from first-stage scores ``(nq, n)``, best first (-inf padding).

    One gather of the ranks the features read and a few reductions: the gate runs on every
    query of the hot path, so this stays a handful of numpy calls whatever the batch size.
    """
    s = np.asarray(scores, np.float64)
    nq, n = s.shape
    if n == 0:
        return np.zeros((nq, len(FEATURE_NAMES)))
    finite = np.isfinite(s)
    if not finite.all():  # a short list repeats its last finite score (0 when it has none)
        floor = np.where(finite, s, np.inf).min(axis=1, keepdims=True)
        s = np.where(finite, s, np.where(np.isfinite(floor), floor, 0.0))
    ranks = np.clip([k, 1, k + 1, 2 * k, 4 * k, n // 8, n // 2, n], 1, n) - 1  # 1-based ranks, clipped
    at = s[:, ranks]  # (nq, 8)
    sk = at[:, :1]
    head = s[:, :k]
    tail = s[:, k : max(4 * k, k + 1)] if n > k else s[:, -1:]
    gaps = np.concatenate([at[:, 1:2] - sk, sk - at[:, 2:]], axis=1)  # s_1 - s_k, then s_k - s_r
    return np.concatenate([sk, gaps, head.std(axis=1, keepdims=True),
                           head.mean(axis=1, keepdims=True) - tail.mean(axis=1, keepdims=True)], axis=1)


@dataclass(frozen=True)
class Gate:
    """A fitted gate for one cascade (its kind, dims and widths; shortlists are the levels' top)."""

    cascade: str  # the ungated cascade it was fitted for: first shortlist (or width) = levels[-1]
    k: int
    levels: tuple[int, ...]  # ascending; shortlist axis: 0 = no rescoring, the last = the whole shortlist;
    # width axis: lists scanned, the first = the scan every query makes, the last = the cascade's width
    mean: np.ndarray  # (F,) feature standardisation
    scale: np.ndarray  # (F,)
    weights: np.ndarray  # (L - 1, F): one logistic model per level below the last
    bias: np.ndarray  # (L - 1,)
    threshold: float  # tau; inf: every query takes the last level (the fixed cascade)
    calibration: dict[str, Any]
    axis: str = "shortlist"  # or "width"

    def probabilities(self, scores: np.ndarray) -> np.ndarray:
        """``(nq, L - 1)``: P(level i loses nothing against the whole shortlist)."""
        z = (features(scores, self.k) - self.mean) / self.scale
        return 1.0 / (1.0 + np.exp(-(z @ self.weights.T + self.bias)))

    def choose(self, scores: np.ndarray) -> np.ndarray:
        """Level index per query ``(nq,)``: the smallest level whose probability reaches the threshold."""
        n_levels = len(self.levels)
        if not np.isfinite(self.threshold) or n_levels == 1:
            return np.full(len(scores), n_levels - 1)
        ok = self.probabilities(scores) >= self.threshold  # (nq, L - 1)
        return np.where(ok.any(axis=1), ok.argmax(axis=1), n_levels - 1)

    @classmethod
    def always_continue(cls, cascade: str, k: int, levels: tuple[int, ...], axis: str = "shortlist") -> Gate:
        """A gate that sends every query to the last level: the fixed cascade's results."""
        f = len(FEATURE_NAMES)
        return cls(cascade, k, levels, np.zeros(f), np.ones(f), np.zeros((len(levels) - 1, f)),
                   np.zeros(len(levels) - 1), float("inf"), {}, axis)

    def to_dict(self) -> dict[str, Any]:
        return {"format": GATE_FORMAT, "version": GATE_VERSION, "cascade": self.cascade, "k": self.k,
                "axis": self.axis, "levels": list(self.levels), "features": list(FEATURE_NAMES),
                "mean": self.mean.tolist(),
                "scale": self.scale.tolist(), "weights": self.weights.tolist(), "bias": self.bias.tolist(),
                "threshold": self.threshold if np.isfinite(self.threshold) else None,
                "calibration": self.calibration}

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "gate") -> Gate:
        if not isinstance(d, dict) or d.get("format") != GATE_FORMAT:
            raise MrlError(f"{where}: not an mrl gate file")
        if d.get("version") not in (1, GATE_VERSION):
            raise MrlError(f"{where}: a gate of format version {d.get('version')!r}, this mrl reads version "
                           f"{GATE_VERSION}; re-run `mrl index tune --adaptive`")
        if d.get("features") != list(FEATURE_NAMES):
            raise MrlError(f"{where}: the gate was fitted on other features; re-run `mrl index tune --adaptive`")
        try:
            threshold = float("inf") if d["threshold"] is None else float(d["threshold"])
            gate = cls(str(d["cascade"]), int(d["k"]), tuple(int(x) for x in d["levels"]),
                       np.asarray(d["mean"], np.float64), np.asarray(d["scale"], np.float64),
                       np.asarray(d["weights"], np.float64).reshape(len(d["levels"]) - 1, len(FEATURE_NAMES)),
                       np.asarray(d["bias"], np.float64), threshold, dict(d.get("calibration") or {}),
                       str(d.get("axis", "shortlist")))
        except (KeyError, TypeError, ValueError) as e:
            raise MrlError(f"{where}: a damaged gate file ({e})") from None
        if gate.axis not in AXES:
            raise MrlError(f"{where}: gate axis {gate.axis!r}, expected one of {', '.join(AXES)}")
        return gate

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")

    @classmethod
    def load(cls, path: Path) -> Gate:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")), str(path))
        except FileNotFoundError:
            raise MrlError(f"{path}: the index's gate file is missing; re-run `mrl index tune --adaptive` or set "
                           "an ungated cascade") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MrlError(f"{path}: not a readable gate file ({e})") from None
