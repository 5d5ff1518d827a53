"""``QdrantIndex``: the funnel on the Qdrant engine, as a :class:`Searcher`.

Two engines (:mod:`mrl.index.qdrant.engines`): qdrant-edge in-process over a folder
(``IDX/shard`` plus ``IDX/mrl-qdrant.json``; its WAL allows one process at a time), or a Qdrant
server or cluster through qdrant-client (mrl's description in the collection's metadata).

Every point carries named vectors: one per first stage (``int8-64``: the renormalised 64-prefix
with Qdrant's int8 scalar quantisation and no graph; ``binary-256``: binary quantisation;
``hnsw-64``: an HNSW graph over int8 codes; ``exact-64``: plain floats, scanned), and a float
prefix per rescoring dimension (``f-128``, ``f-384``: on disk, no graph), used only to rescore.
A cascade ``int8@64:1000,128:100,384:10`` becomes one nested prefetch query that Qdrant runs:
the innermost prefetch searches ``int8-64`` for 1,000 candidates (quantised scores, no rescore),
the next rescores them with ``f-128`` and keeps 100, the query rescores those with ``f-384``.

String ids become 63-bit hashes (blake2b) so an upsert needs no lookup; the string rides in the
payload under ``"key"``, a user payload under ``"p"`` (:mod:`.payload_filter`); the description records
the payload fields' types (``payload_types``) for the type checks every backend makes. Unlike
:class:`~mrl.index.MrlIndex`, an open index is live: changes are visible to every searcher at once.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import SearchResult
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage, resolve_plan
from mrl.index.described import Described
from mrl.index.filters import check_types, parse_filter, payload_types
from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M, check_hnsw, ef_search, kind, require
from mrl.index.ids import check_ids
from mrl.index.payloads import check_payloads
from mrl.index.qdrant.engines import Stage, VectorSpec
from mrl.index.qdrant.payload_filter import BOOLS, PREFIX, bool_shadow, field_indexes, field_kinds, index_changes
from mrl.index.work import Work
from mrl.prefix import truncate
from mrl.vectors import check_vectors

FORMAT = "mrl-qdrant"
VERSION = 1
FIRST_STAGE_KINDS = ("exact", "int8", "binary", "hnsw")  # inverted files (ivf8, ivfpq, rabitq) are faiss structures
BATCH = 512  # points per upsert (one WAL entry / one request)
REFRESH_S = 1.0  # a server's description is re-read at most this often
EXACT_ALLOWED, EXACT_SHARE = 2048, 0.02  # a filter letting through at most this many points (share) is scanned


def _vector_name(spec: FirstStageSpec) -> str:
    return f"{spec.kind}-{spec.dim}"


def _hash_id(key: str) -> int:
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def layout(specs: list[FirstStageSpec], rescore_dims: list[int], hnsw_m: int = HNSW_M,
           ef_construction: int = EF_CONSTRUCTION) -> list[VectorSpec]:
    """The named vectors of every point: one per first stage, one float prefix per rescoring dim."""
    out = [VectorSpec(_vector_name(s), s.dim, quant={"int8": "int8", "hnsw": "int8", "binary": "binary"}.get(s.kind),
                      graph=s.kind == "hnsw", m=hnsw_m, ef_construct=ef_construction) for s in specs]
    return out + [VectorSpec(f"f-{d}", d, on_disk=True) for d in rescore_dims]


class QdrantIndex(Described):
    first_stage_kinds = FIRST_STAGE_KINDS
    supports_gates = False  # Qdrant runs a whole cascade as one nested query

    def __init__(self, engine: Any, meta: dict[str, Any]) -> None:
        self.engine, self.meta = engine, meta
        self.dim: int = meta["dim"]
        self.specs = [parse_first_stage(s) for s in meta["first_stages"]]
        self.rescore_dims: list[int] = meta["rescore_dims"]
        self.adaptor: Any = None  # adaptors are not supported by this backend yet
        self._read_at = time.monotonic()

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(cls, engine: Any) -> QdrantIndex:
        meta = engine.read_meta()
        if not isinstance(meta, dict) or meta.get("format") != FORMAT or meta.get("version") != VERSION:
            raise MrlError(f"{engine.where()}: not an mrl qdrant index description (format {FORMAT} v{VERSION})")
        return cls(engine, meta)

    @classmethod
    def build(
        cls,
        create: Any,
        vectors: np.ndarray,
        ids: Sequence[int] | Sequence[str] | np.ndarray | None = None,
        *,
        model: str | None = None,
        first_stages: Sequence[str] | None = None,
        default_cascade: str | None = None,
        rescore_dims: Sequence[int] | None = None,
        hnsw_m: int = HNSW_M,
        ef_construction: int = EF_CONSTRUCTION,
        payloads: Sequence[dict[str, Any] | None] | None = None,
    ) -> QdrantIndex:
        """A new index from ``vectors`` (any float ``(n, D)`` array, may be a memmap); ``create(layout)``
        makes the engine (a collection or shard) once every input is checked.

        ``rescore_dims``: the prefixes later cascade stages rescore on (default: twice each first
        stage's dimension, and the full dimension).
        """
        vectors = check_vectors(vectors, None, "vectors", scan=True)
        check_hnsw(hnsw_m, ef_construction)
        n, dim = vectors.shape
        specs = [parse_first_stage(s, dim) for s in (first_stages or [f"int8@{min(64, dim)}"])]
        require(specs, FIRST_STAGE_KINDS, "the qdrant backends")
        if len(set(specs)) != len(specs):
            raise MrlError(f"first stages {[str(s) for s in specs]}: listed twice")
        dims = sorted({int(d) for d in rescore_dims} if rescore_dims else
                      {2 * s.dim for s in specs if 2 * s.dim < dim} | {dim})
        if dims[-1] != dim or dims[0] < 1:
            raise MrlError(f"rescore dims {dims}: must lie in 1..{dim} and include the full dimension {dim}")
        cascade = default_cascade or (f"{specs[0]}:100,{dim}:10" if specs[0].dim < dim else f"{specs[0]}:10")
        keys = _keys(ids, n)
        rows = check_payloads(payloads, n)
        meta = {"format": FORMAT, "version": VERSION, "generation": 1, "model": model, "dim": dim,
                "first_stages": [str(s) for s in specs], "rescore_dims": dims, "hnsw_m": hnsw_m,
                "ef_construction": ef_construction, "id_kind": "str" if keys is not None else "int",
                "default_cascade": cascade, "payload_types": payload_types(rows), "payload_fields": field_kinds(rows)}
        cls(None, meta)._check_cascade(parse_cascade(cascade, dim))  # before anything is written
        index = cls(create(layout(specs, dims, hnsw_m, ef_construction)), meta)
        try:
            index.engine.index_fields(field_indexes(meta["payload_fields"]), [])  # before the points arrive
            index._upsert(vectors, keys if keys is not None else np.asarray(ids if ids is not None else np.arange(n)),
                          n, rows)
        except BaseException:
            if hasattr(index.engine, "abandon"):  # qdrant-edge: the shard built beside the old one goes
                index.engine.abandon()
            raise
        index.engine.write_meta(meta)  # the commit point: without it the data is not an index
        return index

    # ------------------------------------------------------------------ the Searcher protocol
    @property
    def count(self) -> int:
        return self.engine.count()

    def __repr__(self) -> str:
        return (f"QdrantIndex({self.engine.kind}: {self.engine.where()!r}, dim={self.dim}, "
                f"first_stages={self.meta['first_stages']})")

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        xq = np.atleast_2d(xq) if np.ndim(xq) == 1 else xq
        # not cast to float32 here: the prefixes are renormalised first (values beyond float32's range keep
        # their direction), then sent as floats
        return check_vectors(xq, self.dim, "queries", owner="the index's", empty=True, scan=True)

    def search(self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *,
               adapted: bool = False, work: Work | None = None, filter: Any = None) -> SearchResult:
        """One nested prefetch query per query vector, sent as one batch.

        Qdrant does not report what a query scanned: ``work`` gets the plan's figures (marked not
        counted): the first stage's shortlist of codes (a lower bound: its graph visits more) and
        every rescoring stage's candidates, float32 vectors. ``filter`` goes into every prefetch.
        """
        xq = self.prepare_queries(xq)
        plan = self.plan(cascade, k)
        where = parse_filter(filter)
        check_types(where, self.meta.get("payload_types"), self.engine.where())
        spec = self._spec(plan.kind, plan.first[0])
        if work is not None:
            code = kind(spec.kind).code_bytes(spec.dim)
            ones = np.ones(len(xq))
            work.record(0, str(spec), spec.dim, ones * plan.first[1], ones * plan.first[1] * code, counted=False)
            for i, ((d, _), (_, n_prev)) in enumerate(zip(plan.stages[1:], plan.stages), start=1):
                work.record(i, f"rescore@{d}", d, ones * n_prev, ones * n_prev * d * 4.0, counted=False)
        # under a filter letting few points through, and for a query left short of k, the first stage scans
        # them all (exact: fewer means fewer exist); a graph search under a wider one walks with ACORN
        whole = where is not None and len(xq) > 0 and self.engine.count(where) <= max(plan.first[1], EXACT_ALLOWED,
                                                                                        EXACT_SHARE * self.count)
        hits = self.engine.query(self._queries(xq, plan, spec, whole, where is not None), k, where)
        short = [i for i, row in enumerate(hits) if len(row) < k] if where is not None and not whole else []
        if short:
            for i, row in zip(short, self.engine.query(self._queries(xq[short], plan, spec, True), k, where)):
                hits[i] = row
        return self._results(hits, len(xq), k)

    def _queries(self, xq: np.ndarray, plan: Cascade, spec: FirstStageSpec, exact: bool,
                 filtered: bool = False) -> list[list[Stage]]:
        """Each query's nested stages (``exact``: the first stage scans instead of searching its graph;
        ``filtered``: a graph search under a filter walks with ACORN, else it loses recall)."""
        queries = []
        d1, n1 = plan.first
        for q in xq:
            stages = [Stage(_vector_name(spec), _prefix(q, d1), n1, exact=exact or spec.kind == "exact",
                            hnsw_ef=ef_search(n1, plan.width), quantized=spec.kind != "exact",
                            acorn=filtered and spec.kind == "hnsw")]
            stages += [Stage(f"f-{d}", _prefix(q, d), n) for d, n in plan.stages[1:]]
            queries.append(stages)
        return queries

    def exact_search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, *,
                     adapted: bool = False) -> SearchResult:
        xq = self.prepare_queries(xq)
        dim = dim or self.dim
        if dim not in self.rescore_dims:
            raise MrlError(f"dim={dim}: this qdrant index stores float prefixes of {self.rescore_dims} dims")
        resolve_plan(f"{dim}:{k}", k, self.default_cascade, self.dim, self.count)  # checks k
        queries = [[Stage(f"f-{dim}", _prefix(q, dim), k, exact=True)] for q in xq]
        return self._results(self.engine.query(queries, k), len(xq), k)

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self.meta["id_kind"] == "int":
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        found = {i: payload["key"] for i, payload, _ in self.engine.retrieve(wanted, True, None)} if wanted else {}
        return [[found.get(i) if i >= 0 else None for i in row] for row in ids.tolist()]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        all_ids = np.asarray(self.engine.ids(), np.int64)
        chosen = np.sort(np.random.default_rng(seed).choice(all_ids, size=min(n, len(all_ids)), replace=False))
        name = f"f-{self.dim}"
        found = {i: vec[name] for i, _, vec in self.engine.retrieve(chosen.tolist(), False, [name])}
        return np.asarray([found[int(i)] for i in chosen], np.float32).reshape(len(chosen), self.dim)

    def max_width(self, spec: FirstStageSpec) -> int:
        return 0  # no inverted files here; an hnsw stage's width (ef) follows from the shortlist

    def stats(self) -> dict[str, Any]:
        m = self.meta
        stages = {str(s): {"bytes_per_vector": kind(s.kind).bytes_per_vector(s.dim, hnsw_m=m["hnsw_m"])}
                  for s in self.specs}
        return {"path": self.engine.where(), "backend": self.engine.kind, "model": m["model"], "count": self.count,
                "dim": self.dim, "id_kind": m["id_kind"], "generation": m["generation"],
                "default_cascade": m["default_cascade"], "first_stages": stages, "rescore_dims": self.rescore_dims,
                "segments": self.engine.segments(), "deleted_rows": 0, "disk_bytes": self.engine.disk_bytes(),
                "tuning": m.get("tuning"), "adaptor": None}

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Any = None) -> QdrantIndex:
        if gate is not None:
            raise MrlError("a gate (mrl index tune --adaptive) runs on the mrl backend, not on Qdrant")
        plan = self._check_cascade(cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim))
        meta = {**self.meta, "default_cascade": str(plan), "generation": self.generation + 1}
        if tuning is not None:
            meta["tuning"] = tuning
        self.engine.write_meta(meta)
        return QdrantIndex(self.engine, meta)

    def first_stage_scores(self, xq: np.ndarray, plan: Cascade, width: int | None = None) -> np.ndarray:
        raise MrlError("first-stage scores (for a gate) are read on the mrl backend, not on Qdrant")

    def search_gated(self, xq: np.ndarray, k: int, plan: Cascade, gate: Any, chosen: np.ndarray | None = None,
                     work: Work | None = None) -> SearchResult:
        raise MrlError("gated cascades run on the mrl backend (Qdrant runs a whole cascade as one nested query)")

    def refresh(self) -> QdrantIndex:
        if time.monotonic() - self._read_at < REFRESH_S and self.engine.kind == "qdrant":
            return self  # a server round trip per request is too much; a second of staleness is not
        fresh = QdrantIndex.open(self.engine)
        if fresh.generation == self.generation:
            self._read_at = fresh._read_at
            return self
        return fresh

    def check_adaptor(self, adaptor: Any) -> None:
        if adaptor is not None:
            raise MrlError(f"{self.engine.where()} is a {self.engine.kind} index, built without an adaptor "
                           "(adaptors are not supported by this backend yet); query it without --adaptor")

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray,
            payloads: Sequence[dict[str, Any] | None] | None = None) -> QdrantIndex:
        """Upsert: new ids are added, existing ones replaced (a point's payload with it)."""
        vectors = check_vectors(vectors, self.dim, "vectors", owner="the index's", scan=True)
        keys = _keys(ids, len(vectors))
        if (keys is not None) != (self.meta["id_kind"] == "str"):
            raise MrlError(f"this index uses {'string' if self.meta['id_kind'] == 'str' else 'integer'} ids")
        rows = check_payloads(payloads, len(vectors))
        types = payload_types(rows, {k: dict(v) for k, v in (self.meta.get("payload_types") or {}).items()})
        fields = self.meta.get("payload_fields")
        if fields is not None or not self.meta.get("payload_types"):  # (an index from before payload indexes: none)
            fields = field_kinds(rows, fields)
            self.engine.index_fields(*index_changes(field_indexes(self.meta.get("payload_fields") or {}),
                                                    field_indexes(fields)))
        self._upsert(vectors, keys if keys is not None else np.asarray(ids), len(vectors), rows)
        return self._committed(payload_types=types, **({"payload_fields": fields} if fields is not None else {}))

    def delete(self, ids: Sequence[int] | Sequence[str] | np.ndarray) -> QdrantIndex:
        """Delete by id; every id must exist (nothing changes otherwise)."""
        values = list(ids)
        if not values:
            raise MrlError("delete: no ids given")
        check_ids(values, len(values))  # one rule on every backend: an id named twice is refused
        point_ids = [_hash_id(str(v)) for v in values] if self.meta["id_kind"] == "str" else [int(v) for v in values]
        present = {i for i, _, _ in self.engine.retrieve(point_ids, False, None)}
        missing = [v for v, p in zip(values, point_ids) if p not in present]
        if missing:
            raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")
        if len(set(point_ids)) >= self.count:
            raise MrlError(f"delete: removing all {self.count} vectors would leave an empty index; build a new one")
        self.engine.delete(point_ids)
        return self._committed()

    def compact(self) -> QdrantIndex:
        """Let Qdrant's optimisers merge segments and vacuum deleted points."""
        self.engine.finish()
        return self._committed()

    def verify(self) -> list[str]:
        try:
            self.engine.count()
        except Exception as e:
            return [f"{self.engine.where()}: {e}"]
        return []

    # ------------------------------------------------------------------ internals
    def _committed(self, **changes: Any) -> QdrantIndex:
        meta = {**self.meta, **changes, "generation": self.generation + 1}
        self.engine.write_meta(meta)
        return QdrantIndex(self.engine, meta)

    def _upsert(self, vectors: Any, ids: np.ndarray, n: int, rows: list[dict[str, Any] | None]) -> None:
        if ids.dtype.kind == "U":
            point_ids, keys = [_hash_id(k) for k in ids.tolist()], [{"key": k} for k in ids.tolist()]
        else:
            point_ids, keys = [int(i) for i in ids.tolist()], [{} for _ in range(n)]
        payloads = [_point_payload(key, p) for key, p in zip(keys, rows)]
        names = [(v.name, v.size) for v in layout(self.specs, self.rescore_dims)]
        for start in range(0, n, BATCH):
            x = np.asarray(vectors[start : start + BATCH])  # renormalised before any cast (see truncate)
            prefixes = {name: truncate(x, d).tolist() for name, d in names}
            points = [(point_ids[start + i], {name: prefixes[name][i] for name, _ in names}, payloads[start + i])
                      for i in range(len(x))]
            try:  # each batch is one WAL entry / request: applied whole or not at all, also across a kill
                self.engine.upsert(points)
            except Exception as e:
                raise MrlError(f"{self.engine.where()}: the upsert stopped after {start} of {n} points were written "
                               f"(those are searchable; re-run the add for the rest): {e}") from None
        self.engine.finish()

    def _check_cascade(self, plan: Cascade) -> Cascade:
        if plan.gated:
            raise MrlError(f"cascade {plan}: gated cascades run on the mrl backend (Qdrant runs a whole cascade as "
                           "one nested query); use the ungated cascade here")
        spec = self._spec(plan.kind, plan.first[0])
        if plan.width is not None and spec.kind != "hnsw":
            raise MrlError(f"a search width applies to hnsw first stages here, not to {spec}")
        for d, _ in plan.stages[1:]:
            if d not in self.rescore_dims:
                raise MrlError(f"cascade {plan}: this qdrant index rescores on {self.rescore_dims} dims, "
                               f"not {d} (rebuild with --rescore-dims)")
        return plan

    @staticmethod
    def _results(hits: list[list[tuple[int, float]]], nq: int, k: int) -> SearchResult:
        scores = np.full((nq, k), -np.inf, np.float32)
        ids = np.full((nq, k), -1, np.int64)
        for i, row in enumerate(hits):
            for j, (point, score) in enumerate(row[:k]):
                scores[i, j], ids[i, j] = score, point
        return SearchResult(scores, ids)


def _point_payload(key: dict[str, Any], payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A point's payload: its string id (``key``), the user's payload (``p``) and its booleans (``pb``)."""
    if payload is None:
        return key or None
    bools = bool_shadow(payload)
    return {**key, PREFIX: payload, **({BOOLS: bools} if bools else {})}


def _prefix(q: np.ndarray, d: int) -> list[float]:
    return truncate(q, d).tolist()


def _keys(ids: Any, n: int) -> np.ndarray | None:
    """String keys (``None`` for integer ids, or none given), checked by :func:`check_ids`."""
    if ids is None:
        return None
    values = check_ids(ids, n)
    return values if values.dtype.kind == "U" else None
