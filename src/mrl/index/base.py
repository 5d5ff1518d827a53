"""The searcher seam: what the CLI, ``tune`` and the HTTP service need from an index backend.

``MrlIndex`` (embedded, faiss first stages over memory-mapped vectors) is the default; another
backend (a Qdrant collection, say) implements :class:`Searcher` and is reached through
:func:`open_index` without changes to its callers.

>>> index = open_index("idx")                      # a folder: MrlIndex
>>> scores, ids = index.search(xq, k=10)           # a SearchResult unpacks like the tuple
>>> index.search(xq, k=10).ids                     # or by name
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

import numpy as np

from mrl.errors import MrlError

if TYPE_CHECKING:
    from mrl.adapt.base import Adaptor
    from mrl.index.cascade import Cascade, FirstStageSpec
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
               adapted: bool = False, work: Work | None = None) -> SearchResult:
        """Top-``k`` per query through ``cascade``; ``work`` (if given) collects each stage's work."""

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

    def max_width(self, spec: FirstStageSpec) -> int:
        """The largest search width a first stage takes (inverted lists; 0: no width)."""

    def stats(self) -> dict[str, Any]:
        """At least ``count``, ``dim``, ``model``, ``id_kind``, ``generation``, ``default_cascade``,
        ``segments``, ``deleted_rows`` and ``first_stages`` (``{spec: {"bytes_per_vector"}}``)."""

    def check_adaptor(self, adaptor: Adaptor | None) -> None:
        """Refuse an adaptor the caller means to query with that is not the one the index applies."""

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Any = None) -> Searcher:
        """Commit a default cascade (with its tuning record and, for a gated one, its fitted gate)."""

    def refresh(self) -> Searcher:
        """The newest committed snapshot (``self`` when nothing changed); raises when it cannot be opened."""


def open_index(uri: str | Path, api_key: str | None = None) -> Searcher:
    """The searcher at ``uri``: a folder (or ``file://PATH``) holding an mrl index; a folder that
    ``--backend qdrant-edge`` wrote, or ``qdrant-edge://PATH``; a Qdrant server's collection,
    ``qdrant://HOST:PORT/COLLECTION`` (``qdrants://`` for https, ``api_key`` for its key)."""
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    from mrl.index import qdrant

    if sep and scheme in qdrant.SCHEMES:
        return qdrant.open_qdrant(text, api_key or os.environ.get("MRL_QDRANT_API_KEY"))
    if sep and scheme != "file":
        raise MrlError(f"{text}: index backend {scheme!r} is not supported (supported: a folder, file://PATH, "
                       f"{', '.join(s + '://' for s in qdrant.SCHEMES)})")
    path = Path(rest if sep else text)
    if qdrant.is_qdrant_edge(path):
        return qdrant.open_qdrant(f"qdrant-edge://{path}")
    from mrl.index.index import MrlIndex

    return MrlIndex.open(path)
