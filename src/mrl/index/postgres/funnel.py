"""``PostgresIndex``: the funnel on Postgres + pgvector, as a :class:`Searcher`, :class:`Writer` and
:class:`Tunable` (without gates: the database runs a whole cascade as one statement).

The table: ``id text PRIMARY KEY, rid bigint UNIQUE, embedding vector(D) (or halfvec(D)), payload
jsonb``. ``embedding`` holds the unit vector; every first stage is an expression index over it
(:mod:`mrl.index.postgres.engine`). ``rid`` is the int64 id searches return: the id itself for
integer ids, a 63-bit blake2b hash of a string id (as the Qdrant backend does), so an upsert needs
no lookup and the ``UNIQUE`` constraint refuses a hash collision. mrl's description (dimension,
first stages, default cascade, generation, live count) is a row of ``mrl_indexes``, changed in the
same transaction as the rows: a write commits whole or not at all. Like the Qdrant backend an open
index is live: every reader of the table sees a committed write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import SearchResult
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, parse_first_stage, resolve_plan
from mrl.index.described import Described
from mrl.index.filters import check_types, parse_filter, payload_types
from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M, check_hnsw, kind, require
from mrl.index.ids import check_ids
from mrl.index.payloads import check_payloads
from mrl.index.postgres import attach as attach_mode
from mrl.index.postgres import engine, store
from mrl.index.postgres.engine import Where
from mrl.index.postgres.filter_sql import number_fields, ranged, where_sql
from mrl.index.work import Work
from mrl.vectors import check_vectors

KINDS = ("exact", "binary", "hnsw")  # pgvector's structures: an HNSW graph over floats or bits, or a scan
# a filter the planner expects to let at most this many rows through is searched exactly over them (read
# through the payload index where it can) instead of walking the graph past every row it drops: on 50,001 x 384,
# 2,500 rows took 9 ms exactly against 31 ms through the graph, 25,000 rows 22-1,160 ms against 4-21 ms
FULL_SCAN_ROWS = 5000


class PostgresIndex(Described):
    first_stage_kinds = KINDS
    supports_gates = False  # Postgres runs a whole cascade as one statement

    def __init__(self, where: Where, pool: Any, meta: dict[str, Any]) -> None:
        self.where, self.pool, self.meta = where, pool, meta
        self.dim: int = meta["dim"]
        self.vtype: str = engine.TYPES[meta["dtype"]]
        self.cols = engine.Columns.of(meta)
        self.specs = [parse_first_stage(s) for s in meta["first_stages"]]
        self.adaptor: Any = None  # adaptors are not supported by this backend yet
        self.indexed = ranged(meta.get("number_fields"))  # payload fields with a B-tree for ranges

    @classmethod
    def open(cls, where: Where) -> PostgresIndex:
        pool = engine.pool(where)
        with store.connect(pool, where) as conn:
            meta = store.read_meta(conn, where)
            if meta.get("attached"):  # others write an attached table too: count it now
                meta["count"] = store.live_rows(conn, where, meta["attached"]["vector_column"])
        return cls(where, pool, meta)

    @classmethod
    def build(cls, where: Where, vectors: Any, ids: Any = None, *, model: str | None = None,
              first_stages: Sequence[str] | None = None, default_cascade: str | None = None,
              dtype: str | None = None, hnsw_m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION,
              overwrite: bool = False,
              payloads: Sequence[dict[str, Any] | None] | None = None, **ignored: Any) -> PostgresIndex:
        """A new table ``where.table`` from ``vectors`` (float ``(n, D)``) and ``ids`` (default ``0..n-1``),
        with one expression index per first stage; one transaction, so a failed build leaves nothing."""
        unknown = {k for k, v in ignored.items() if v}
        if unknown:
            raise MrlError(f"the postgres backend does not take {', '.join(sorted(unknown))}")
        vectors = check_vectors(vectors, None, "vectors", scan=True)
        n, dim = vectors.shape
        dtype = dtype or "float32"
        if dtype not in engine.TYPES:
            raise MrlError(f"--dtype {dtype!r}: expected float32 (vector) or float16 (halfvec)")
        check_hnsw(hnsw_m, ef_construction)
        rids, keys, id_kind = _rows(ids, n)
        rows = check_payloads(payloads, n) if payloads is not None else None
        specs, meta = cls._describe(where, dim, dtype, id_kind, n, first_stages, default_cascade, model=model,
                                    hnsw_m=hnsw_m, ef_construction=ef_construction)
        meta["payload_types"] = payload_types(rows or [])
        meta["payload_index"] = engine.payload_index_name(where.table)  # filters' match tests look it up
        meta["number_fields"] = number_fields(rows or [])  # a range on a single-number field reads its B-tree
        pool = engine.pool(where)
        with store.connect(pool, where) as conn:
            store.create(conn, where, meta, specs, vectors, rids, keys, overwrite, rows)
        return cls(where, pool, meta)

    @classmethod
    def attach(cls, where: Where, id_column: str, vector_column: str, *, model: str | None = None,
               first_stages: Sequence[str] | None = None, default_cascade: str | None = None, hnsw_m: int = HNSW_M,
               ef_construction: int = EF_CONSTRUCTION) -> PostgresIndex:
        """The funnel over the user's table (:mod:`mrl.index.postgres.attach`): nothing copied, the
        expression indexes created concurrently, the description added."""
        pool = engine.pool(where)
        with store.connect(pool, where) as conn:
            dim, dtype, id_kind, rows = attach_mode.describe(conn, where, id_column, vector_column)
            specs, meta = cls._describe(where, dim, dtype, id_kind, rows, first_stages, default_cascade, model=model,
                                        hnsw_m=hnsw_m, ef_construction=ef_construction,
                                        attached={"id_column": id_column, "vector_column": vector_column})
            attach_mode.attach(conn, where, meta, specs)
        return cls(where, pool, meta)

    @classmethod
    def _describe(cls, where: Where, dim: int, dtype: str, id_kind: str, count: int,
                  first_stages: Sequence[str] | None, default_cascade: str | None,
                  **extra: Any) -> tuple[list[FirstStageSpec], dict[str, Any]]:
        """The first stages and the description of a new index, checked before anything is written."""
        specs = [parse_first_stage(s, dim) for s in (first_stages or [f"hnsw@{min(64, dim)}"])]
        require(specs, KINDS, "postgres + pgvector")
        if len(set(specs)) != len(specs):
            raise MrlError(f"first stages {[str(s) for s in specs]}: listed twice")
        cascade = default_cascade or (f"{specs[0]}:100,{dim}:10" if specs[0].dim < dim else f"{specs[0]}:40")
        meta = {"format": store.FORMAT, "version": store.VERSION, "generation": 1, "dim": dim, "dtype": dtype,
                "first_stages": [str(s) for s in specs], "id_kind": id_kind, "default_cascade": cascade,
                "count": count, **extra}
        cls(where, None, meta)._check_cascade(parse_cascade(cascade, dim))
        return specs, meta

    # ------------------------------------------------------------------ the Searcher protocol
    @property
    def count(self) -> int:
        return int(self.meta["count"])

    def __repr__(self) -> str:
        return f"PostgresIndex({str(self.where)!r}, dim={self.dim}, first_stages={self.meta['first_stages']})"

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        xq = np.atleast_2d(xq) if np.ndim(xq) == 1 else xq
        return np.asarray(check_vectors(xq, self.dim, "queries", owner="the index's", empty=True, scan=True),
                          np.float32)

    def search(self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *,
               adapted: bool = False, work: Work | None = None, filter: Any = None) -> SearchResult:
        """One statement per query (:func:`engine.cascade_sql`), prepared, in one transaction whose
        ``SET LOCAL``s make the first stage's shortlist as long as the plan says.

        ``filter``: a ``WHERE`` on the payload inside the first stage's subquery (bound parameters
        only, :mod:`.filter_sql`), with pgvector's iterative scan; a filter the planner expects to
        let at most :data:`FULL_SCAN_ROWS` rows through, and a query still short of ``k`` rows, runs
        over every row the filter lets through (exact: fewer means fewer exist).
        ``work`` gets the plan's figures (marked not counted): Postgres does not report what it scanned.
        """
        xq = self.prepare_queries(xq)
        plan = self.plan(cascade, k)
        spec = self._spec(plan.kind, plan.first[0])
        f = parse_filter(filter)
        check_types(f, self.meta.get("payload_types"), str(self.where))
        if work is not None:
            _record_plan(work, plan, spec, len(xq))
        where = where_sql(f, self.indexed) if f is not None else None  # compiled once, bound per statement
        whole = plan.first[1] >= self.count or self._few_rows(where)  # every row (it lets through): nothing missed
        found = self._run(xq, plan, spec.kind, whole, where)
        short = [i for i, row in enumerate(found) if len(row) < k]
        if where is not None and short and not whole:
            for i, row in zip(short, self._run(xq[short], plan, spec.kind, True, where)):
                found[i] = row
        return _results(found, len(xq), k)

    def _few_rows(self, where: tuple[Any, list[Any]] | None) -> bool:
        """Whether the planner expects the filter's condition to let at most :data:`FULL_SCAN_ROWS` rows through."""
        return where is not None and store.estimate_rows(self.pool, self.where, *where) <= FULL_SCAN_ROWS

    def _run(self, xq: np.ndarray, plan: Cascade, first_kind: str, whole: bool,
             where: tuple[Any, list[Any]] | None) -> list[list[tuple[int, float]]]:
        cond, cond_params = where if where is not None else (None, None)
        statement = engine.cascade_sql(self.where.table, first_kind, plan.stages, self.dim, self.vtype, whole,
                                       self.cols, cond)
        settings = [] if whole else engine.search_settings(first_kind, plan.first[1], plan.width, where is not None)
        params = [engine.cascade_params(q, first_kind, plan.stages, whole, cond_params) for q in xq]
        return store.run_queries(self.pool, self.where, statement, params, settings)

    def exact_search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, *,
                     adapted: bool = False) -> SearchResult:
        xq = self.prepare_queries(xq)
        dim = dim or self.dim
        resolve_plan(f"{dim}:{k}", k, self.default_cascade, self.dim, self.count)  # checks k and dim
        stages = ((dim, k),)
        statement = engine.cascade_sql(self.where.table, "exact", stages, self.dim, self.vtype, True, self.cols)
        params = [engine.cascade_params(q, "exact", stages, True) for q in xq]
        return _results(store.run_queries(self.pool, self.where, statement, params, []), len(xq), k)

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self.meta["id_kind"] == "int":
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        wanted = sorted({int(i) for i in ids.ravel() if i >= 0})
        found = store.keys_of(self.pool, self.where, wanted, self.cols) if wanted else {}
        return [[found.get(i) if i >= 0 else None for i in row] for row in ids.tolist()]

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return store.sample(self.pool, self.where, min(n, self.count), seed, self.dim, self.cols)

    def max_width(self, spec: FirstStageSpec) -> int:
        return 0  # no inverted files here; an hnsw stage's width (ef_search) follows from the shortlist

    def stats(self) -> dict[str, Any]:
        m = self.meta
        sizes = store.index_bytes(self.pool, self.where, self.specs)
        full = (4 if self.vtype == "vector" else 2) * self.dim
        stages = {str(s): {"bytes_per_vector": sizes[str(s)] / max(self.count, 1) if sizes.get(str(s)) else
                           kind(s.kind).bytes_per_vector(s.dim, hnsw_m=m["hnsw_m"]),
                           "index_bytes": sizes.get(str(s), 0)} for s in self.specs}
        return {"path": str(self.where), "backend": "postgres", "model": m["model"], "count": self.count,
                "dim": self.dim, "dtype": m["dtype"], "id_kind": m["id_kind"], "generation": m["generation"],
                "default_cascade": m["default_cascade"], "first_stages": stages, "segments": 1, "deleted_rows": 0,
                "disk_bytes": sizes.get("table", 0), "full_vector_bytes": full, "tuning": m.get("tuning"),
                "adaptor": None}

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Any = None) -> PostgresIndex:
        if gate is not None:
            raise MrlError("a gate (mrl index tune --adaptive) runs on the mrl backend, not on Postgres")
        plan = self._check_cascade(cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim))
        change = {"default_cascade": str(plan), **({"tuning": tuning} if tuning is not None else {})}
        with store.connect(self.pool, self.where) as conn, conn.transaction():
            meta = store.commit_meta(conn, self.where, change)
        return PostgresIndex(self.where, self.pool, meta)

    def first_stage_scores(self, xq: np.ndarray, plan: Cascade, width: int | None = None) -> np.ndarray:
        raise MrlError("first-stage scores (for a gate) are read on the mrl backend, not on Postgres")

    def search_gated(self, xq: np.ndarray, k: int, plan: Cascade, gate: Any, chosen: np.ndarray | None = None,
                     work: Work | None = None) -> SearchResult:
        raise MrlError("gated cascades run on the mrl backend (Postgres runs a whole cascade as one statement)")

    def refresh(self) -> PostgresIndex:
        with store.connect(self.pool, self.where) as conn:
            meta = store.read_meta(conn, self.where, check=False)  # per request in the service: one query
        return self if meta["generation"] == self.generation else PostgresIndex(self.where, self.pool, meta)

    def check_adaptor(self, adaptor: Any) -> None:
        if adaptor is not None:
            raise MrlError(f"{self.where} is a postgres index, built without an adaptor (adaptors are not supported "
                           "by this backend yet); query it without --adaptor")

    # ------------------------------------------------------------------ changes
    def add(self, vectors: Any, ids: Any, payloads: Sequence[dict[str, Any] | None] | None = None) -> PostgresIndex:
        """Upsert in one transaction: new ids are added, existing ones replaced (payload and all)."""
        vectors = check_vectors(vectors, self.dim, "vectors", owner="the index's", scan=True)
        rids, keys, id_kind = _rows(ids, len(vectors))
        if id_kind != self.meta["id_kind"]:
            raise MrlError(f"this index uses {'string' if self.meta['id_kind'] == 'str' else 'integer'} ids")
        rows = check_payloads(payloads, len(vectors))
        if payloads is not None and self.meta.get("attached"):
            raise MrlError(f"{self.where}: payloads: an attached table keeps its own columns; mrl stores payloads "
                           "only in the tables it builds")
        types = payload_types(rows, {k: dict(v) for k, v in (self.meta.get("payload_types") or {}).items()})
        change: dict[str, Any] = {"payload_types": types}
        if self.meta.get("payload_index"):  # (a table built before the payload indexes keeps none)
            change["number_fields"] = number_fields(rows, self.meta.get("number_fields"))
        with store.connect(self.pool, self.where) as conn, conn.transaction():
            store.read_meta(conn, self.where, lock=True)  # one writer at a time
            if "number_fields" in change:
                store.number_indexes(conn, self.where, self.meta.get("number_fields"), change["number_fields"])
            added = store.upsert(conn, self.where, self.vtype, vectors, rids, keys, self.cols, rows)
            meta = store.commit_meta(conn, self.where, change, count_delta=added)
        return PostgresIndex(self.where, self.pool, meta)

    def delete(self, ids: Any) -> PostgresIndex:
        """Delete by id; every id must exist and be named once (nothing changes otherwise)."""
        values = list(ids.tolist() if isinstance(ids, np.ndarray) else ids)
        if not values:
            raise MrlError("delete: no ids given")
        check_ids(values, len(values))
        keys = [str(v) for v in values]
        with store.connect(self.pool, self.where) as conn, conn.transaction():
            meta = store.read_meta(conn, self.where, lock=True)
            if len(keys) >= meta["count"]:
                raise MrlError(f"delete: removing all {meta['count']} vectors would leave an empty index; "
                               "build a new one")
            store.delete(conn, self.where, keys, self.cols)  # raises (rolling back) when an id is missing
            meta = store.commit_meta(conn, self.where, {}, count_delta=-len(keys))
        return PostgresIndex(self.where, self.pool, meta)

    def compact(self) -> PostgresIndex:
        """``VACUUM ANALYZE`` the table: dead rows of replaced and deleted ids leave the heap and indexes."""
        store.vacuum(self.pool, self.where)
        return self.refresh()

    def verify(self) -> list[str]:
        try:
            with store.connect(self.pool, self.where) as conn:
                return store.problems(conn, self.where, self.meta, self.specs)
        except Exception as e:  # a lost server is a problem to report, not a crash
            return [f"{self.where}: {e}"]

    # ------------------------------------------------------------------ internals
    def _check_cascade(self, plan: Cascade) -> Cascade:
        if plan.gated:
            raise MrlError(f"cascade {plan}: gated cascades run on the mrl backend (Postgres runs a whole cascade "
                           "as one statement); use the ungated cascade here")
        spec = self._spec(plan.kind, plan.first[0])
        if plan.width is not None and spec.kind != "hnsw":
            raise MrlError(f"a search width (hnsw.ef_search) applies to hnsw first stages, not to {spec}")
        return plan


def _rows(ids: Any, n: int) -> tuple[list[int], list[str], str]:
    """Each row's int64 id (``rid``), text key and the id kind; ids are checked by :func:`check_ids`."""
    values = check_ids(ids if ids is not None else np.arange(n), n)
    if values.dtype.kind == "U":
        keys = values.tolist()
        return [engine.id_number(k) for k in keys], keys, "str"
    return values.tolist(), [str(i) for i in values.tolist()], "int"


def _record_plan(work: Work, plan: Cascade, spec: FirstStageSpec, nq: int) -> None:
    code = kind(spec.kind).code_bytes(spec.dim)
    ones = np.ones(nq)
    work.record(0, str(spec), spec.dim, ones * plan.first[1], ones * plan.first[1] * code, counted=False)
    for i, ((d, _), (_, n_prev)) in enumerate(zip(plan.stages[1:], plan.stages), start=1):
        work.record(i, f"rescore@{d}", d, ones * n_prev, ones * n_prev * d * 4.0, counted=False)


def _results(rows: list[list[tuple[int, float]]], nq: int, k: int) -> SearchResult:
    scores = np.full((nq, k), -np.inf, np.float32)
    ids = np.full((nq, k), -1, np.int64)
    for i, row in enumerate(rows):
        for j, (rid, score) in enumerate(row[:k]):
            scores[i, j], ids[i, j] = score, rid
    return SearchResult(scores, ids)
