"""The first-stage kinds, one entry each: what the cascade parser, ``auto``, ``eval --precision``,
``tune`` and every backend know of a kind, and nowhere else.

========  ==========================================  ===========================
kind      structure (faiss, on the mrl backend)       resident bytes per vector
========  ==========================================  ===========================
exact     ``IndexFlatIP`` (float32, BLAS for batches)  4 d
int8      ``IndexScalarQuantizer`` QT_8bit             d
binary    ``IndexBinaryFlat`` on sign bits (Hamming)   d / 8
hnsw      ``IndexHNSWSQ`` (int8 codes + graph)         d + 8 M
ivf8      ``IndexIVFScalarQuantizer``: int8 codes in   d + 8 + centroids
          inverted lists, 8-byte ids
ivfpq     ``IndexIVFPQ`` (d/8-byte PQ codes)           d / 8 + 8 + centroids
rabitq    ``IndexIVFRaBitQ``: 1 bit per dim plus two   d / 8 + 16 + centroids
          float factors
========  ==========================================  ===========================

Centroids: float16, about 8 sqrt(n) lists (:func:`nlist`), ``2 d nlist / n`` bytes per vector.
Kinds with a *width* take ``/WIDTH`` in a cascade: lists scanned (inverted files, faiss's
``nprobe``) or the candidate queue (hnsw, ``efSearch``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np

from mrl.errors import MrlError

ID_BYTES = 8  # an inverted file's id per vector
#: the HNSW graph every backend builds by default (faiss, Qdrant, pgvector alike), so that one cascade
#: finds the same neighbours wherever it runs: degree M and the construction queue (efConstruction)
HNSW_M = 16
EF_CONSTRUCTION = 80


#: the smallest HNSW search queue (pgvector's default ``hnsw.ef_search``)
EF_SEARCH_MIN = 40


def ef_search(n: int, width: int | None) -> int:
    """The HNSW search queue for a shortlist of ``n`` (a cascade's ``/WIDTH`` widens it), one rule
    for every backend: at least ``n``, so that the graph search can return ``n`` rows."""
    return max(n, width or 0, EF_SEARCH_MIN)


def check_hnsw(m: int, ef_construction: int) -> None:
    """The graph parameters every backend accepts."""
    if m < 2 or ef_construction < 1:
        raise MrlError(f"hnsw: M must be >= 2 and efConstruction >= 1 (got {m}, {ef_construction})")


@dataclass(frozen=True)
class FirstStageSpec:
    """A first-stage structure over the ``dim``-prefix: ``kind@dim`` (e.g. ``hnsw@64``)."""

    kind: str
    dim: int

    def __str__(self) -> str:
        return f"{self.kind}@{self.dim}"


@dataclass(frozen=True)
class Kind:
    """One first-stage kind."""

    name: str
    code_bytes: Callable[[int], float]  # bytes of one vector's code at d dims
    overhead: float = 0.0  # bytes per vector beside the code (ids, factors)
    width: bool = False  # takes a search width (/WIDTH)
    inverted: bool = False  # an inverted file: width = lists scanned, plus centroids in RAM
    graph: bool = False  # a graph: M links per vector
    dim_multiple: int = 1  # binary codes pack 8 dims to a byte
    precision: str | None = None  # its name in `mrl eval --precision` (None: not a precision)

    def bytes_per_vector(self, d: int, n: int | None = None, hnsw_m: int = 16) -> float:
        """Resident bytes per vector of this kind over a ``d``-prefix of ``n`` vectors."""
        size = self.code_bytes(d) + self.overhead
        if self.graph:
            size += 8.0 * hnsw_m
        if self.inverted and n:
            size += 2.0 * d * nlist(n) / max(n, 1)
        return size


KINDS: dict[str, Kind] = {k.name: k for k in (
    Kind("exact", lambda d: 4.0 * d, precision="float32"),
    Kind("int8", float, precision="int8"),
    Kind("binary", lambda d: d / 8, dim_multiple=8, precision="binary"),
    Kind("hnsw", float, width=True, graph=True),
    Kind("ivf8", float, ID_BYTES, width=True, inverted=True),
    Kind("ivfpq", lambda d: d / 8, ID_BYTES, width=True, inverted=True),
    Kind("rabitq", lambda d: d / 8, 2 * ID_BYTES, width=True, inverted=True),
)}
NAMES = tuple(KINDS)
WIDTH_KINDS = tuple(k.name for k in KINDS.values() if k.width)
PRECISIONS = {k.precision: k for k in KINDS.values() if k.precision}


def kind(name: str, where: str = "first stage") -> Kind:
    """The registry entry of ``name``; the error lists the kinds."""
    if name not in KINDS:
        raise MrlError(f"{where}: unknown first-stage kind {name!r} (expected one of {', '.join(NAMES)})")
    return KINDS[name]


def nlist(n: int) -> int:
    """Inverted lists for ``n`` vectors: 8 sqrt(n) to the nearest power of two (8,192 at 1M).

    Finer lists hold the true neighbours in fewer codes: on 1M x 768, rabitq@512 reaches recall
    0.95 after the rerank with ~128 of 4,096 lists but ~48-64 of 8,192 (docs/benchmarks.md).
    """
    return 1 << int(np.round(np.log2(8 * np.sqrt(n))))


def parse_first_stage(text: str, full_dim: int | None = None) -> FirstStageSpec:
    """``"int8@64"`` -> ``FirstStageSpec("int8", 64)``; the error names the bad part."""
    name, sep, dim_text = text.strip().partition("@")
    if not sep:
        raise MrlError(f"first stage {text!r}: expected KIND@DIM, e.g. int8@64 (kinds: {', '.join(NAMES)})")
    entry = kind(name, f"first stage {text!r}")
    dim = positive_int(dim_text, f"first stage {text!r}: dimension")
    if full_dim is not None and dim > full_dim:
        raise MrlError(f"first stage {text!r}: dimension {dim} exceeds the vectors' dimension {full_dim}")
    check_dim_multiple(entry, dim, f"first stage {text!r}")
    return FirstStageSpec(name, dim)


def check_dim_multiple(entry: Kind, dim: int, where: str) -> None:
    if dim % entry.dim_multiple:
        raise MrlError(f"{where}: {entry.name} codes need a dimension divisible by {entry.dim_multiple}")


def require(specs: Iterable[FirstStageSpec], supported: Iterable[str], backend: str) -> None:
    """Refuse, by name, a first stage whose kind ``backend`` does not build."""
    allowed = tuple(supported)
    bad = [str(s) for s in specs if s.kind not in allowed]
    if bad:
        raise MrlError(f"first stage {bad[0]}: {backend} build {', '.join(allowed)} first stages")


def positive_int(text: str, what: str) -> int:
    try:
        value = int(text.strip())
    except ValueError:
        raise MrlError(f"{what} {text.strip()!r} is not an integer") from None
    if value <= 0:
        raise MrlError(f"{what} must be positive, got {value}")
    return value
