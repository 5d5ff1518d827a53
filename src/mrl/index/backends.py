"""The one place that knows the index backends: a URI scheme or a folder -> open / build / verify.

========================  =============================================  ==========================
where                     backend                                         ``--backend`` (build)
========================  =============================================  ==========================
``PATH``, ``file://PATH``  :class:`~mrl.index.local.MrlIndex` (faiss)      ``mrl``
``qdrant-edge://PATH``,   Qdrant's engine in-process (one shard)          ``qdrant-edge``
a folder it wrote
``qdrant://H:P/C``,       a Qdrant server or cluster (``qdrants``: https)  ``qdrant``
``qdrants://H:P/C``
``qdrant-local://P/C``    qdrant-client's local mode (development)        --
``postgresql://U@H:P/DB   a table in Postgres with pgvector                ``postgres``
?table=T`` (``postgres``)
========================  =============================================  ==========================
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.errors import MrlError
from mrl.index.base import Searcher


@dataclass(frozen=True)
class Backend:
    """One backend: the ``--backend`` name a build takes, the URI schemes it answers, its first-stage kinds."""

    name: str
    schemes: tuple[str, ...]
    kinds: tuple[str, ...]
    open: Callable[[str, str | None], Searcher]  # (uri, api key) -> the newest snapshot
    build: Callable[..., Searcher]  # (uri, vectors, ids, **options) -> the new index


def _open_mrl(uri: str, api_key: str | None) -> Searcher:
    from mrl.index.local import MrlIndex

    return MrlIndex.open(uri.removeprefix("file://"))


def _build_mrl(uri: str, vectors: Any, ids: Any = None, **options: Any) -> Searcher:
    from mrl.index.local import MrlIndex

    return MrlIndex.build(uri.removeprefix("file://"), vectors, ids, **options)


def _open_qdrant(uri: str, api_key: str | None) -> Searcher:
    from mrl.index import qdrant

    return qdrant.open_qdrant(uri, api_key or os.environ.get("MRL_QDRANT_API_KEY"))


def _build_qdrant(uri: str, vectors: Any, ids: Any = None, **options: Any) -> Searcher:
    from mrl.index import qdrant

    return qdrant.build_qdrant(uri, vectors, ids, **options)


def _open_postgres(uri: str, api_key: str | None) -> Searcher:
    from mrl.index import postgres

    return postgres.open_postgres(uri)


def _build_postgres(uri: str, vectors: Any, ids: Any = None, **options: Any) -> Searcher:
    from mrl.index import postgres

    return postgres.build_postgres(uri, vectors, ids, **options)


_ALL = ("exact", "int8", "binary", "hnsw", "ivf8", "ivfpq", "rabitq")
_QDRANT = ("exact", "int8", "binary", "hnsw")  # inverted files are faiss structures
_POSTGRES = ("exact", "binary", "hnsw")  # pgvector indexes: HNSW over float or bit prefixes
BACKENDS = {b.name: b for b in (
    Backend("mrl", ("file",), _ALL, _open_mrl, _build_mrl),
    Backend("qdrant-edge", ("qdrant-edge",), _QDRANT, _open_qdrant, _build_qdrant),
    Backend("qdrant", ("qdrant", "qdrants", "qdrant-local"), _QDRANT, _open_qdrant, _build_qdrant),
    Backend("postgres", ("postgresql", "postgres"), _POSTGRES, _open_postgres, _build_postgres),
)}
SCHEMES = {scheme: b for b in BACKENDS.values() for scheme in b.schemes}
EDGE_META = "mrl-qdrant.json"  # what a qdrant-edge folder holds beside its shard


def backend_of(uri: str | Path) -> tuple[Backend, str]:
    """The backend of ``uri`` and the URI in its own form (a qdrant-edge folder becomes ``qdrant-edge://PATH``)."""
    text = str(uri)
    scheme, sep, rest = text.partition("://")
    if sep:
        if scheme not in SCHEMES:
            known = ", ".join(s + "://" for s in SCHEMES if s != "file")
            raise MrlError(f"{text}: index backend {scheme!r} is not supported (supported: a folder, file://PATH, "
                           f"{known})")
        return SCHEMES[scheme], text
    if (Path(text) / EDGE_META).is_file():
        return BACKENDS["qdrant-edge"], f"qdrant-edge://{text}"
    return BACKENDS["mrl"], text


def open_index(uri: str | Path, api_key: str | None = None) -> Any:
    """The index at ``uri`` (see the table above); ``api_key`` for a Qdrant server (default
    ``$MRL_QDRANT_API_KEY``). The result is a :class:`~mrl.index.base.Searcher`; the mrl and qdrant
    backends are also :class:`~mrl.index.base.Writer` and :class:`~mrl.index.base.Tunable`."""
    backend, where = backend_of(uri)
    return backend.open(where, api_key)


def build_index(backend: str, uri: str, vectors: Any, ids: Any = None, **options: Any) -> Any:
    """A new index of ``backend`` at ``uri`` from ``vectors``; the options are the backend's build options."""
    if backend not in BACKENDS:
        raise MrlError(f"--backend {backend!r}: expected {', '.join(BACKENDS)}")
    held = folder_kind(uri)
    if held is not None and held != backend:  # a folder opens as one kind: a second one inside would never be read
        raise MrlError(f"{uri}: the folder holds a {held} index; one index kind per folder: build the {backend} "
                       "index into another folder, or remove that one first")
    return BACKENDS[backend].build(uri, vectors, ids, **options)


def folder_kind(uri: str | Path) -> str | None:
    """Which local index a folder holds (``mrl`` or ``qdrant-edge``), or ``None`` (none, or not a folder URI)."""
    scheme, sep, rest = str(uri).partition("://")
    if sep and scheme not in ("file", "qdrant-edge"):
        return None
    folder = Path(rest if sep else str(uri))
    if (folder / EDGE_META).is_file():
        return "qdrant-edge"
    return "mrl" if (folder / "manifest.json").is_file() else None


def is_local_folder(uri: str | Path) -> bool:
    """An mrl index folder (verified by its checksums, not by opening it)."""
    return backend_of(uri)[0].name == "mrl"
