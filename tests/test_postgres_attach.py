"""Attach mode of the Postgres backend: the funnel over a table the user already has (nothing
copied, expression indexes created concurrently, the description in ``mrl_indexes``)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from test_contract import matryoshka_like
from test_postgres import cli, sql

from mrl.errors import MrlError
from mrl.index import build_index, open_index
from mrl.index.postgres import engine

D = 64
N = 300


def literal(x: np.ndarray) -> str:
    return "[" + ",".join(f"{v:.7g}" for v in x) + "]"


def fill(pg: str, table: str, columns: str, rows: list[tuple[Any, ...]], insert: str) -> None:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")  # the user has pgvector
        conn.execute(f"CREATE TABLE {table} ({columns})")
        with conn.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} {insert}", rows)


def fingerprint(pg: str, table: str) -> list[Any]:
    return sql(pg, f"SELECT md5(string_agg(t::text, '|' ORDER BY t::text)), count(*) FROM {table} t")


def mrl_indexes_of(pg: str, table: str) -> list[Any]:
    return sql(pg, "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = %s::regclass "
                   "AND indexrelid::regclass::text LIKE 'mrl_%%' ORDER BY 1", (table,))


@pytest.fixture(scope="module")
def pg(postgres_server: Any) -> str:
    return str(postgres_server.url)


@pytest.fixture(scope="module")
def items(pg: str) -> np.ndarray:
    """The user's table: integer ids, a title, vectors that are not unit length, and a row without one."""
    xb = matryoshka_like(N, D, seed=5) * np.random.default_rng(0).uniform(0.5, 3.0, (N, 1)).astype(np.float32)
    rows = [(10 * i, f"title {i}", literal(x)) for i, x in enumerate(xb)] + [(-5, "no vector yet", None)]
    fill(pg, "items", "item_id bigint PRIMARY KEY, title text, emb vector(64)", rows,
         "VALUES (%s, %s, %s::vector)")
    return xb


def test_attach_indexes_the_table_in_place(pg: str, items: np.ndarray) -> None:
    before = fingerprint(pg, "items")
    out = cli("index", "build", "--backend", "postgres", "--url", pg, "--table", "items", "--attach", "--id-column",
              "item_id", "--vector-column", "emb", "--first-stage", "hnsw@16", "--first-stage", "binary@32")
    assert f"attached {pg}?table=items: {N} vectors of dim 64" in out
    assert fingerprint(pg, "items") == before  # nothing copied, nothing changed
    assert len(mrl_indexes_of(pg, "items")) == 2
    index = open_index(f"{pg}?table=items")
    assert index.count == N and index.verify() == [] and index.stats()["id_kind"] == "int"
    xq = matryoshka_like(10, D, seed=6)
    unit = items / np.linalg.norm(items, axis=1, keepdims=True)
    want = np.argsort(-(xq / np.linalg.norm(xq, axis=1, keepdims=True)) @ unit.T, axis=1)[:, :5] * 10
    for cascade in ("hnsw@16:300,64:5", "binary@32:300,32:300,64:5", None):
        found = index.search(xq, 5, cascade)
        assert (found.ids == want).mean() > (0.99 if cascade else 0.9)
    np.testing.assert_array_equal(index.exact_search(xq, 5).ids, want)
    assert index.keys(want[:1, :2]) == [[str(want[0, 0]), str(want[0, 1])]]
    grown = index.add(matryoshka_like(2, D, seed=7), [0, 7])  # one replaced, one new: the user's table gets it
    assert grown.count == N + 1 and sql(pg, "SELECT title FROM items WHERE item_id = 7") == [(None,)]
    assert sql(pg, "SELECT title FROM items WHERE item_id = 0") == [("title 0",)]
    shrunk = grown.delete([7])
    assert shrunk.count == N and shrunk.verify() == [] and fingerprint(pg, "items")[0][1] == N + 1
    with pytest.raises(MrlError, match="'x' is not an integer id"):
        shrunk.delete(["x"])
    sql(pg, "INSERT INTO items VALUES (99999, 'written by the app', %s::vector)", (literal(items[1]),))
    assert open_index(f"{pg}?table=items").count == N + 1  # counted when opened
    assert shrunk.delete([99999]).count == N  # and after a write: what the transaction sees
    with pytest.raises(MrlError, match="already an mrl index"):
        build_index("postgres", f"{pg}?table=items", None, attach=True, id_column="item_id", vector_column="emb")
    assert len(mrl_indexes_of(pg, "items")) == 2


def test_attach_a_text_id_column_with_halfvec(pg: str) -> None:
    xb = matryoshka_like(100, D, seed=8)
    slugs = [f"n-{i}'; --" for i in range(100)]
    fill(pg, "notes", "slug text UNIQUE, body text, v halfvec(64)", [(s, "x", literal(x)) for s, x in zip(slugs, xb)],
         "VALUES (%s, %s, %s::halfvec)")
    index = build_index("postgres", f"{pg}?table=notes", None, attach=True, id_column="slug", vector_column="v",
                        first_stages=["hnsw@32"])
    assert index.stats()["dtype"] == "float16" and len(mrl_indexes_of(pg, "notes")) == 2  # + the id lookup
    found = index.search(xb[:4], 1, "hnsw@32:100,64:1")
    assert index.keys(found.ids) == [[s] for s in slugs[:4]] and index.verify() == []
    assert index.delete([slugs[3]]).count == 99


def test_attach_refuses_unsuitable_tables_and_leaves_them_alone(pg: str, items: np.ndarray,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    fill(pg, "loose", "k text, e vector, f vector(64), n numeric", [("a", "[1,2]", literal(items[0]), 1)],
         "VALUES (%s, %s::vector, %s::vector, %s)")
    for id_column, vector_column, message in (
            ("k", "nope", "has no column 'nope'"),
            ("k", "e", "column 'e' is vector; attach needs vector\\(D\\) or halfvec\\(D\\)"),
            ("n", "f", "id column 'n' is numeric"),
            ("k", "f", "id column 'k' has no unique index")):
        with pytest.raises(MrlError, match=message):
            build_index("postgres", f"{pg}?table=loose", None, attach=True, id_column=id_column,
                        vector_column=vector_column)
    with pytest.raises(MrlError, match="table 'absent' does not exist"):
        build_index("postgres", f"{pg}?table=absent", None, attach=True, id_column="k", vector_column="f")
    sql(pg, "CREATE UNIQUE INDEX loose_k ON loose (k)")
    with pytest.raises(MrlError, match="give no vectors"):
        build_index("postgres", f"{pg}?table=loose", items[:1], attach=True, id_column="k", vector_column="f")
    with pytest.raises(MrlError, match="does not take dtype"):
        build_index("postgres", f"{pg}?table=loose", None, attach=True, id_column="k", vector_column="f",
                    dtype="float16")
    real = engine.index_ddl

    def second_fails(table: str, spec: Any, *args: Any, **kwargs: Any) -> Any:
        from psycopg import sql as psql

        return psql.SQL("CREATE INDEX CONCURRENTLY broken ON nowhere (x)") if spec.dim == 32 else \
            real(table, spec, *args, **kwargs)

    monkeypatch.setattr(engine, "index_ddl", second_fails)
    with pytest.raises(MrlError, match="attaching failed"):
        build_index("postgres", f"{pg}?table=loose", None, attach=True, id_column="k", vector_column="f",
                    first_stages=["hnsw@16", "hnsw@32"])
    assert mrl_indexes_of(pg, "loose") == [] and sql(pg, "SELECT count(*) FROM mrl_indexes WHERE name = 'loose'") == \
        [(0,)]
    assert "--attach (--id-column" in cli("index", "build", "--backend", "postgres", "--url", pg, "--table", "t",
                                          "--id-column", "k", "--vector-column", "f", "--vectors", "x.npy", code=2)
