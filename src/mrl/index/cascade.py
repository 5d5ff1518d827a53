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

from mrl.errors import MrlError

GATE_SUFFIX = "@gate"
FIRST_STAGE_KINDS = ("exact", "int8", "binary", "hnsw", "ivf8", "ivfpq", "rabitq")
WIDTH_KINDS = ("hnsw", "ivf8", "ivfpq", "rabitq")  # first stages whose search width can be set


@dataclass(frozen=True)
class FirstStageSpec:
    """A first-stage structure over the ``dim``-prefix: ``kind@dim`` (e.g. ``hnsw@64``)."""

    kind: str
    dim: int

    def __str__(self) -> str:
        return f"{self.kind}@{self.dim}"


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


def parse_first_stage(text: str, full_dim: int | None = None) -> FirstStageSpec:
    """``"int8@64"`` -> ``FirstStageSpec("int8", 64)``; the error names the bad part."""
    kind, sep, dim_text = text.strip().partition("@")
    if not sep:
        raise MrlError(f"first stage {text!r}: expected KIND@DIM, e.g. int8@64 (kinds: {', '.join(FIRST_STAGE_KINDS)})")
    if kind not in FIRST_STAGE_KINDS:
        raise MrlError(f"first stage {text!r}: unknown kind {kind!r} (expected one of {', '.join(FIRST_STAGE_KINDS)})")
    dim = _positive_int(dim_text, f"first stage {text!r}: dimension")
    if full_dim is not None and dim > full_dim:
        raise MrlError(f"first stage {text!r}: dimension {dim} exceeds the vectors' dimension {full_dim}")
    if kind == "binary" and dim % 8:
        raise MrlError(f"first stage {text!r}: binary codes need a dimension divisible by 8")
    return FirstStageSpec(kind, dim)


def parse_cascade(text: str, full_dim: int | None = None) -> Cascade:
    """Parse and validate ``[KIND@]DIM:SHORTLIST,...``.

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
    kind: str | None = None
    width: int | None = None
    stages: list[tuple[int, int]] = []
    for i, item in enumerate(items):
        if "@" in item:
            if i:
                raise MrlError(f"cascade {text!r}: only the first stage names a kind ({item!r})")
            kind, _, item = item.partition("@")
            if kind not in FIRST_STAGE_KINDS:
                raise MrlError(f"cascade {text!r}: unknown first-stage kind {kind!r} "
                               f"(expected one of {', '.join(FIRST_STAGE_KINDS)})")
        dim_text, sep, n_text = item.partition(":")
        if not sep:
            raise MrlError(f"cascade {text!r}: {item!r} is not DIM:SHORTLIST")
        n_text, slash, width_text = n_text.partition("/")
        if slash:
            if i:
                raise MrlError(f"cascade {text!r}: only the first stage takes a search width ({item!r})")
            width = _positive_int(width_text, f"cascade {text!r}: search width")
            if kind is not None and kind not in WIDTH_KINDS:
                raise MrlError(f"cascade {text!r}: a {kind} first stage has no search width "
                               f"(only {', '.join(WIDTH_KINDS)} do)")
        dim = _positive_int(dim_text, f"cascade {text!r}: dimension")
        n = _positive_int(n_text, f"cascade {text!r}: shortlist")
        if stages and (dim < stages[-1][0] or (dim == stages[-1][0] and len(stages) > 1)):
            raise MrlError(f"cascade {text!r}: dimensions must increase ({stages[-1][0]} then {dim}; only the "
                           "second stage may repeat the first's, to rescore its approximate scores exactly)")
        if stages and n > stages[-1][1]:
            raise MrlError(f"cascade {text!r}: a shortlist cannot grow ({stages[-1][1]} then {n})")
        if full_dim is not None and dim > full_dim:
            raise MrlError(f"cascade {text!r}: dimension {dim} exceeds the vectors' dimension {full_dim}")
        stages.append((dim, n))
    if kind == "binary" and stages[0][0] % 8:
        raise MrlError(f"cascade {text!r}: binary codes need a dimension divisible by 8")
    return Cascade(kind, tuple(stages), width, gated)


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


def _positive_int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise MrlError(f"{what} {text.strip()!r} is not an integer") from None
    if value <= 0:
        raise MrlError(f"{what} must be positive, got {value}")
    return value
