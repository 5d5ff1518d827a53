"""Quantised prefixes: what a (dimension, precision) pair keeps, and what it costs per vector.

=============  =====================================================  ===============
precision      stored and searched                                    bytes / vector
=============  =====================================================  ===============
float32        the renormalised prefix                                4 d
int8           faiss ``QT_8bit`` codes, one range per dimension        d
               calibrated on the corpus (its min / max)
binary         sign bits, Hamming distance                            d / 8
=============  =====================================================  ===============

``int8+rescore`` and ``binary+rescore`` search the codes for a shortlist (``RESCORE_SHORTLIST``)
and rescore it with the float32 prefix of the same width, read from the full vectors (kept on
disk, as the funnel index does); the bytes per vector are those held in RAM, the codes'.
The structures are the index's own first stages (:mod:`mrl.index.first_stage`).
"""

from __future__ import annotations

import numpy as np

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import PRECISIONS as KINDS_BY_PRECISION
from mrl.prefix import top_k

PRECISIONS = tuple(KINDS_BY_PRECISION)  # float32, int8, binary: the first-stage kinds that are precisions
RESCORE_SHORTLIST = 100
RESCORED = "+rescore"


def parse_precisions(text: str | None) -> list[str]:
    """``"float32,int8,binary"`` -> the list, checked (float32 is always evaluated)."""
    items = [p.strip() for p in (text or "float32").split(",") if p.strip()]
    bad = [p for p in items if p not in PRECISIONS]
    if bad:
        raise MrlError(f"--precision {bad[0]!r} is unknown (choose from: {', '.join(PRECISIONS)})")
    return ["float32", *[p for p in dict.fromkeys(items) if p != "float32"]]


def base_precision(method: str) -> str:
    """``"binary+rescore"`` -> ``"binary"``; ``"truncate"`` (the float prefix) -> ``"float32"``."""
    name = method.removesuffix(RESCORED)
    return "float32" if name == "truncate" else name


def is_precision_method(method: str) -> bool:
    return base_precision(method) in PRECISIONS[1:]


def bytes_per_vector(precision: str, dim: int) -> float:
    """RAM per vector of ``dim`` dims at ``precision`` (a ``+rescore`` variant costs its codes)."""
    return KINDS_BY_PRECISION[base_precision(precision)].bytes_per_vector(dim)


def check_precision_dims(precisions: list[str], dims: list[int]) -> None:
    for p in precisions:
        step = KINDS_BY_PRECISION[p].dim_multiple
        odd = [d for d in dims if d % step]
        if odd:
            raise MrlError(f"--precision {p} packs {step} dims per byte: dim {odd[0]} is not a multiple of {step}")


def ranked(xq: np.ndarray, xb: np.ndarray, precision: str, depth: int, rescore: int | None) -> np.ndarray:
    """Row ids ``(nq, depth)`` of the corpus prefixes ``xb`` for the query prefixes ``xq`` (both renormalised),
    searched on ``precision`` codes, then (``rescore``) the top ``rescore`` rescored in float32."""
    return ranked_all(xq, xb, precision, depth, [rescore])[0]


def ranked_all(xq: np.ndarray, xb: np.ndarray, precision: str, depth: int,
               rescores: list[int | None]) -> list[np.ndarray]:
    """:func:`ranked` for several rescore shortlists, from one structure and one search."""
    from mrl.index.first_stages import structures as first_stage
    from mrl.index.first_stages.kinds import FirstStageSpec

    spec = FirstStageSpec(KINDS_BY_PRECISION[precision].name, xb.shape[1])
    index = first_stage.build(spec, xb)
    depth = min(depth, len(xb))
    rows = first_stage.search(spec, index, xq, max([depth, *[r or 0 for r in rescores]]))[1]  # (nq, R), best first
    return [rows[:, :depth] if not r else _rescored(xq, xb, rows[:, : max(r, depth)], depth) for r in rescores]


def _rescored(xq: np.ndarray, xb: np.ndarray, rows: np.ndarray, depth: int) -> np.ndarray:
    safe = np.where(rows >= 0, rows, 0)
    scores = np.einsum("qd,qrd->qr", xq, xb[safe])
    scores[rows < 0] = -np.inf
    return top_k(scores.astype(np.float32), rows, depth)[1]
