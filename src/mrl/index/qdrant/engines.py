"""The two ways to reach the Qdrant engine, behind one small interface the funnel uses.

``EdgeEngine``: qdrant-edge-py, the engine in-process over a local folder (its WAL locks it to one
process). ``ClientEngine``: qdrant-client, a Qdrant server or cluster by URL (or its local mode,
a folder, for development and tests). Both take the same vector layout (:class:`VectorSpec`) and
the same nested query (a list of :class:`Stage`, first stage first), and return plain
``(id, score)`` lists, so :class:`~mrl.index.qdrant.funnel.QdrantIndex` holds no client code.
The engines live in :mod:`.edge` and :mod:`.client`; this module holds what both share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from mrl.errors import MrlError

EDGE_HINT = "the qdrant-edge backend needs qdrant-edge-py: pip install 'mrl[qdrant]'"
CLIENT_HINT = "the qdrant backend needs qdrant-client: pip install 'mrl[qdrant]'"
META = "mrl-qdrant.json"


def require_edge() -> Any:
    try:
        import qdrant_edge
    except ImportError:
        raise MrlError(EDGE_HINT) from None
    return qdrant_edge


def require_client() -> Any:
    try:
        import qdrant_client
    except ImportError:
        raise MrlError(CLIENT_HINT) from None
    return qdrant_client


@dataclass(frozen=True)
class VectorSpec:
    """One named vector of every point."""

    name: str
    size: int
    quant: str | None = None  # "int8" | "binary" | None
    graph: bool = False  # an HNSW graph (else scanned)
    m: int = 16  # the graph's degree and construction queue
    ef_construct: int = 80
    on_disk: bool = False


@dataclass(frozen=True)
class Stage:
    """One level of the nested query: nearest ``limit`` points to ``vector`` on vector ``name``."""

    name: str
    vector: list[float]
    limit: int
    exact: bool = False
    hnsw_ef: int | None = None
    quantized: bool = False  # score with the quantised codes, no rescoring (a first stage)
    acorn: bool = False  # a filtered graph search that also walks through points the filter drops (ACORN-1)
