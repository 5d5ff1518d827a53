"""The two ways to reach the Qdrant engine, behind one small interface the funnel uses.

``EdgeEngine``: qdrant-edge-py, the engine in-process over a local folder (its WAL locks it to one
process). ``ClientEngine``: qdrant-client, a Qdrant server or cluster by URL (or its local mode,
a folder, for development and tests). Both take the same vector layout (:class:`VectorSpec`) and
the same nested query (a list of :class:`Stage`, first stage first), and return plain
``(id, score)`` lists, so :class:`~mrl.index.qdrant.funnel.QdrantIndex` holds no client code.
"""

from __future__ import annotations

import json
import re
import shutil
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl._fs import atomic_write_text, disk_bytes
from mrl.errors import MrlError
from mrl.index.filters import Filter
from mrl.index.qdrant.payload_filter import Models, to_qdrant

EDGE_HINT = "the qdrant-edge backend needs qdrant-edge-py: pip install 'mrl[qdrant]'"
CLIENT_HINT = "the qdrant backend needs qdrant-client: pip install 'mrl[qdrant]'"
META = "mrl-qdrant.json"
_SHARDS: dict[Path, tuple[Any, str]] = {}  # one open edge shard (and its name) per folder (Qdrant locks it)


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


class EdgeEngine:
    """qdrant-edge: a shard folder plus ``root/mrl-qdrant.json`` for mrl's description, which names the
    shard (``"shard"``; ``shard`` when absent, as written before). A rebuild writes a new shard beside
    the old one and commits by renaming the description in: a kill before that keeps the old index."""

    kind = "qdrant-edge"

    def __init__(self, root: Path, shard: Any, name: str = "shard") -> None:
        self.root, self.shard, self.name, self.qe = root, shard, name, require_edge()

    @classmethod
    def open(cls, root: str | Path) -> EdgeEngine:
        root = Path(root).resolve()
        if root not in _SHARDS:
            if not (root / META).is_file():
                raise MrlError(f"{root}: not a qdrant-edge index ({META} not found)")
            name = _shard_name(root)
            if not (root / name).is_dir():
                raise MrlError(f"{root}: {META} names a qdrant-edge shard, but {root}/{name} is missing")
            _SHARDS[root] = (_load_shard(root, name), name)
        shard, name = _SHARDS[root]
        return cls(root, shard, name)

    @classmethod
    def exists(cls, root: str | Path) -> bool:
        root = Path(root)
        return (root / META).exists() or (root / "shard").exists()

    @classmethod
    def create(cls, root: str | Path, vectors: list[VectorSpec], overwrite: bool, **_: Any) -> EdgeEngine:
        qe = require_edge()
        root = Path(root).resolve()
        if cls.exists(root):
            if not overwrite:
                raise MrlError(f"{root}: an index already exists there (pass overwrite / --overwrite to replace it)")
            close_edge(root)
            if (root / META).is_file():  # refused while another process (a running service) holds it
                _load_shard(root, _shard_name(root)).close()
        root.mkdir(parents=True, exist_ok=True)
        name = f"shard-{uuid.uuid4().hex[:12]}"  # beside the old shard: it stays the index until the commit
        params = {}
        for v in vectors:
            quant = {"int8": qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True),
                     "binary": qe.BinaryQuantizationConfig(always_ram=True)}.get(v.quant or "")
            hnsw = qe.HnswIndexConfig(m=16 if v.graph else 0, ef_construct=100, full_scan_threshold=1 if v.graph
                                      else 10_000)
            params[v.name] = qe.EdgeVectorParams(size=v.size, distance=qe.Distance.Cosine, on_disk=v.on_disk or None,
                                                 quantization_config=quant, hnsw_config=hnsw)
        config = qe.EdgeConfig(vectors=params, optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))
        try:
            shard = qe.EdgeShard.create(str(root / name), config)
        except Exception as e:
            raise MrlError(f"{root}: qdrant-edge cannot create the shard ({e})") from None
        _SHARDS[root] = (shard, name)
        return cls(root, shard, name)

    def read_meta(self) -> dict[str, Any]:
        path = self.root / META
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
            raise MrlError(f"{path}: cannot be read ({e})") from None

    def write_meta(self, meta: dict[str, Any]) -> None:
        """The commit point (names this shard); then the shards no description names are removed."""
        atomic_write_text(self.root / META, json.dumps({**meta, "shard": self.name}, indent=2) + "\n")
        for p in self.root.iterdir():
            if p.is_dir() and p.name != self.name and re.fullmatch(r"shard(-[0-9a-f]{12})?", p.name):
                shutil.rmtree(p, ignore_errors=True)

    def abandon(self) -> None:
        """Drop a shard that was being built and never committed (the previous index stays the index)."""
        close_edge(self.root)
        shutil.rmtree(self.root / self.name, ignore_errors=True)

    def upsert(self, points: list[tuple[int, dict[str, list[float]], dict | None]]) -> None:
        qe = self.qe
        self.shard.update(qe.UpdateOperation.upsert_points([qe.Point(i, v, p) for i, v, p in points]))

    def finish(self) -> None:
        self.shard.optimize()  # builds the quantised codes and graphs the first stages search
        self.shard.flush()

    def delete(self, ids: list[int]) -> None:
        self.shard.update(self.qe.UpdateOperation.delete_points(ids))

    def count(self, where: Filter | None = None) -> int:
        """Live points (``where``: those the filter lets through)."""
        qe = self.qe
        cond = to_qdrant(where, Models(qe.Filter, qe.FieldCondition, qe.MatchValue, qe.MatchAny, qe.RangeFloat)) \
            if where is not None else None
        return int(self.shard.count(qe.CountRequest(exact=True, filter=cond)))

    def retrieve(self, ids: list[int], payload: bool, vectors: list[str] | None) -> list[tuple[int, Any, Any]]:
        return [(r.id, r.payload, r.vector) for r in self.shard.retrieve(ids, payload, vectors or False)]

    def ids(self) -> list[int]:
        out, offset = [], None
        while True:
            records, offset = self.shard.scroll(self.qe.ScrollRequest(offset=offset, limit=10_000,
                                                                      with_payload=False, with_vector=False))
            out += [r.id for r in records]
            if offset is None:
                return out

    def query(self, queries: list[list[Stage]], k: int, where: Filter | None = None) -> list[list[tuple[int, float]]]:
        """Each query a nested prefetch; ``where`` (a payload filter) goes into every level of it."""
        qe = self.qe
        cond = to_qdrant(where, Models(qe.Filter, qe.FieldCondition, qe.MatchValue, qe.MatchAny, qe.RangeFloat)) \
            if where is not None else None

        def params(s: Stage) -> Any:
            return qe.SearchParams(hnsw_ef=s.hnsw_ef, exact=s.exact,
                                   quantization=qe.QuantizationSearchParams(rescore=False) if s.quantized else None,
                                   acorn=qe.AcornSearchParams(enable=True) if s.acorn else None)

        requests = []
        for stages in queries:
            inner = None
            for s in stages[:-1]:
                inner = qe.Prefetch(limit=s.limit, query=qe.Query.Nearest(s.vector, using=s.name), params=params(s),
                                    prefetches=[inner] if inner is not None else None, filter=cond)
            last = stages[-1]
            requests.append(qe.QueryRequest(limit=k, query=qe.Query.Nearest(last.vector, using=last.name),
                                            params=params(last), prefetches=[inner] if inner is not None else None,
                                            filter=cond))
        if not requests:
            return []
        return [[(p.id, p.score) for p in hits] for hits in self.shard.query_batch(qe.QueryBatchRequest(requests))]

    def segments(self) -> int:
        return int(self.shard.info().segments_count)

    def disk_bytes(self) -> int:
        return disk_bytes(self.root)

    def where(self) -> str:
        return str(self.root)


def close_edge(root: Path) -> None:
    held = _SHARDS.pop(Path(root).resolve(), None)
    if held is not None:
        held[0].close()


def _shard_name(root: Path) -> str:
    try:
        name = json.loads((root / META).read_text(encoding="utf-8")).get("shard", "shard")
    except (OSError, ValueError, AttributeError) as e:
        raise MrlError(f"{root / META}: cannot be read ({e})") from None
    if not isinstance(name, str) or not re.fullmatch(r"shard(-[0-9a-f]{12})?", name):
        raise MrlError(f"{root / META}: shard {name!r} is not a shard this mrl writes")
    return name


def _load_shard(root: Path, name: str) -> Any:
    try:
        return require_edge().EdgeShard.load(str(root / name))
    except MrlError:
        raise
    except Exception as e:  # qdrant_edge raises plain Exception with its message
        if "WouldBlock" in str(e):
            raise MrlError(f"{root}: another process has this qdrant-edge index open (Qdrant allows one); "
                           "stop it, or change the index through that process") from None
        raise MrlError(f"{root}: qdrant-edge cannot load the shard ({e})") from None


class ClientEngine:
    """qdrant-client: a collection on a Qdrant server or cluster (``url``), or in local mode (``path``).

    mrl's description lives in the collection's metadata (key ``mrl``).
    """

    kind = "qdrant"

    def __init__(self, client: Any, collection: str, label: str) -> None:
        self.client, self.collection, self.label = client, collection, label
        self.models = require_client().models
        self.replaces: str | None = None  # a rebuild: the name its alias takes over at the commit

    @staticmethod
    def connect(url: str | None = None, path: str | None = None, api_key: str | None = None) -> Any:
        qc = require_client()
        try:
            if path:
                return qc.QdrantClient(path=path)
            # the version check would warn, not fail, on an unreachable server; the first call names that
            return qc.QdrantClient(url=url, api_key=api_key, timeout=30, check_compatibility=False)
        except Exception as e:
            raise MrlError(f"qdrant {url or path}: cannot connect ({e})") from None

    @classmethod
    def open(cls, client: Any, collection: str, label: str) -> ClientEngine:
        engine = cls(client, collection, label)
        if not engine._call(client.collection_exists, collection):
            raise MrlError(f"{label}: collection {collection!r} does not exist")
        if "mrl" not in (engine._call(client.get_collection, collection).config.metadata or {}):
            raise MrlError(f"{label}: collection {collection!r} was not written by mrl (no 'mrl' metadata)")
        return engine

    @classmethod
    def create(cls, client: Any, collection: str, label: str, vectors: list[VectorSpec], overwrite: bool,
               shards: int | None = None, replicas: int | None = None) -> ClientEngine:
        engine = cls(client, collection, label)
        m = engine.models
        if engine._call(client.collection_exists, collection):
            if not overwrite:
                raise MrlError(f"{label}: collection {collection!r} already exists (pass --overwrite to replace it)")
            # built beside, under a name of its own; the commit points the name (an alias) at it
            engine.collection, engine.replaces = f"{collection}-mrl-{uuid.uuid4().hex[:8]}", collection
        config = {}
        for v in vectors:
            quant = {"int8": m.ScalarQuantization(scalar=m.ScalarQuantizationConfig(type=m.ScalarType.INT8,
                                                                                     always_ram=True)),
                     "binary": m.BinaryQuantization(binary=m.BinaryQuantizationConfig(always_ram=True)),
                     }.get(v.quant or "")
            config[v.name] = m.VectorParams(size=v.size, distance=m.Distance.COSINE, on_disk=v.on_disk or None,
                                            quantization_config=quant, hnsw_config=m.HnswConfigDiff(m=16 if v.graph
                                                                                                    else 0))
        engine._call(client.create_collection, engine.collection, vectors_config=config, shard_number=shards,
                     replication_factor=replicas, metadata={"mrl": {"building": True}})
        return engine

    def abandon(self) -> None:
        """Drop a collection that was being built beside the old one and never committed."""
        if self.replaces is not None:
            self._call(self.client.delete_collection, self.collection)

    def _swap(self) -> None:
        """Point the name at the rebuilt collection in one alias update; then drop what it named before."""
        m, name = self.models, self.replaces
        assert name is not None  # only a rebuild swaps
        aliases = {a.alias_name: a.collection_name for a in self._call(self.client.get_aliases).aliases}
        old = aliases.get(name)
        if old is None:  # an index built before aliases: a plain collection of that name (a short gap, once)
            self._call(self.client.delete_collection, name)
        ops = ([m.DeleteAliasOperation(delete_alias=m.DeleteAlias(alias_name=name))] if old else []) + [
            m.CreateAliasOperation(create_alias=m.CreateAlias(collection_name=self.collection, alias_name=name))]
        self._call(self.client.update_collection_aliases, change_aliases_operations=ops)
        if old is not None:
            self._call(self.client.delete_collection, old)
        self.collection, self.replaces = name, None

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except MrlError:
            raise
        except Exception as e:  # connection refused, 401/403, timeouts, server-side validation
            raise MrlError(f"{self.label}: qdrant {getattr(fn, '__name__', 'call')} failed "
                           f"({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})") from None

    def read_meta(self) -> dict[str, Any]:
        return dict((self._call(self.client.get_collection, self.collection).config.metadata or {}).get("mrl") or {})

    def write_meta(self, meta: dict[str, Any]) -> None:
        """The commit point: the description; a rebuild then takes over the name."""
        self._call(self.client.update_collection, self.collection, metadata={"mrl": meta})
        if self.replaces is not None:
            self._swap()

    def upsert(self, points: list[tuple[int, dict[str, list[float]], dict | None]]) -> None:
        m = self.models
        structs = [m.PointStruct(id=i, vector=v, payload=p) for i, v, p in points]
        self._call(self.client.upsert, self.collection, structs, wait=True)

    def finish(self) -> None:
        pass  # the server's optimisers index in the background

    def delete(self, ids: list[int]) -> None:
        self._call(self.client.delete, self.collection, points_selector=self.models.PointIdsList(points=ids), wait=True)

    def count(self, where: Filter | None = None) -> int:
        """Live points (``where``: those the filter lets through)."""
        m = self.models
        cond = to_qdrant(where, Models(m.Filter, m.FieldCondition, m.MatchValue, m.MatchAny, m.Range)) \
            if where is not None else None
        return int(self._call(self.client.count, self.collection, count_filter=cond, exact=True).count)

    def retrieve(self, ids: list[int], payload: bool, vectors: list[str] | None) -> list[tuple[int, Any, Any]]:
        records = self._call(self.client.retrieve, self.collection, ids, with_payload=payload,
                             with_vectors=vectors or False)
        return [(r.id, r.payload, r.vector) for r in records]

    def ids(self) -> list[int]:
        out, offset = [], None
        while True:
            records, offset = self._call(self.client.scroll, self.collection, limit=10_000, offset=offset,
                                         with_payload=False, with_vectors=False)
            out += [r.id for r in records]
            if offset is None:
                return out

    def query(self, queries: list[list[Stage]], k: int, where: Filter | None = None) -> list[list[tuple[int, float]]]:
        """Each query a nested prefetch; ``where`` (a payload filter) goes into every level of it."""
        m = self.models
        cond = to_qdrant(where, Models(m.Filter, m.FieldCondition, m.MatchValue, m.MatchAny, m.Range)) \
            if where is not None else None

        def params(s: Stage) -> Any:
            return m.SearchParams(hnsw_ef=s.hnsw_ef, exact=s.exact,
                                  quantization=m.QuantizationSearchParams(rescore=False) if s.quantized else None,
                                  acorn=m.AcornSearchParams(enable=True) if s.acorn else None)

        requests = []
        for stages in queries:
            inner = None
            for s in stages[:-1]:
                inner = m.Prefetch(query=s.vector, using=s.name, limit=s.limit, params=params(s),
                                   prefetch=inner, filter=cond)
            last = stages[-1]
            requests.append(m.QueryRequest(query=last.vector, using=last.name, limit=k, params=params(last),
                                           prefetch=inner, filter=cond))
        if not requests:
            return []
        responses = self._call(self.client.query_batch_points, self.collection, requests)
        return [[(p.id, p.score) for p in r.points] for r in responses]

    def segments(self) -> int:
        return int(self._call(self.client.get_collection, self.collection).segments_count or 0)

    def disk_bytes(self) -> int:
        return 0  # not visible through the API

    def where(self) -> str:
        return self.label
