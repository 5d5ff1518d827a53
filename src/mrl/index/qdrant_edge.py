"""``QdrantEdgeIndex``: the funnel on the Qdrant engine, in-process (``qdrant-edge-py``), as a :class:`Searcher`.

::

    IDX/
      mrl-qdrant.json   what mrl needs (format, dims, first stages, rescoring dims, cascade, ids), atomic
      shard/            the qdrant-edge shard (its own WAL: one process at a time)

Every point carries named vectors: one per first stage (``int8-64``: the renormalised 64-prefix
with Qdrant's int8 scalar quantisation and no graph; ``binary-256``: binary quantisation;
``hnsw-64``: an HNSW graph over int8 codes; ``exact-64``: plain floats, scanned), and a float
prefix per rescoring dimension (``f-128``, ``f-384``: on disk, no graph), used only to rescore.
A cascade ``int8@64:1000,128:100,384:10`` becomes one nested prefetch query that Qdrant runs:
the innermost prefetch searches ``int8-64`` for 1,000 candidates (quantised scores, no rescore),
the next rescores them with ``f-128`` and keeps 100, the query rescores those with ``f-384``.

String ids become 63-bit hashes (blake2b) so an upsert needs no lookup; the string rides in the
payload. Unlike :class:`~mrl.index.MrlIndex`, an open index is live, not a snapshot: changes made
through it are visible to every object over the same folder in this process, and another process
cannot open the folder while one holds it (Qdrant's WAL lock).
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl._fs import atomic_write_text
from mrl.errors import MrlError
from mrl.index.base import SearchResult
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage, resolve_plan
from mrl.index.segment import normalize_rows
from mrl.vectors import check_vectors

META = "mrl-qdrant.json"
FORMAT = "mrl-qdrant-edge"
VERSION = 1
KINDS = ("exact", "int8", "binary", "hnsw")  # inverted files (ivfpq, rabitq) are faiss structures
BATCH = 512  # points per upsert
_SHARDS: dict[Path, Any] = {}  # one open shard per folder in this process (Qdrant locks it)
INSTALL_HINT = "the qdrant-edge backend needs qdrant-edge-py: pip install 'mrl[qdrant]'"


def require() -> Any:
    try:
        import qdrant_edge
    except ImportError:
        raise MrlError(INSTALL_HINT) from None
    return qdrant_edge


def is_qdrant_edge(path: str | Path) -> bool:
    return (Path(path) / META).is_file()


def _vector_name(spec: FirstStageSpec) -> str:
    return f"{spec.kind}-{spec.dim}"


def _bytes_per_vector(spec: FirstStageSpec, hnsw_m: int) -> float:
    return {"exact": 4.0 * spec.dim, "int8": float(spec.dim), "binary": spec.dim / 8,
            "hnsw": spec.dim + 8.0 * hnsw_m}[spec.kind]


def _hash_id(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


class QdrantEdgeIndex:
    def __init__(self, root: Path, meta: dict[str, Any], shard: Any) -> None:
        self.root, self.meta, self.shard = Path(root), meta, shard
        self.dim: int = meta["dim"]
        self.specs = [parse_first_stage(s) for s in meta["first_stages"]]
        self.rescore_dims: list[int] = meta["rescore_dims"]
        self.adaptor = None

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(cls, path: str | Path) -> QdrantEdgeIndex:
        root = Path(path).resolve()
        meta = _read_meta(root)
        return cls(root, meta, _shard(root))

    @classmethod
    def build(
        cls,
        path: str | Path,
        vectors: np.ndarray,
        ids: Sequence[int] | Sequence[str] | np.ndarray | None = None,
        *,
        model: str | None = None,
        first_stages: Sequence[str] | None = None,
        default_cascade: str | None = None,
        rescore_dims: Sequence[int] | None = None,
        hnsw_m: int = 16,
        ef_construction: int = 100,
        overwrite: bool = False,
    ) -> QdrantEdgeIndex:
        """A new index at ``path`` (any float ``(n, D)`` array, may be a memmap).

        ``rescore_dims``: the prefixes later cascade stages can rescore on (default: twice each
        first stage's dimension, and the full dimension).
        """
        qe = require()
        root = Path(path).resolve()
        vectors = check_vectors(vectors, None, "vectors", scan=True)
        n, dim = vectors.shape
        specs = [parse_first_stage(s, dim) for s in (first_stages or [f"int8@{min(64, dim)}"])]
        bad = [str(s) for s in specs if s.kind not in KINDS]
        if bad:
            raise MrlError(f"first stage {bad[0]}: the qdrant-edge backend builds {', '.join(KINDS)} first stages")
        if len(set(specs)) != len(specs):
            raise MrlError(f"first stages {[str(s) for s in specs]}: listed twice")
        dims = sorted({int(d) for d in rescore_dims} if rescore_dims else
                      {2 * s.dim for s in specs if 2 * s.dim < dim} | {dim})
        if dims[-1] != dim or dims[0] < 1:
            raise MrlError(f"rescore dims {dims}: must lie in 1..{dim} and include the full dimension {dim}")
        cascade = default_cascade or (f"{specs[0]}:100,{dim}:10" if specs[0].dim < dim else f"{specs[0]}:10")
        keys = _keys(ids, n)
        meta = {"format": FORMAT, "version": VERSION, "generation": 1, "model": model, "dim": dim,
                "first_stages": [str(s) for s in specs], "rescore_dims": dims, "hnsw_m": hnsw_m,
                "ef_construction": ef_construction, "id_kind": "str" if keys is not None else "int",
                "default_cascade": cascade}
        cls(root, meta, None)._check_cascade(parse_cascade(cascade, dim))  # before anything is written
        if (root / META).exists() or (root / "shard").exists():
            if not overwrite:
                raise MrlError(f"{root}: an index already exists there (pass overwrite / --overwrite to replace it)")
            _close(root)
            shutil.rmtree(root / "shard", ignore_errors=True)
            (root / META).unlink(missing_ok=True)
        root.mkdir(parents=True, exist_ok=True)
        plain = qe.HnswIndexConfig(m=0, ef_construct=ef_construction, full_scan_threshold=10_000)
        graph = qe.HnswIndexConfig(m=hnsw_m, ef_construct=ef_construction, full_scan_threshold=1)
        int8 = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True)
        params = {}
        for spec in specs:
            quant = {"int8": int8, "hnsw": int8, "binary": qe.BinaryQuantizationConfig(always_ram=True)}.get(spec.kind)
            params[_vector_name(spec)] = qe.EdgeVectorParams(
                size=spec.dim, distance=qe.Distance.Cosine, quantization_config=quant,
                hnsw_config=graph if spec.kind == "hnsw" else plain)
        for d in dims:
            params[f"f-{d}"] = qe.EdgeVectorParams(size=d, distance=qe.Distance.Cosine, on_disk=True, hnsw_config=plain)
        config = qe.EdgeConfig(vectors=params, optimizers=qe.EdgeOptimizersConfig(indexing_threshold=1))
        try:
            shard = qe.EdgeShard.create(str(root / "shard"), config)
        except Exception as e:  # qdrant_edge raises plain Exception with its message
            raise MrlError(f"{root}: qdrant-edge cannot create the shard ({e})") from None
        _SHARDS[root] = shard
        index = cls(root, meta, shard)
        index._upsert(vectors, keys if keys is not None else np.asarray(ids if ids is not None else np.arange(n)), n)
        _write_meta(root, meta)  # the commit point: a folder without it is not an index
        return index

    # ------------------------------------------------------------------ the Searcher protocol
    @property
    def count(self) -> int:
        return int(self.shard.count(require().CountRequest(exact=True)))

    @property
    def generation(self) -> int:
        return int(self.meta["generation"])

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def default_cascade(self) -> Cascade:
        return parse_cascade(self.meta["default_cascade"], self.dim)

    @property
    def first_stages(self) -> list[FirstStageSpec]:
        return list(self.specs)

    def __len__(self) -> int:
        return self.count

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        return self._check_cascade(resolve_plan(cascade, k, self.default_cascade, self.dim, self.count))

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        xq = np.atleast_2d(xq) if np.ndim(xq) == 1 else xq
        return np.asarray(check_vectors(xq, self.dim, "queries", owner="the index's", empty=True, scan=True),
                          np.float32)

    def search(self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *,
               adapted: bool = False) -> SearchResult:
        """One nested prefetch query per query vector, sent as a batch."""
        qe = require()
        xq = self.prepare_queries(xq)
        plan = self.plan(cascade, k)
        spec = self._spec(plan.kind, plan.first[0])
        first = qe.SearchParams(hnsw_ef=plan.width, exact=spec.kind == "exact",
                                quantization=qe.QuantizationSearchParams(rescore=False))
        requests = []
        for q in xq:
            d1, n1 = plan.first
            inner = qe.Prefetch(limit=n1, query=self._nearest(q, d1, _vector_name(spec)), params=first)
            for d, n in plan.stages[1:-1]:
                inner = qe.Prefetch(limit=n, query=self._nearest(q, d, f"f-{d}"), prefetches=[inner])
            if len(plan.stages) == 1:
                requests.append(qe.QueryRequest(limit=k, query=self._nearest(q, d1, _vector_name(spec)),
                                                params=first))
            else:
                d_last = plan.stages[-1][0]
                requests.append(qe.QueryRequest(limit=k, query=self._nearest(q, d_last, f"f-{d_last}"),
                                                prefetches=[inner]))
        return self._results(self.shard.query_batch(qe.QueryBatchRequest(requests)) if requests else [], k)

    def exact_search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, *,
                     adapted: bool = False) -> SearchResult:
        qe = require()
        xq = self.prepare_queries(xq)
        dim = dim or self.dim
        if dim not in self.rescore_dims:
            raise MrlError(f"dim={dim}: this qdrant-edge index stores float prefixes of {self.rescore_dims} dims")
        resolve_plan(f"{dim}:{k}", k, self.default_cascade, self.dim, self.count)
        exact = qe.SearchParams(exact=True)
        requests = [qe.QueryRequest(limit=k, query=self._nearest(q, dim, f"f-{dim}"), params=exact) for q in xq]
        return self._results(self.shard.query_batch(qe.QueryBatchRequest(requests)) if requests else [], k)

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self.meta["id_kind"] == "int":
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        found = {r.id: r.payload["key"] for r in self.shard.retrieve(wanted, True, False)} if wanted else {}
        return [[found.get(i) if i >= 0 else None for i in row] for row in ids.tolist()]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        all_ids = self._all_ids()
        rng = np.random.default_rng(seed)
        chosen = np.sort(rng.choice(all_ids, size=min(n, len(all_ids)), replace=False))
        records = {r.id: r.vector[f"f-{self.dim}"] for r in
                   self.shard.retrieve(chosen.tolist(), False, [f"f-{self.dim}"])}
        return np.asarray([records[int(i)] for i in chosen], np.float32).reshape(len(chosen), self.dim)

    def max_width(self, spec: FirstStageSpec) -> int:
        return 0  # no inverted files here; an hnsw stage's width (ef) follows from the shortlist

    def stats(self) -> dict[str, Any]:
        m = self.meta
        stages = {str(s): {"bytes_per_vector": _bytes_per_vector(s, m["hnsw_m"])} for s in self.specs}
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        return {"path": str(self.root), "backend": "qdrant-edge", "model": m["model"], "count": self.count,
                "dim": self.dim, "id_kind": m["id_kind"], "generation": m["generation"],
                "default_cascade": m["default_cascade"], "first_stages": stages, "rescore_dims": self.rescore_dims,
                "segments": int(self.shard.info().segments_count), "deleted_rows": 0, "disk_bytes": disk,
                "tuning": m.get("tuning"), "adaptor": None}

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None) -> QdrantEdgeIndex:
        plan = self._check_cascade(cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim))
        meta = {**self.meta, "default_cascade": str(plan), "generation": self.generation + 1}
        if tuning is not None:
            meta["tuning"] = tuning
        _write_meta(self.root, meta)
        return QdrantEdgeIndex(self.root, meta, self.shard)

    def refresh(self) -> QdrantEdgeIndex:
        meta = _read_meta(self.root)
        return self if meta["generation"] == self.generation else QdrantEdgeIndex(self.root, meta, self.shard)

    def check_adaptor(self, adaptor: Any) -> None:
        if adaptor is not None:
            raise MrlError(f"{self.root} is a qdrant-edge index, built without an adaptor (adaptors are not "
                           "supported by this backend yet); query it without --adaptor")

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray) -> QdrantEdgeIndex:
        """Upsert: new ids are added, existing ones replaced."""
        vectors = check_vectors(vectors, self.dim, "vectors", owner="the index's", scan=True)
        keys = _keys(ids, len(vectors))
        if (keys is not None) != (self.meta["id_kind"] == "str"):
            raise MrlError(f"this index uses {'string' if self.meta['id_kind'] == 'str' else 'integer'} ids")
        self._upsert(vectors, keys if keys is not None else np.asarray(ids), len(vectors))
        return self._committed()

    def delete(self, ids: Sequence[int] | Sequence[str] | np.ndarray) -> QdrantEdgeIndex:
        """Delete by id; every id must exist (nothing changes otherwise)."""
        values = list(ids)
        if not values:
            raise MrlError("delete: no ids given")
        point_ids = [_hash_id(str(v)) for v in values] if self.meta["id_kind"] == "str" else [int(v) for v in values]
        present = {r.id for r in self.shard.retrieve(point_ids, False, False)}
        missing = [v for v, p in zip(values, point_ids) if p not in present]
        if missing:
            raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")
        if len(set(point_ids)) >= self.count:
            raise MrlError(f"delete: removing all {self.count} vectors would leave an empty index; build a new one")
        self.shard.update(require().UpdateOperation.delete_points(point_ids))
        return self._committed()

    def compact(self) -> QdrantEdgeIndex:
        """Let Qdrant's optimisers merge segments and vacuum deleted points."""
        self.shard.optimize()
        return self._committed()

    def verify(self) -> list[str]:
        problems = [] if (self.root / "shard").is_dir() else [f"{self.root}/shard: missing"]
        return problems

    # ------------------------------------------------------------------ internals
    def _committed(self) -> QdrantEdgeIndex:
        self.shard.flush()
        meta = {**self.meta, "generation": self.generation + 1}
        _write_meta(self.root, meta)
        return QdrantEdgeIndex(self.root, meta, self.shard)

    def _upsert(self, vectors: Any, ids: np.ndarray, n: int) -> None:
        qe = require()
        if ids.dtype.kind == "U":
            point_ids, payloads = [_hash_id(k) for k in ids.tolist()], [{"key": k} for k in ids.tolist()]
        else:
            point_ids, payloads = [int(i) for i in ids.tolist()], [None] * n
        names = [(_vector_name(s), s.dim) for s in self.specs] + [(f"f-{d}", d) for d in self.rescore_dims]
        for start in range(0, n, BATCH):
            x = np.asarray(vectors[start : start + BATCH], np.float32)
            prefixes = {name: normalize_rows(x[:, :d]).tolist() for name, d in names}
            points = [qe.Point(point_ids[start + i], {name: prefixes[name][i] for name, _ in names},
                               payloads[start + i]) for i in range(len(x))]
            try:  # each batch is one WAL entry: applied whole or not at all, also across a kill
                self.shard.update(qe.UpdateOperation.upsert_points(points))
            except Exception as e:
                raise MrlError(f"{self.root}: the upsert stopped after {start} of {n} points were written (those "
                               f"are searchable; re-run the add for the rest): {e}") from None
        self.shard.optimize()  # builds the quantised codes and graphs the first stages search
        self.shard.flush()

    def _nearest(self, q: np.ndarray, d: int, name: str) -> Any:
        if name.startswith("f-") and d not in self.rescore_dims:
            raise MrlError(f"cascade stage at {d} dims: this qdrant-edge index rescores on {self.rescore_dims} dims "
                           f"(rebuild with --rescore-dims including {d})")
        return require().Query.Nearest(normalize_rows(q[None, :d])[0].tolist(), using=name)

    def _spec(self, kind: str | None, d: int) -> FirstStageSpec:
        for spec in self.specs:
            if spec.dim == d and (kind is None or spec.kind == kind):
                return spec
        have = ", ".join(map(str, self.specs))
        raise MrlError(f"the index has no {kind or 'first stage'}@{d} (it has: {have}); rebuild with it")

    def _check_cascade(self, plan: Cascade) -> Cascade:
        spec = self._spec(plan.kind, plan.first[0])
        if plan.width is not None and spec.kind != "hnsw":
            raise MrlError(f"a search width applies to hnsw first stages here, not to {spec}")
        for d, _ in plan.stages[1:]:
            if d not in self.rescore_dims:
                raise MrlError(f"cascade {plan}: this qdrant-edge index rescores on {self.rescore_dims} dims, "
                               f"not {d} (rebuild with --rescore-dims)")
        return plan

    def _results(self, hits: list[list[Any]], k: int) -> SearchResult:
        scores = np.full((len(hits), k), -np.inf, np.float32)
        ids = np.full((len(hits), k), -1, np.int64)
        for i, row in enumerate(hits):
            for j, point in enumerate(row[:k]):
                scores[i, j], ids[i, j] = point.score, point.id
        return SearchResult(scores, ids)

    def _all_ids(self) -> np.ndarray:
        qe = require()
        out, offset = [], None
        while True:
            records, offset = self.shard.scroll(qe.ScrollRequest(offset=offset, limit=10_000, with_payload=False,
                                                                 with_vector=False))
            out += [r.id for r in records]
            if offset is None:
                return np.asarray(out, np.int64)


def _keys(ids: Any, n: int) -> np.ndarray | None:
    """String keys (``None`` for integer ids), checked: one per vector, unique, non-negative ints."""
    if ids is None:
        return None
    values = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if values.ndim != 1 or len(values) != n:
        raise MrlError(f"ids: {len(values) if values.ndim == 1 else values.shape} ids for {n} vectors")
    uniq, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise MrlError(f"ids: {uniq[np.argmax(counts > 1)].item()!r} appears {counts.max()} times; ids must be unique")
    if values.dtype.kind == "U":
        if (values == "").any():
            raise MrlError("ids: an id is the empty string")
        return values
    if not np.issubdtype(values.dtype, np.integer):
        raise MrlError(f"ids: expected integers or strings, got dtype {values.dtype}")
    if (values < 0).any():
        raise MrlError(f"ids: {values[values < 0][0].item()} is negative; ids must be >= 0")
    return None


def _shard(root: Path) -> Any:
    if root not in _SHARDS:
        if not (root / "shard").is_dir():
            raise MrlError(f"{root}: {META} names a qdrant-edge shard, but {root}/shard is missing")
        try:
            _SHARDS[root] = require().EdgeShard.load(str(root / "shard"))
        except Exception as e:
            if "WouldBlock" in str(e):
                raise MrlError(f"{root}: another process has this qdrant-edge index open (Qdrant allows one); "
                               "stop it, or change the index through that process") from None
            raise MrlError(f"{root}: qdrant-edge cannot load the shard ({e})") from None
    return _SHARDS[root]


def _close(root: Path) -> None:
    shard = _SHARDS.pop(root, None)
    if shard is not None:
        shard.close()


def _read_meta(root: Path) -> dict[str, Any]:
    path = root / META
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MrlError(f"{root}: not a qdrant-edge index ({META} not found)") from None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        raise MrlError(f"{path}: cannot be read ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MrlError(f"{path}: not an mrl qdrant-edge index description (format {FORMAT} v{VERSION})")
    return meta


def _write_meta(root: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(root / META, json.dumps(meta, indent=2) + "\n")
