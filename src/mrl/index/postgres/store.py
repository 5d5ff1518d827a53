"""What :class:`~mrl.index.postgres.funnel.PostgresIndex` reads and writes: the table, its description
in ``mrl_indexes``, and the statements that run on them. Every Postgres error leaves as an
:class:`MrlError` naming the index; a write runs inside the caller's transaction, so it rolls back.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import FirstStageSpec
from mrl.index.postgres import engine
from mrl.index.postgres.engine import META_TABLE, Where
from mrl.prefix import unit_rows

FORMAT = "mrl-postgres"
VERSION = 1
COPY_BLOCK = 4096  # rows per block read from a (memory-mapped) input and sent with COPY


@contextmanager
def errors(where: Where, what: str) -> Iterator[None]:
    """Postgres errors as :class:`MrlError` (``what`` failed at ``where``)."""
    import psycopg

    try:
        yield
    except psycopg.Error as e:
        raise MrlError(f"{where}: {what} failed: {str(e).strip()}") from None


@contextmanager
def connect(pool: Any, where: Where, what: str = "the statement") -> Iterator[Any]:
    """A pooled connection; a lost server or any Postgres error inside is an :class:`MrlError`."""
    with errors(where, what), pool.connection() as conn:
        yield conn


def _sql() -> Any:
    from psycopg import sql

    return sql


def table_ident(where: Where) -> Any:
    return _sql().Identifier(where.table)


# ---------------------------------------------------------------------------------------------- description
def read_meta(conn: Any, where: Where, lock: bool = False, check: bool = True) -> dict[str, Any]:
    """The index's description (``lock``: ``FOR UPDATE``, one writer at a time), after checking that
    the table still has the columns it describes (``check``, when not locking)."""
    with errors(where, "reading the index description"):
        if conn.execute("SELECT to_regclass(%s)", (META_TABLE,)).fetchone()[0] is None:
            raise MrlError(f"{where}: no mrl index in this database (no {META_TABLE} table); build one with "
                           "mrl index build --backend postgres")
        row = conn.execute(f"SELECT meta FROM {META_TABLE} WHERE name = %s{' FOR UPDATE' if lock else ''}",
                           (where.table,)).fetchone()
    if row is None:
        raise MrlError(f"{where}: table {where.table!r} is not an mrl index (no row in {META_TABLE}); build it with "
                       "mrl index build --backend postgres")
    meta = dict(row[0])
    if meta.get("format") != FORMAT or meta.get("version") != VERSION:
        raise MrlError(f"{where}: not an mrl postgres index description (format {FORMAT} v{VERSION})")
    if check and not lock:
        check_table(conn, where, meta["dim"], engine.TYPES[meta["dtype"]], engine.Columns.of(meta))
    return meta


def columns_of(conn: Any, where: Where) -> dict[str, str]:
    """``{column: type}`` of the table (its types as ``format_type`` writes them, e.g. ``vector(384)``)."""
    with errors(where, "reading the table's columns"):
        rows = conn.execute("SELECT a.attname, format_type(a.atttypid, a.atttypmod) FROM pg_attribute a "
                            "WHERE a.attrelid = to_regclass(quote_ident(%s)) AND a.attnum > 0 AND NOT a.attisdropped",
                            (where.table,)).fetchall()
    if not rows:
        raise MrlError(f"{where}: table {where.table!r} does not exist")
    return dict(rows)


def check_table(conn: Any, where: Where, dim: int, vtype: str, cols: engine.Columns = engine.MRL) -> None:
    """The table exists with the columns the index reads (mrl's: ``id text``, ``rid bigint``, ``embedding
    VTYPE(dim)``); the error names the missing table or column, or the column of another type or dimension."""
    columns = columns_of(conn, where)
    id_types = ("bigint", "integer") if cols.int_ids else ("text", "character varying")
    wanted = ([("id", ("text",)), ("rid", ("bigint",))] if cols.rid else [(cols.id, id_types)])
    for name, allowed in [*wanted, (cols.vector, (f"{vtype}({dim})",))]:
        if name not in columns:
            raise MrlError(f"{where}: table {where.table!r} has no column {name!r} (expected {name} {allowed[0]})")
        if columns[name] not in allowed and columns[name].split("(")[0] not in allowed:
            raise MrlError(f"{where}: column {name!r} of table {where.table!r} is {columns[name]}, "
                           f"the index needs {' or '.join(allowed)}")


def commit_meta(conn: Any, where: Where, change: dict[str, Any], count_delta: int = 0) -> dict[str, Any]:
    """Write the description with ``change`` applied, the next generation and the live count moved by
    ``count_delta``, inside the caller's transaction; the new description."""
    from psycopg.types.json import Jsonb

    meta = read_meta(conn, where, lock=True)
    count = meta["count"] + count_delta
    if meta.get("attached"):  # others write an attached table too: count what this transaction sees
        count = live_rows(conn, where, meta["attached"]["vector_column"])
    new = {**meta, **change, "generation": meta["generation"] + 1, "count": count}
    with errors(where, "writing the index description"):
        conn.execute(f"UPDATE {META_TABLE} SET meta = %s WHERE name = %s", (Jsonb(new), where.table))
    return new


def live_rows(conn: Any, where: Where, vector_column: str) -> int:
    """Rows with a vector (what an attached index searches)."""
    with errors(where, "counting rows"):
        return int(conn.execute(_sql().SQL("SELECT count(*) FROM {t} WHERE {v} IS NOT NULL").format(
            t=table_ident(where), v=_sql().Identifier(vector_column))).fetchone()[0])


# ---------------------------------------------------------------------------------------------- build and writes
def create(conn: Any, where: Where, meta: dict[str, Any], specs: list[FirstStageSpec], vectors: Any,
           rids: list[int], keys: list[str], overwrite: bool, payloads: list[Any] | None = None) -> None:
    """The table, its rows, one index per first stage and the description, in one transaction."""
    from psycopg.types.json import Jsonb

    sql, table, vtype = _sql(), table_ident(where), engine.TYPES[meta["dtype"]]
    with errors(where, "CREATE EXTENSION vector (pgvector must be installed on the server)"):
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    with errors(where, "the build"), conn.transaction():
        conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, meta jsonb NOT NULL)")
        conn.execute(f"LOCK TABLE {META_TABLE} IN SHARE ROW EXCLUSIVE MODE")  # one build at a time
        exists = conn.execute("SELECT to_regclass(quote_ident(%s)) IS NOT NULL", (where.table,)).fetchone()[0]
        if exists and not overwrite:
            raise MrlError(f"{where}: table {where.table!r} already exists; pass --overwrite to replace it")
        conn.execute(sql.SQL("DROP TABLE IF EXISTS {t}").format(t=table))
        conn.execute(f"DELETE FROM {META_TABLE} WHERE name = %s", (where.table,))
        conn.execute(sql.SQL("CREATE TABLE {t} (id text PRIMARY KEY, rid bigint NOT NULL UNIQUE, embedding {v}({d}) "
                             "NOT NULL, payload jsonb)").format(t=table, v=sql.SQL(vtype), d=sql.Literal(meta["dim"])))
        storage = engine.storage_ddl(where.table, meta["dim"], vtype)
        if storage is not None:
            conn.execute(storage)
        copy_rows(conn, table, vtype, vectors, rids, keys, payloads=payloads)
        raise_build_memory(conn, engine.build_memory(len(rids), specs, meta["dim"], vtype, meta["hnsw_m"]),
                           local=True)
        for spec in specs:
            ddl = engine.index_ddl(where.table, spec, meta["dim"], vtype, meta["hnsw_m"], meta["ef_construction"])
            if ddl is not None:
                conn.execute(ddl)
        if meta.get("payload_index"):
            conn.execute(engine.payload_index_ddl(where.table))
            number_indexes(conn, where, {}, meta.get("number_fields"))
        conn.execute(f"INSERT INTO {META_TABLE} (name, meta) VALUES (%s, %s)", (where.table, Jsonb(meta)))
        conn.execute(sql.SQL("ANALYZE {t}").format(t=table))


def raise_build_memory(conn: Any, need: int, local: bool) -> None:
    """``maintenance_work_mem`` of ``need`` bytes for the index builds that follow, unless the server's
    setting is already larger (``local``: for the transaction; else for the session)."""
    have = int(conn.execute("SELECT setting::bigint * 1024 FROM pg_settings WHERE name = 'maintenance_work_mem'"
                            ).fetchone()[0])
    if need > have:
        conn.execute("SELECT set_config('maintenance_work_mem', %s, %s)", (f"{need // (1 << 20)}MB", local))


def number_indexes(conn: Any, where: Where, before: dict[str, str] | None, after: dict[str, str] | None) -> None:
    """Make a B-tree for each field that now holds only single numbers; drop the one of a field that
    came to hold a list (inside the caller's transaction)."""
    from mrl.index.postgres.filter_sql import ranged

    old, new = ranged(before), ranged(after)
    for key in sorted(new - old):
        conn.execute(engine.number_index_ddl(where.table, key))
    for key in sorted(old - new):
        conn.execute(_sql().SQL("DROP INDEX IF EXISTS {}").format(
            _sql().Identifier(engine.number_index_name(where.table, key))))


def copy_rows(conn: Any, table: Any, vtype: str, vectors: Any, rids: list[int], keys: list[Any],
              id_type: str = "text", payloads: list[Any] | None = None) -> None:
    """``COPY table (id, rid, embedding[, payload]) FROM STDIN (FORMAT BINARY)`` of the unit rows, in blocks.

    Binary COPY carries no type per field: the vector goes as ``bytea`` (sent as is) holding
    pgvector's own binary format, which the column's receive function reads.
    """
    from psycopg.types.json import Jsonb

    columns = "id, rid, embedding, payload" if payloads is not None else "id, rid, embedding"
    statement = _sql().SQL("COPY {t} ({c}) FROM STDIN (FORMAT BINARY)").format(t=table, c=_sql().SQL(columns))
    with conn.cursor() as cur, cur.copy(statement) as copy:
        copy.set_types([id_type, "int8", "bytea", "jsonb"] if payloads is not None else [id_type, "int8", "bytea"])
        for start in range(0, len(keys), COPY_BLOCK):
            block = engine.vector_bytes(unit_rows(np.asarray(vectors[start : start + COPY_BLOCK])), vtype)
            for i, (key, rid, data) in enumerate(zip(keys[start : start + COPY_BLOCK],
                                                     rids[start : start + COPY_BLOCK], block), start=start):
                if payloads is None:
                    copy.write_row((key, rid, data))
                else:
                    copy.write_row((key, rid, data, Jsonb(payloads[i]) if payloads[i] is not None else None))


def upsert(conn: Any, where: Where, vtype: str, vectors: Any, rids: list[int], keys: list[str],
           cols: engine.Columns = engine.MRL, payloads: list[Any] | None = None) -> int:
    """Insert or replace the rows (inside the caller's transaction) through a staging table loaded by
    COPY; how many ids were new. On mrl's own table a replaced row's payload is replaced too (by
    the given one, or none); an attached table's columns beside id and vector are left alone."""
    sql, table = _sql(), table_ident(where)
    staging = sql.Identifier("mrl_upsert")
    id_type = "bigint" if cols.int_ids else "text"
    key, vec = sql.Identifier(cols.id), sql.Identifier(cols.vector)
    target = sql.SQL("{k}, rid, {v}" if cols.rid else "{k}, {v}").format(k=key, v=vec)
    with errors(where, "the upsert"):
        conn.execute(sql.SQL("CREATE TEMP TABLE {s} (id {i}, rid bigint, embedding {v}({d}), payload jsonb) "
                             "ON COMMIT DROP").format(s=staging, i=sql.SQL(id_type), v=sql.SQL(vtype),
                                                      d=sql.Literal(len(vectors[0]))))
        copy_rows(conn, staging, vtype, vectors, rids, [int(k) for k in keys] if cols.int_ids else keys,
                  "int8" if cols.int_ids else "text", payloads if cols.rid else None)
        added = conn.execute(sql.SQL("SELECT count(*) FROM {s} u WHERE NOT EXISTS (SELECT 1 FROM {t} x WHERE "
                                     "x.{k} = u.id)").format(s=staging, t=table, k=key)).fetchone()[0]
        conn.execute(sql.SQL("INSERT INTO {t} ({target}) SELECT {source} FROM {s} ON CONFLICT ({k}) DO UPDATE "
                             "SET {v} = EXCLUDED.{v}{p}").format(
            t=table, target=sql.SQL("{}, payload").format(target) if cols.rid else target,
            source=sql.SQL("id, rid, embedding, payload" if cols.rid else "id, embedding"), s=staging,
            k=key, v=vec, p=sql.SQL(", payload = EXCLUDED.payload" if cols.rid else "")))
    return int(added)


def delete(conn: Any, where: Where, keys: list[str], cols: engine.Columns = engine.MRL) -> None:
    """Delete the rows of ``keys`` (inside the caller's transaction); every one must exist."""
    values: list[Any] = keys
    if cols.int_ids:
        bad = [k for k in keys if not k.lstrip("-").isdigit()]
        if bad:
            raise MrlError(f"delete: {bad[0]!r} is not an integer id (this index's id column is an integer)")
        values = [int(k) for k in keys]
    with errors(where, "the delete"):
        gone = {r[0] for r in conn.execute(_sql().SQL("DELETE FROM {t} WHERE {k} = ANY(%s) RETURNING {k}::text").format(
            t=table_ident(where), k=_sql().Identifier(cols.id)), (values,)).fetchall()}
    missing = [k for k in keys if k not in gone]
    if missing:
        raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")


def vacuum(pool: Any, where: Where) -> None:
    with connect(pool, where, "VACUUM") as conn:
        conn.execute(_sql().SQL("VACUUM ANALYZE {t}").format(t=table_ident(where)))


# ---------------------------------------------------------------------------------------------- reads
def run_queries(pool: Any, where: Where, statement: Any, params: list[list[Any]],
                settings: list[tuple[str, str]]) -> list[list[tuple[int, float]]]:
    """``statement`` once per parameter list, prepared, in one transaction after ``settings``
    (``SET LOCAL`` through ``set_config``, so the values are bound too), all sent in one pipeline."""
    with connect(pool, where, "the search") as conn, conn.pipeline(), conn.transaction():  # one round trip
        for name, value in settings:
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        cursors = [conn.cursor().execute(statement, p, prepare=True) for p in params]
        return [cur.fetchall() for cur in cursors]


def estimate_rows(pool: Any, where: Where, condition: Any, params: list[Any]) -> float:
    """The planner's estimate of the rows ``condition`` lets through (``EXPLAIN``: nothing is read)."""
    statement = _sql().SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM {t} WHERE {c}").format(t=table_ident(where),
                                                                                   c=condition)
    with connect(pool, where, "estimating a filter") as conn:
        plan = conn.execute(statement, params).fetchone()[0]
    return float(plan[0]["Plan"]["Plan Rows"])


def keys_of(pool: Any, where: Where, rids: list[int], cols: engine.Columns = engine.MRL) -> dict[int, str]:
    with connect(pool, where, "reading ids") as conn:
        rows = conn.execute(_sql().SQL("SELECT {r}, {k}::text FROM {t} WHERE {r} = ANY(%s)").format(
            r=cols.rid_sql(), k=_sql().Identifier(cols.id), t=table_ident(where)), (rids,)).fetchall()
    return dict(rows)


def sample(pool: Any, where: Where, n: int, seed: int, dim: int, cols: engine.Columns = engine.MRL) -> np.ndarray:
    """``n`` stored vectors (as unit rows) of distinct rows, in an order fixed by ``seed``."""
    sql = _sql()
    with connect(pool, where, "sampling") as conn:
        rows = conn.execute(sql.SQL("SELECT {v}::vector::real[] FROM {t} WHERE {v} IS NOT NULL ORDER BY "
                                    "hashtextextended({k}::text, %s), {k} LIMIT %s").format(
            v=sql.Identifier(cols.vector), k=sql.Identifier(cols.id), t=table_ident(where)), (seed, n)).fetchall()
    return unit_rows(np.asarray([r[0] for r in rows], np.float32).reshape(len(rows), dim))


def index_bytes(pool: Any, where: Where, specs: list[FirstStageSpec]) -> dict[str, int]:
    """Bytes of each first stage's index (by spec) and of the whole table with its indexes (``table``)."""
    names = [engine.index_name(where.table, s) for s in specs]
    with connect(pool, where, "reading sizes") as conn:
        sizes = conn.execute("SELECT n, pg_relation_size(to_regclass(quote_ident(n))) FROM unnest(%s::text[]) n",
                             (names,)).fetchall()
        total = conn.execute("SELECT pg_total_relation_size(to_regclass(quote_ident(%s)))", (where.table,)).fetchone()
    by_name = dict(sizes)
    out = {str(s): int(by_name.get(n) or 0) for s, n in zip(specs, names)}
    return {**out, "table": int(total[0] or 0)}


def problems(conn: Any, where: Where, meta: dict[str, Any], specs: list[FirstStageSpec]) -> list[str]:
    """Everything wrong with the index: its columns, its live count, a missing or invalid index."""
    from mrl.index.postgres.filter_sql import ranged

    cols = engine.Columns.of(meta)
    try:
        check_table(conn, where, meta["dim"], engine.TYPES[meta["dtype"]], cols)
    except MrlError as e:
        return [str(e)]
    found: list[str] = []
    with errors(where, "verify"):
        stored = read_meta(conn, where)
        count = conn.execute(_sql().SQL("SELECT count(*) FROM {t}").format(t=table_ident(where))).fetchone()[0]
        if count != stored["count"] and cols.rid:  # (an attached table is also written by others)
            found.append(f"{where}: the table has {count} rows, the description says {stored['count']}")
        names = [(f"first stage {s}", engine.index_name(where.table, s)) for s in specs if s.kind != "exact"]
        if not cols.rid and not cols.int_ids:
            names.append(("the id lookup", engine.rid_index_name(where.table)))
        if meta.get("payload_index"):
            names.append(("the payloads", meta["payload_index"]))
            names += [(f"payload field {k!r}", engine.number_index_name(where.table, k))
                      for k in sorted(ranged(stored.get("number_fields")))]
        for label, name in names:
            row = conn.execute("SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(quote_ident(%s))",
                               (name,)).fetchone()
            if row is None or not row[0]:
                found.append(f"{where}: the index of {label} ({name}) is {'invalid' if row else 'missing'}")
    return found
