"""The Postgres side of the funnel: the URI, the connection pool, and every SQL statement.

Identifiers (the table, its indexes) are composed with :mod:`psycopg.sql` (quoted); every value
(a query vector, a shortlist length, an id) is a bound parameter, never SQL text. The only
words pasted into statements are this module's own: the vector type (``vector``/``halfvec``),
operators and operator classes.
"""

from __future__ import annotations

import atexit
import hashlib
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import numpy as np

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import FirstStageSpec, ef_search

HINT = "pip install 'mrl[postgres]'"
META_TABLE = "mrl_indexes"  # mrl's description of every index in a database: (name, meta jsonb)
EF_MAX = 1000  # pgvector's largest hnsw.ef_search; longer shortlists use its iterative scan
TYPES = {"float32": "vector", "float16": "halfvec"}
BYTES = {"vector": 4, "halfvec": 2}  # per dimension
INLINE_BYTES = 6000  # a vector up to this size is kept in its row (STORAGE PLAIN); a page holds 8 kB
BUILD_MEMORY_MAX = 8 << 30  # the most maintenance_work_mem a build asks for (a server set higher keeps its own)
_POOLS: dict[str, Any] = {}


def require() -> Any:
    """psycopg (3) and psycopg_pool, or an install hint."""
    try:
        import psycopg
        import psycopg_pool  # noqa: F401
    except ImportError:
        raise MrlError(f"the postgres backend needs psycopg 3 and psycopg_pool: {HINT}") from None
    return psycopg


@atexit.register
def close_pools(conninfo: str | None = None) -> None:
    """Close the pool of ``conninfo`` (default: every pool), e.g. before its server stops."""
    for key in [conninfo] if conninfo is not None else list(_POOLS):
        pool = _POOLS.pop(key, None)
        if pool is not None:
            pool.close()


@dataclass(frozen=True)
class Where:
    """A ``postgresql://USER@HOST:PORT/DB?table=NAME`` URI: libpq's part and the table."""

    conninfo: str  # the URI without ``table`` (libpq reads the rest; the password may come from PGPASSWORD)
    table: str

    @classmethod
    def parse(cls, uri: str) -> Where:
        parts = urlsplit(str(uri))
        if parts.scheme not in ("postgresql", "postgres"):
            raise MrlError(f"{shown(uri)}: expected postgresql://USER@HOST:PORT/DB?table=NAME")
        query = parse_qsl(parts.query, keep_blank_values=True)
        tables = [v for k, v in query if k == "table"]
        if len(tables) != 1 or not tables[0]:
            raise MrlError(f"{shown(uri)}: name the table once, e.g. postgresql://USER@HOST:PORT/DB?table=docs")
        rest = urlencode([(k, v) for k, v in query if k != "table"])
        return cls(urlunsplit(parts._replace(query=rest)), tables[0])

    def __str__(self) -> str:
        return shown(f"{self.conninfo}{'&' if '?' in self.conninfo else '?'}table={self.table}")


def shown(uri: str) -> str:
    """``uri`` with any password masked, for messages."""
    parts = urlsplit(str(uri))
    if parts.password is None:
        return str(uri)
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def pool(where: Where) -> Any:
    """The connection pool of ``where``'s server (one per conninfo), opened after a first connection
    whose failure (unreachable server, wrong password, no database) is the error."""
    psycopg = require()
    if where.conninfo in _POOLS:
        return _POOLS[where.conninfo]
    from psycopg_pool import ConnectionPool

    try:
        psycopg.connect(where.conninfo, connect_timeout=10).close()
    except psycopg.Error as e:
        raise MrlError(f"{where}: cannot connect to Postgres: {str(e).strip()}") from None
    new = ConnectionPool(where.conninfo, min_size=1, max_size=4, open=False, configure=_configure, timeout=10,
                         kwargs={"autocommit": True, "connect_timeout": 10})
    new.open(wait=True, timeout=30)
    _POOLS[where.conninfo] = new
    return new


def _configure(conn: Any) -> None:
    # a custom plan per execution: a generic plan of ``ORDER BY expr <#> $1 LIMIT $2`` may not use the index
    conn.execute("SET plan_cache_mode = force_custom_plan")
    conn.adapters.register_dumper(Floats, _floats_dumper())


class Floats:
    """A query vector as a bound ``real[]`` parameter, sent in binary (psycopg would format each float as text)."""

    __slots__ = ("values",)

    def __init__(self, values: np.ndarray) -> None:
        self.values = np.ascontiguousarray(values, np.float32).ravel()


def _floats_dumper() -> Any:
    from psycopg import pq
    from psycopg.adapt import Dumper

    class FloatsDumper(Dumper):
        format = pq.Format.BINARY
        oid = 1021  # real[] (a built-in type: its oid is fixed)

        def dump(self, obj: Any) -> bytes:
            x = obj.values
            body = np.empty(len(x), dtype=[("n", ">i4"), ("v", ">f4")])  # each element: its length, its value
            body["n"], body["v"] = 4, x
            return np.array([1, 0, 700, len(x), 1], ">i4").tobytes() + body.tobytes()  # 1 dim, no nulls, real

    return FloatsDumper


def id_number(key: str) -> int:
    """A string id's int64 (the Searcher's id): a 63-bit blake2b hash, as the Qdrant backend uses."""
    return int.from_bytes(hashlib.blake2b(key.encode("utf-8"), digest_size=8).digest(), "big") >> 1


def index_name(table: str, spec: FirstStageSpec) -> str:
    """The name of a first stage's expression index (short: Postgres cuts names at 63 bytes)."""
    return f"mrl_{hashlib.blake2b(table.encode(), digest_size=5).hexdigest()}_{spec.kind}_{spec.dim}"


def payload_index_name(table: str) -> str:
    """The name of a built table's GIN index over its payloads (what a filter's ``match`` looks up)."""
    return f"mrl_{hashlib.blake2b(table.encode(), digest_size=5).hexdigest()}_payload"


def payload_index_ddl(table: str) -> Any:
    """``CREATE INDEX`` of the payloads: GIN with ``jsonb_path_ops``, which answers ``payload @? path``
    for the equality tests of a filter (:mod:`.filter_sql`)."""
    from psycopg import sql

    return sql.SQL("CREATE INDEX {name} ON {table} USING gin (payload jsonb_path_ops)").format(
        name=sql.Identifier(payload_index_name(table)), table=sql.Identifier(table))


def number_index_name(table: str, key: str) -> str:
    """The name of a built table's B-tree over one numeric payload field (what a filter's ``range`` reads)."""
    h = hashlib.blake2b
    return f"mrl_{h(table.encode(), digest_size=5).hexdigest()}_n_{h(key.encode(), digest_size=5).hexdigest()}"


def number_index_ddl(table: str, key: str) -> Any:
    """``CREATE INDEX`` of the payload field ``key`` (dotted) as ``jsonb``, in jsonb's B-tree order (numbers
    among themselves by value): ``payload #> '{meta,year}'``."""
    from psycopg import sql

    return sql.SQL("CREATE INDEX {name} ON {table} ((payload #> {path}))").format(
        name=sql.Identifier(number_index_name(table, key)), table=sql.Identifier(table),
        path=sql.SQL("{}::text[]").format(sql.Literal(key.split("."))))


def rid_index_name(table: str) -> str:
    """The name of an attached table's index over its computed int64 ids (text id columns)."""
    return f"mrl_{hashlib.blake2b(table.encode(), digest_size=5).hexdigest()}_rid"


# ---------------------------------------------------------------------------------------------- expressions
@dataclass(frozen=True)
class Columns:
    """The columns an index reads: mrl's own table (``id``, ``rid``, ``embedding`` holding unit rows), or
    a table it was attached to (the user's id and vector columns, normalised in every expression)."""

    id: str = "id"
    vector: str = "embedding"
    rid: str | None = "rid"  # None (attached): the int64 id is computed from the id column
    int_ids: bool = False  # an attached integer id column: its values are the int64 ids
    unit: bool = True  # the vectors are stored as unit rows

    @classmethod
    def of(cls, meta: dict[str, Any]) -> Columns:
        attached = meta.get("attached")
        if not attached:
            return cls()
        return cls(attached["id_column"], attached["vector_column"], None, meta["id_kind"] == "int", False)

    def rid_sql(self) -> Any:
        """The int64 id of a row: ``rid``, the integer id, or a 63-bit hash of a text id (``hashtextextended``)."""
        from psycopg import sql

        key = sql.Identifier(self.id)
        if self.rid:
            return sql.Identifier(self.rid)
        if self.int_ids:
            return sql.SQL("{}::bigint").format(key)
        return sql.SQL("(hashtextextended({}::text, 0) & 9223372036854775807)").format(key)


MRL = Columns()
ALIAS = "embedding"  # the vector column as every subquery of a cascade names it


def prefix_expr(d: int, dim: int, vtype: str, cols: Columns = MRL, column: str | None = None) -> Any:
    """The renormalised ``d``-prefix of ``column`` (default the vector column) as an index expression takes it."""
    from psycopg import sql

    v = sql.Identifier(column or cols.vector)
    if d == dim:
        return v if cols.unit else sql.SQL("(l2_normalize({v})::{t}({d}))").format(v=v, t=sql.SQL(vtype),
                                                                                  d=sql.Literal(d))
    return sql.SQL("(l2_normalize(subvector({v}, 1, {d}))::{t}({d}))").format(v=v, d=sql.Literal(d), t=sql.SQL(vtype))


def bits_expr(d: int, cols: Columns = MRL, column: str | None = None) -> Any:
    from psycopg import sql

    v = sql.Identifier(column or cols.vector)
    return sql.SQL("(binary_quantize(subvector({v}, 1, {d}))::bit({d}))").format(v=v, d=sql.Literal(d))


def storage_ddl(table: str, dim: int, vtype: str) -> Any | None:
    """Keep the vector in its row when it fits a page well: pgvector's types move out of line (TOAST)
    above about 2 kB (a 768-dim ``vector``), and every row a cascade reranks then costs a TOAST
    lookup (a 100,000 x 768 funnel: 30% of its time). None when the vector is too long to inline."""
    from psycopg import sql

    if dim * BYTES[vtype] > INLINE_BYTES:
        return None
    return sql.SQL("ALTER TABLE {t} ALTER COLUMN embedding SET STORAGE PLAIN").format(t=sql.Identifier(table))


def build_memory(rows: int, specs: list[FirstStageSpec], dim: int, vtype: str, hnsw_m: int) -> int:
    """Bytes of ``maintenance_work_mem`` the largest HNSW graph of ``specs`` needs to build in memory
    (pgvector builds much slower once its graph outgrows it): per row the indexed value and about
    ``2 m`` neighbours at level 0, plus headers; at most :data:`BUILD_MEMORY_MAX`."""
    per_row = [(s.dim // 8 if s.kind == "binary" else s.dim * BYTES[vtype]) + 40 * hnsw_m + 200
               for s in specs if s.kind in ("hnsw", "binary")]
    need = int(rows * max(per_row, default=0) * 1.2)
    return min(max(need, 64 << 20), BUILD_MEMORY_MAX)


def query_param(d: int, vtype: str) -> Any:
    """A bound query prefix (a float array parameter) as the column's type."""
    from psycopg import sql

    return sql.SQL("%s::real[]::{t}({d})").format(t=sql.SQL(vtype), d=sql.Literal(d))


def order_expr(spec_kind: str, d: int, dim: int, vtype: str, cols: Columns = MRL, column: str | None = None) -> Any:
    """``ORDER BY`` of a stage: the distance its index orders by (smaller is better)."""
    from psycopg import sql

    if spec_kind == "binary":
        return sql.SQL("{e} <~> binary_quantize({q})").format(e=bits_expr(d, cols, column), q=query_param(d, vtype))
    return sql.SQL("{e} <#> {q}").format(e=prefix_expr(d, dim, vtype, cols, column), q=query_param(d, vtype))


def index_ddl(table: str, spec: FirstStageSpec, dim: int, vtype: str, hnsw_m: int, ef_construction: int,
              cols: Columns = MRL, concurrently: bool = False) -> Any | None:
    """``CREATE INDEX`` of a first stage (``None``: an exact stage scans)."""
    from psycopg import sql

    if spec.kind == "exact":
        return None
    expr, ops = ((bits_expr(spec.dim, cols), "bit_hamming_ops") if spec.kind == "binary" else
                 (prefix_expr(spec.dim, dim, vtype, cols), f"{vtype}_ip_ops"))
    return sql.SQL("CREATE INDEX {c} {name} ON {table} USING hnsw ({expr} {ops}) "
                   "WITH (m = {m}, ef_construction = {ef})").format(
        c=sql.SQL("CONCURRENTLY" if concurrently else ""), name=sql.Identifier(index_name(table, spec)),
        table=sql.Identifier(table), expr=expr, ops=sql.SQL(ops), m=sql.Literal(int(hnsw_m)),
        ef=sql.Literal(int(ef_construction)))


def cascade_sql(table: str, first_kind: str, stages: tuple[tuple[int, int], ...], dim: int, vtype: str,
                whole: bool, cols: Columns = MRL, where: Any = None) -> Any:
    """One statement for a cascade: the first stage's shortlist (ordered by its index's operator, or
    every row when ``whole``), each later stage reranking the previous one's rows on a longer
    prefix; returns ``(rid, score)`` best first. Parameters: per stage its query prefix (binary:
    none for the score) and its ``LIMIT``; ``where`` (a payload filter's condition, see
    :mod:`.filter_sql`) restricts the first stage's rows, its parameters second (after the score's prefix)."""
    from psycopg import sql

    d1 = stages[0][0]
    conds = ([] if cols.unit else [sql.SQL("{v} IS NOT NULL").format(v=sql.Identifier(cols.vector))]) + \
        ([where] if where is not None else [])
    rows = sql.SQL("SELECT {rid} AS rid, {v} AS {alias} FROM {t}{conds}").format(
        rid=cols.rid_sql(), v=sql.Identifier(cols.vector), alias=sql.Identifier(ALIAS), t=sql.Identifier(table),
        conds=sql.SQL(" WHERE {}").format(sql.SQL(" AND ").join(conds)) if conds else sql.SQL(""))
    inner = rows if whole else sql.SQL("{r} ORDER BY {o} LIMIT %s").format(
        r=rows, o=order_expr(first_kind, d1, dim, vtype, cols))
    for d, _ in stages[1:-1]:
        inner = sql.SQL("SELECT rid, {a} FROM ({i}) s ORDER BY {o} LIMIT %s").format(
            a=sql.Identifier(ALIAS), i=inner, o=order_expr("float", d, dim, vtype, cols, ALIAS))
    last_d = stages[-1][0]
    if len(stages) == 1 and first_kind == "binary":  # the score of a binary code: 1 - 2 hamming / d
        score = sql.SQL("1 - 2 * ({e} <~> binary_quantize({q})) / {d}").format(
            e=bits_expr(last_d, cols, ALIAS), q=query_param(last_d, vtype), d=sql.Literal(float(last_d)))
    else:
        score = sql.SQL("-({e} <#> {q})").format(e=prefix_expr(last_d, dim, vtype, cols, ALIAS),
                                                 q=query_param(last_d, vtype))
    return sql.SQL("SELECT rid, ({score})::real AS score FROM ({i}) s ORDER BY score DESC, rid LIMIT %s").format(
        score=score, i=inner)


def cascade_params(q: np.ndarray, first_kind: str, stages: tuple[tuple[int, int], ...], whole: bool,
                   where: list[Any] | None = None) -> list[Any]:
    """The bound parameters of :func:`cascade_sql` for one (unit, stored-space) query (``where``: the
    filter condition's)."""
    from mrl.prefix import truncate

    def prefix(d: int) -> Floats:
        return Floats(truncate(q, d))

    params: list[Any] = [] if whole else [prefix(stages[0][0]), stages[0][1]]
    for d, n in stages[1:-1]:
        params += [prefix(d), n]
    return [prefix(stages[-1][0]), *(where or []), *params, stages[-1][1]]


def search_settings(first_kind: str, n1: int, width: int | None, filtered: bool = False) -> list[tuple[str, str]]:
    """``SET LOCAL``s (as ``set_config``) that make an HNSW shortlist of ``n1`` return ``n1`` rows:
    pgvector's default ``hnsw.ef_search`` (40) caps a ``LIMIT 200`` at 40 rows; beyond
    :data:`EF_MAX`, or under a filter (which drops rows the graph found), its iterative scan goes
    on until the ``LIMIT`` is met."""
    if first_kind == "exact":
        return []
    ef = min(ef_search(n1, width), EF_MAX)
    settings = [("hnsw.ef_search", str(ef))]
    if n1 > EF_MAX or filtered:
        settings += [("hnsw.iterative_scan", "strict_order"), ("hnsw.max_scan_tuples", str(max(20000, 10 * n1)))]
    return settings


def vector_bytes(x: np.ndarray, vtype: str) -> list[bytes]:
    """pgvector's binary format of each row (``vector``: int16 dim, int16 0, big-endian float32s;
    ``halfvec``: the same with float16s), for ``COPY ... (FORMAT BINARY)``."""
    n, d = x.shape
    header = np.frombuffer(np.array([d, 0], ">u2").tobytes(), np.uint8)
    body = np.ascontiguousarray(x, ">f4" if vtype == "vector" else ">f2").view(np.uint8).reshape(n, -1)
    rows = np.concatenate([np.broadcast_to(header, (n, 4)), body], axis=1)
    return [r.tobytes() for r in rows]
