"""Cascades (funnels): a first stage on a short prefix, then reranks on longer prefixes.

Written ``[KIND@]DIM:SHORTLIST,DIM:SHORTLIST,...``, e.g. ``int8@64:1000,128:100,384:10``:
the first stage searches the 64-dim prefix with the int8 structure and keeps 1,000 candidates,
the next stage rescores them on the 128-dim prefix (read from the full vectors) and keeps 100,
the last rescores those on all 384 dims and keeps 10. Dimensions increase, except that the
second stage may repeat the first stage's: ``rabitq@768:100/64,768:10`` rescores the
approximate (quantised) first-stage scores exactly on the same prefix, as faiss's
``IndexRefineFlat`` does.

A cascade that ends with ``@gate`` (``int8@64:2000,384:10@gate``) is gated: per query, the gate the
index stores (``mrl index tune --adaptive``, :mod:`mrl.index.gate`) reads the first stage's scores
and decides how much of its shortlist the next stage rescores, or whether any rescoring runs.

The first item may end with ``/WIDTH``, how widely the first stage searches: the number of
inverted lists an ``ivf8``/``ivfpq``/``rabitq`` stage scans (faiss's ``nprobe``) or the candidate queue
of an ``hnsw`` stage (``efSearch``), e.g. ``rabitq@512:100/128,768:10``. Without it the width
follows from the shortlist.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mrl.errors import LimitError, MrlError
from mrl.index.first_stages.kinds import (
    WIDTH_KINDS,
    FirstStageSpec,
    check_dim_multiple,
    kind,
    parse_first_stage,
    positive_int,
)

__all__ = ["Cascade", "FirstStageSpec", "parse_cascade", "parse_first_stage", "resolve_plan"]

GATE_SUFFIX = "@gate"
MAX_STAGES = 8  # a first stage and up to 7 rescoring stages: more only multiplies the work of a query


@dataclass(frozen=True)
class Cascade:
    """``stages[0]`` uses a first-stage structure; every later stage rescores from the full vectors."""

    kind: str | None  # None: whichever first stage the index holds for stages[0]'s dim
    stages: tuple[tuple[int, int], ...]  # ((dim, shortlist), ...), dims increasing (stage 2 may equal stage 1)
    width: int | None = None  # the first stage's search width (nprobe / efSearch); None: from the shortlist
    gated: bool = False  # per-query depth from the index's gate

    def __str__(self) -> str:
        parts = [f"{d}:{n}" for d, n in self.stages]
        if self.width is not None:
            parts[0] += f"/{self.width}"
        if self.kind:
            parts[0] = f"{self.kind}@{parts[0]}"
        return ",".join(parts) + (GATE_SUFFIX if self.gated else "")

    @property
    def ungated(self) -> Cascade:
        return Cascade(self.kind, self.stages, self.width)

    @property
    def first(self) -> tuple[int, int]:
        return self.stages[0]

    @property
    def work(self) -> int:
        """Candidate-dimensions one query costs: the first shortlist at its prefix, then every stage's
        candidates (the previous shortlist) at that stage's prefix. Bounds the work of a request."""
        (d1, n1), rest = self.stages[0], self.stages[1:]
        return d1 * n1 + sum(d * n_prev for (d, _), (_, n_prev) in zip(rest, self.stages))


def parse_cascade(text: str, full_dim: int | None = None) -> Cascade:
    """Parse and validate ``[KIND@]DIM:SHORTLIST[/WIDTH],DIM:SHORTLIST,...[@gate]``.

    Raises:
        MrlError: dims that do not increase or exceed ``full_dim``, shortlists that grow
            or are not positive, an unknown first-stage kind, a malformed item.
    """
    body = text.strip()
    gated = body.endswith(GATE_SUFFIX)
    if gated:
        body = body[: -len(GATE_SUFFIX)]
    items = [s.strip() for s in body.split(",") if s.strip()]
    if not items:
        raise MrlError(f"cascade {text!r} is empty; expected e.g. 64:1000,384:10")
    if gated and len(items) < 2:
        raise MrlError(f"cascade {text!r}: a gate decides how much the next stage rescores, so a gated cascade "
                       "needs a rescoring stage, e.g. int8@64:2000,384:10@gate")
    if len(items) > MAX_STAGES:
        raise LimitError(f"cascade {text[:60]!r}...: {len(items)} stages, more than the {MAX_STAGES} a cascade may "
                         "have (MAX_STAGES)")
    name, width, first = _first_item(text, items[0])
    stages = [first]
    for item in items[1:]:
        if "@" in item or "/" in item:
            what = "names a kind" if "@" in item else "takes a search width"
            raise MrlError(f"cascade {text!r}: only the first stage {what} ({item!r})")
        stages.append(_stage(text, item, stages))
    for d, _ in stages:
        if full_dim is not None and d > full_dim:
            raise MrlError(f"cascade {text!r}: dimension {d} exceeds the vectors' dimension {full_dim}")
    if name is not None:
        check_dim_multiple(kind(name), stages[0][0], f"cascade {text!r}")
    return Cascade(name, tuple(stages), width, gated)


def _first_item(text: str, item: str) -> tuple[str | None, int | None, tuple[int, int]]:
    """``[KIND@]DIM:SHORTLIST[/WIDTH]`` -> (kind, width, (dim, shortlist))."""
    name: str | None = None
    if "@" in item:
        name, _, item = item.partition("@")
        kind(name, f"cascade {text!r}")
    item, slash, width_text = item.partition("/")
    width = positive_int(width_text, f"cascade {text!r}: search width") if slash else None
    if width is not None and name is not None and not kind(name).width:
        raise MrlError(f"cascade {text!r}: a {name} first stage has no search width "
                       f"(only {', '.join(WIDTH_KINDS)} do)")
    return name, width, _stage(text, item, [])


def _stage(text: str, item: str, before: list[tuple[int, int]]) -> tuple[int, int]:
    """``DIM:SHORTLIST`` after the stages ``before``: dims increase, shortlists do not grow."""
    dim_text, sep, n_text = item.partition(":")
    if not sep:
        raise MrlError(f"cascade {text!r}: {item!r} is not DIM:SHORTLIST")
    dim = positive_int(dim_text, f"cascade {text!r}: dimension")
    n = positive_int(n_text, f"cascade {text!r}: shortlist")
    if before and (dim < before[-1][0] or (dim == before[-1][0] and len(before) > 1)):
        raise MrlError(f"cascade {text!r}: dimensions must increase ({before[-1][0]} then {dim}; only the "
                       "second stage may repeat the first's, to rescore its approximate scores exactly)")
    if before and n > before[-1][1]:
        raise MrlError(f"cascade {text!r}: a shortlist cannot grow ({before[-1][1]} then {n})")
    return dim, n


def check_k(k: object, count: int) -> None:
    """``k`` is a positive integer no larger than the number of live vectors."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise MrlError(f"k must be a positive integer, got {k!r}")
    if k > count:
        raise MrlError(f"k={k} exceeds the number of vectors in the index ({count})")


def resolve_plan(cascade: str | Cascade | None, k: int, default: Cascade, dim: int, count: int) -> Cascade:
    """The cascade a search with ``k`` runs on ``count`` live ``dim``-dim vectors: checked, the
    default's shortlists raised to ``k``, and every shortlist (and width) clamped to ``count``,
    so the work of a search is bounded by the index, not by the request."""
    check_k(k, count)
    if cascade is None:
        plan = Cascade(default.kind, tuple((d, max(n, k)) for d, n in default.stages), default.width, default.gated)
    else:
        plan = cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, dim)
        if any(d > dim for d, _ in plan.stages):
            raise MrlError(f"cascade {plan}: a dimension exceeds the vectors' dimension {dim}")
        if k > plan.stages[-1][1]:
            raise MrlError(f"k={k} exceeds the last shortlist of cascade {plan} ({plan.stages[-1][1]})")
    width = min(plan.width, count) if plan.width is not None else None
    return Cascade(plan.kind, tuple((d, min(n, count)) for d, n in plan.stages), width, plan.gated)
