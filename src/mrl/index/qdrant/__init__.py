"""Qdrant backends of the funnel: ``qdrant-edge://PATH`` (in-process) and ``qdrant://HOST:PORT/COLLECTION``
(a server or cluster; ``qdrants://`` for https; ``qdrant-local://PATH/COLLECTION`` is qdrant-client's
local mode, for development and tests). Both need ``pip install 'mrl[qdrant]'``.

>>> index = build_qdrant("qdrant-edge://qidx", xb, ids, first_stages=["int8@64"])
>>> index = open_qdrant("qdrant://localhost:6333/docs", api_key=KEY)
"""

from __future__ import annotations

import atexit
from pathlib import Path
from typing import Any

from mrl.errors import MrlError
from mrl.index.qdrant.client import ClientEngine
from mrl.index.qdrant.edge import EdgeEngine, close_edge
from mrl.index.qdrant.engines import META, require_client, require_edge
from mrl.index.qdrant.funnel import QdrantIndex

__all__ = ["QdrantIndex", "SCHEMES", "build_qdrant", "close_edge", "is_qdrant_edge", "is_qdrant_uri", "open_qdrant",
           "require_client", "require_edge"]

SCHEMES = ("qdrant-edge", "qdrant", "qdrants", "qdrant-local")
_LOCAL_CLIENTS: dict[Path, Any] = {}  # qdrant-client's local mode locks its folder: one client per folder


@atexit.register
def _close_local_clients() -> None:  # before interpreter shutdown, where their own __del__ fails noisily
    for client in _LOCAL_CLIENTS.values():
        client.close()
    _LOCAL_CLIENTS.clear()


def is_qdrant_edge(path: str | Path) -> bool:
    """A folder that ``mrl index build --backend qdrant-edge`` wrote."""
    return (Path(path) / META).is_file()


def is_qdrant_uri(uri: str) -> bool:
    return str(uri).partition("://")[0] in SCHEMES and "://" in str(uri)


def _engine_args(uri: str) -> tuple[str, Any, str]:
    """``(scheme, location, collection)`` of a qdrant URI; the error names what is malformed."""
    scheme, sep, rest = str(uri).partition("://")
    if not sep or scheme not in SCHEMES:
        raise MrlError(f"{uri}: not a qdrant URI (expected {', '.join(s + '://' for s in SCHEMES)})")
    if scheme == "qdrant-edge":
        return scheme, rest, ""
    location, _, collection = rest.rstrip("/").rpartition("/")
    if not location or not collection:
        raise MrlError(f"{uri}: expected {scheme}://{'PATH' if scheme == 'qdrant-local' else 'HOST:PORT'}/COLLECTION")
    return scheme, location, collection


def _client(scheme: str, location: str, api_key: str | None) -> Any:
    if scheme == "qdrant-local":
        path = Path(location).resolve()
        if path not in _LOCAL_CLIENTS:
            _LOCAL_CLIENTS[path] = ClientEngine.connect(path=str(path))
        return _LOCAL_CLIENTS[path]
    return ClientEngine.connect(url=f"{'https' if scheme == 'qdrants' else 'http'}://{location}", api_key=api_key)


def open_qdrant(uri: str, api_key: str | None = None) -> QdrantIndex:
    scheme, location, collection = _engine_args(uri)
    if scheme == "qdrant-edge":
        return QdrantIndex.open(EdgeEngine.open(location))
    require_client()
    return QdrantIndex.open(ClientEngine.open(_client(scheme, location, api_key), collection, str(uri)))


def build_qdrant(uri: str, vectors: Any, ids: Any = None, *, api_key: str | None = None, overwrite: bool = False,
                 shards: int | None = None, replicas: int | None = None, **options: Any) -> QdrantIndex:
    """A new index at ``uri`` (see :meth:`QdrantIndex.build` for ``options``); ``shards`` and
    ``replicas`` pass through to the server's collection."""
    scheme, location, collection = _engine_args(uri)
    if scheme == "qdrant-edge":
        require_edge()
        if shards or replicas:
            raise MrlError("--shards/--replicas: a qdrant-edge index is one local shard; use a qdrant:// server")
        return QdrantIndex.build(lambda layout: EdgeEngine.create(location, layout, overwrite), vectors, ids, **options)
    require_client()
    client = _client(scheme, location, api_key)
    return QdrantIndex.build(lambda layout: ClientEngine.create(client, collection, str(uri), layout, overwrite,
                                                                shards, replicas), vectors, ids, **options)
