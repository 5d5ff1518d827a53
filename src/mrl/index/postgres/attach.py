"""Attach mode: the funnel over a table the user already has (``--attach --id-column C --vector-column V``).

Nothing is copied. The vector column must be ``vector(D)`` or ``halfvec(D)`` and the id column a
``text``/``varchar`` or ``integer``/``bigint`` with a unique index (writes upsert on it). Every
first stage's expression index is created ``CONCURRENTLY`` (writers are not blocked) and, for a
text id column, a btree over the computed int64 id (``hashtextextended``, 63 bits) that
``keys()`` looks up; vectors are normalised inside every expression, as the user's rows need not
be unit vectors. mrl's description is a row of ``mrl_indexes``, written last: if an index cannot
be built, the ones made so far are dropped and nothing is left behind.
"""

from __future__ import annotations

from typing import Any

from mrl.errors import MrlError
from mrl.index.first_stages.kinds import FirstStageSpec
from mrl.index.postgres import engine, store
from mrl.index.postgres.engine import META_TABLE, Where


def describe(conn: Any, where: Where, id_column: str, vector_column: str) -> tuple[int, str, str, int]:
    """``(dim, dtype, id_kind, rows)`` of the user's table; the error names the missing or unsuitable column."""
    columns = store.columns_of(conn, where)
    for name in (id_column, vector_column):
        if name not in columns:
            raise MrlError(f"{where}: table {where.table!r} has no column {name!r} (columns: {', '.join(columns)})")
    vtype, _, rest = columns[vector_column].partition("(")
    dtype = {v: k for k, v in engine.TYPES.items()}.get(vtype)
    if dtype is None or not rest.rstrip(")").isdigit():
        raise MrlError(f"{where}: column {vector_column!r} is {columns[vector_column]}; attach needs vector(D) or "
                       "halfvec(D) with its dimension declared")
    kind = columns[id_column].split("(")[0]
    id_kind = {"text": "str", "character varying": "str", "bigint": "int", "integer": "int"}.get(kind)
    if id_kind is None:
        raise MrlError(f"{where}: id column {id_column!r} is {columns[id_column]}; attach needs text, varchar, "
                       "integer or bigint")
    with store.errors(where, "reading the table"):
        unique = conn.execute("SELECT 1 FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND "
                              "a.attnum = i.indkey[0] WHERE i.indrelid = to_regclass(quote_ident(%s)) AND "
                              "i.indisunique AND i.indnkeyatts = 1 AND a.attname = %s", (where.table, id_column)
                              ).fetchone()
    rows = store.live_rows(conn, where, vector_column)
    if unique is None:
        raise MrlError(f"{where}: id column {id_column!r} has no unique index (a primary key or UNIQUE): ids must "
                       "name one row each")
    if rows == 0:
        raise MrlError(f"{where}: table {where.table!r} has no rows with a vector in {vector_column!r}")
    return int(rest.rstrip(")")), dtype, id_kind, int(rows)


def attach(conn: Any, where: Where, meta: dict[str, Any], specs: list[FirstStageSpec]) -> None:
    """Create the indexes concurrently (``conn`` in autocommit), then the description; on failure
    drop every index made here."""
    cols = engine.Columns.of(meta)
    statements = [(engine.index_name(where.table, s),
                   engine.index_ddl(where.table, s, meta["dim"], engine.TYPES[meta["dtype"]], meta["hnsw_m"],
                                    meta["ef_construction"], cols, concurrently=True)) for s in specs]
    if not cols.int_ids:
        statements.append((engine.rid_index_name(where.table), _sql().SQL(
            "CREATE INDEX CONCURRENTLY {name} ON {t} (({rid}))").format(
            name=_sql().Identifier(engine.rid_index_name(where.table)), t=store.table_ident(where),
            rid=cols.rid_sql())))
    made: list[str] = []
    try:
        with store.errors(where, "attaching"):
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            conn.execute(f"CREATE TABLE IF NOT EXISTS {META_TABLE} (name text PRIMARY KEY, meta jsonb NOT NULL)")
            if conn.execute(f"SELECT 1 FROM {META_TABLE} WHERE name = %s", (where.table,)).fetchone():
                raise MrlError(f"{where}: table {where.table!r} is already an mrl index")
            need = engine.build_memory(meta["count"], specs, meta["dim"], engine.TYPES[meta["dtype"]], meta["hnsw_m"])
            store.raise_build_memory(conn, need, local=False)  # (CONCURRENTLY runs outside a transaction)
            for name, ddl in statements:
                if ddl is not None:
                    made.append(name)
                    conn.execute(ddl)
            conn.execute("RESET maintenance_work_mem")
            from psycopg.types.json import Jsonb

            conn.execute(f"INSERT INTO {META_TABLE} (name, meta) VALUES (%s, %s)", (where.table, Jsonb(meta)))
    except BaseException:
        import psycopg

        for name in made:  # an interrupted CREATE INDEX CONCURRENTLY leaves an invalid index: drop it too
            try:
                conn.execute(_sql().SQL("DROP INDEX CONCURRENTLY IF EXISTS {}").format(_sql().Identifier(name)))
            except psycopg.Error:  # (a lost connection: the first error is the one to report)
                break
        raise


def _sql() -> Any:
    from psycopg import sql

    return sql
