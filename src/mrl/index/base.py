"""What every index backend is to its callers: :class:`Searcher` (reads), :class:`Writer`
(add, delete, compact, verify) and :class:`Tunable` (what ``tune`` and the gates need).

``MrlIndex`` (embedded, faiss first stages over memory-mapped vectors) is the default; the
Qdrant backends implement the same protocols, and :mod:`mrl.index.backends` is the one place
that knows which backend a URI or folder is.

>>> index = open_index("idx")                      # a folder: MrlIndex
>>> scores, ids = index.search(xq, k=10)           # a SearchResult unpacks like the tuple
>>> index.search(xq, k=10).ids                     # or by name
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

if TYPE_CHECKING:
    from mrl.adapt.base import Adaptor
    from mrl.index.cascade import Cascade, FirstStageSpec
    from mrl.index.gate import Gate
    from mrl.index.work import Work


class SearchResult(NamedTuple):
    """The one search-result contract: float32 ``scores`` and int64 ``ids``, both ``(nq, k)``,
    best first; id -1 (score -inf) pads rows where fewer than ``k`` hits exist."""

    scores: np.ndarray
    ids: np.ndarray


@runtime_checkable
class Searcher(Protocol):
    """A searchable snapshot of an index. Methods that change it return the new snapshot."""

    dim: int
    adaptor: Adaptor | None  # applied to every query (None: queries are used as given)

    @property
    def count(self) -> int:
        """Live vectors."""

    @property
    def generation(self) -> int:
        """Counts commits: a later snapshot has a larger one."""

    @property
    def model(self) -> str | None:
        """The model the vectors came from, when recorded (the service encodes text with it)."""

    @property
    def default_cascade(self) -> Cascade: ...

    @property
    def first_stages(self) -> list[FirstStageSpec]:
        """The first-stage structures a cascade can start from."""

    def search(self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *,
               adapted: bool = False, work: Work | None = None, filter: Any = None) -> SearchResult:
        """Top-``k`` per query through ``cascade``; ``work`` (if given) collects each stage's work;
        ``filter`` (a dict, JSON text or :class:`~mrl.index.filters.Filter`): only rows whose payload
        it lets through, still ``k`` of them when that many exist (:mod:`mrl.index.filters`)."""

    def exact_search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, *,
                     adapted: bool = False) -> SearchResult: ...

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        """The checked cascade a search with ``k`` runs, shortlists clamped to the live count."""

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        """Checked float queries in the stored space (through the adaptor unless ``adapted``)."""

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        """The user-facing id of every int64 id (``None`` for -1)."""

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``min(n, count)`` stored vectors of distinct random live rows, float32 ``(m, dim)``."""

    def stats(self) -> dict[str, Any]:
        """At least ``count``, ``dim``, ``model``, ``id_kind``, ``generation``, ``default_cascade``,
        ``segments``, ``deleted_rows`` and ``first_stages`` (``{spec: {"bytes_per_vector"}}``)."""

    def check_adaptor(self, adaptor: Adaptor | None) -> None:
        """Refuse an adaptor the caller means to query with that is not the one the index applies."""

    def refresh(self) -> Searcher:
        """The newest committed snapshot (``self`` when nothing changed); raises when it cannot be opened."""


@runtime_checkable
class Writer(Protocol):
    """An index that takes changes; each returns the snapshot after it (nothing changes when one fails)."""

    def add(self, vectors: np.ndarray, ids: Any, payloads: Any = None) -> Writer:
        """Upsert: new ids are added, existing ones replaced (with their payload: one JSON object or
        ``None`` per id in ``payloads``)."""

    def delete(self, ids: Any) -> Writer:
        """Delete by id; every id must exist and be named once (else nothing changes)."""

    def compact(self) -> Writer:
        """Merge segments and drop deleted rows."""

    def verify(self) -> list[str]:
        """Every problem found (empty when intact)."""


@runtime_checkable
class Tunable(Searcher, Protocol):
    """What ``mrl index tune`` and the adaptive gates need beyond reads, with no private access."""

    #: whether :meth:`search_gated` runs (only backends that run the stage loop themselves)
    supports_gates: bool

    def max_width(self, spec: FirstStageSpec) -> int:
        """The largest search width a first stage takes (inverted lists; 0: no width)."""

    def first_stage_scores(self, xq: np.ndarray, plan: Cascade, width: int | None = None) -> np.ndarray:
        """The first stage's scores ``(nq, n1)`` of ``plan`` (stored-space queries), best first."""

    def search_gated(self, xq: np.ndarray, k: int, plan: Cascade, gate: Gate, chosen: np.ndarray | None = None,
                     work: Work | None = None) -> SearchResult:
        """``plan`` with ``gate`` (``chosen``: a level per query instead of the gate's choice)."""

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Gate | None = None) -> Tunable:
        """Commit a default cascade (with its tuning record and, for a gated one, its fitted gate)."""
