"""qdrant-edge-py: the Qdrant engine in-process over a local folder (its WAL locks it to one process)."""

from __future__ import annotations

import json
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

from mrl._fs import atomic_write_text, disk_bytes
from mrl.errors import MrlError
from mrl.index.filters import Filter
from mrl.index.qdrant.engines import META, Stage, VectorSpec, require_edge
from mrl.index.qdrant.payload_filter import Models, to_qdrant

_SHARDS: dict[Path, tuple[Any, str]] = {}  # one open edge shard (and its name) per folder (Qdrant locks it)


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
            hnsw = qe.HnswIndexConfig(m=v.m if v.graph else 0, ef_construct=v.ef_construct,
                                      full_scan_threshold=1 if v.graph else 10_000)
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

    def index_fields(self, create: dict[str, str], drop: list[str]) -> None:
        """Payload indexes: ``create`` maps a payload path to ``keyword``, ``integer`` or ``float``."""
        qe = self.qe
        for path in drop:
            self.shard.update(qe.UpdateOperation.delete_field_index(path))
        for path, schema in create.items():
            self.shard.update(qe.UpdateOperation.create_field_index(path, getattr(qe.PayloadSchemaType,
                                                                                  schema.capitalize())))

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
