"""qdrant-client: a collection on a Qdrant server or cluster, or in qdrant-client's local mode."""

from __future__ import annotations

import uuid
from typing import Any

from mrl.errors import MrlError
from mrl.index.filters import Filter
from mrl.index.qdrant.engines import Stage, VectorSpec, require_client
from mrl.index.qdrant.payload_filter import Models, to_qdrant


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
                                            quantization_config=quant, hnsw_config=m.HnswConfigDiff(
                                                m=v.m if v.graph else 0, ef_construct=v.ef_construct))
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

    def index_fields(self, create: dict[str, str], drop: list[str]) -> None:
        """Payload indexes: ``create`` maps a payload path to ``keyword``, ``integer`` or ``float``."""
        import warnings

        m = self.models
        with warnings.catch_warnings():  # local mode has no payload indexes and says so; a server builds them
            warnings.filterwarnings("ignore", "Payload indexes have no effect in the local Qdrant")
            for path in drop:
                self._call(self.client.delete_payload_index, self.collection, path, wait=True)
            for path, schema in create.items():
                self._call(self.client.create_payload_index, self.collection, path,
                           field_schema=getattr(m.PayloadSchemaType, schema.upper()), wait=True)

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
