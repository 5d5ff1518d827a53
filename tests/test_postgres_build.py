"""How a Postgres build lays out its table and sizes its index builds (on the session's real server)."""

from __future__ import annotations

from typing import Any

import numpy as np
import psycopg
import pytest
from test_contract import matryoshka_like

from mrl.index import build_index
from mrl.index.first_stages.kinds import parse_first_stage
from mrl.index.postgres import engine, store


@pytest.fixture(scope="module")
def pg(postgres_server: Any) -> str:
    return str(postgres_server.url)


def storage(pg: str, table: str) -> str:
    with psycopg.connect(pg, autocommit=True) as conn:
        return str(conn.execute("SELECT attstorage FROM pg_attribute WHERE attrelid = to_regclass(%s) "
                                "AND attname = 'embedding'", (table,)).fetchone()[0])


def test_a_vector_that_fits_a_page_stays_in_its_row(pg: str) -> None:
    xb = matryoshka_like(50, 64)
    build_index("postgres", f"{pg}?table=inline", xb, None, first_stages=["hnsw@16"], overwrite=True)
    assert storage(pg, "inline") == "p"  # PLAIN: never moved out of line
    long = matryoshka_like(20, 1600)  # 6,400 bytes: pgvector's own storage (TOAST) keeps it
    build_index("postgres", f"{pg}?table=outline", long, None, first_stages=["hnsw@16"], overwrite=True)
    assert storage(pg, "outline") == "e"
    half = build_index("postgres", f"{pg}?table=outline_half", long, None, first_stages=["hnsw@16"],
                       overwrite=True, dtype="float16")  # 3,200 bytes as halfvec: inline again
    assert storage(pg, "outline_half") == "p"
    np.testing.assert_array_equal(half.exact_search(long[:3], 1).ids[:, 0], [0, 1, 2])


def test_build_memory_grows_with_the_largest_graph() -> None:
    def need(rows: int, *stages: str, dim: int = 768, vtype: str = "vector") -> int:
        return engine.build_memory(rows, [parse_first_stage(s, dim) for s in stages], dim, vtype, 16)

    full = need(1_000_000, "hnsw@64", "hnsw@768")
    assert 3.5e9 < full < 5e9  # 3 kB of vector and the neighbours per row
    assert need(1_000_000, "hnsw@64") < full / 3
    assert need(1_000_000, "hnsw@768", vtype="halfvec") < full
    assert need(1_000_000, "binary@768") < need(1_000_000, "hnsw@64")
    assert need(100, "hnsw@768") == 64 << 20  # never below 64 MB
    assert need(10_000_000, "hnsw@768") == engine.BUILD_MEMORY_MAX
    assert need(1_000_000, "exact@768") == 64 << 20  # nothing to build


def test_build_memory_is_raised_for_the_transaction_and_never_lowered(pg: str) -> None:
    with psycopg.connect(pg, autocommit=True) as conn:
        before = conn.execute("SHOW maintenance_work_mem").fetchone()[0]
        with conn.transaction():
            store.raise_build_memory(conn, 1 << 30, local=True)
            assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] == "1GB"
            store.raise_build_memory(conn, 1 << 20, local=True)  # smaller than what is set: left alone
            assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] == "1GB"
        assert conn.execute("SHOW maintenance_work_mem").fetchone()[0] == before
