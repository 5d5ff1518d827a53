"""``mrl serve``: the HTTP service over an index (uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from mrl.cli.common import console, handle_errors
from mrl.errors import MrlError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")


@handle_errors
def serve_command(
    index_path: Annotated[str, typer.Argument(
        help="Index folder, qdrant-edge://PATH or qdrant://HOST:PORT/COLLECTION.")],
    model: Annotated[str | None, typer.Option("--model", "-m", help="Model for text (default: the index's).",
                                              envvar="MRL_MODEL")] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
    api_key: Annotated[str | None, typer.Option(help="Require 'Authorization: Bearer KEY'.",
                                                envvar="MRL_API_KEY")] = None,
    max_body_bytes: Annotated[int, typer.Option(help="Largest request body accepted.", min=1)] = 4 << 20,
    max_batch: Annotated[int, typer.Option(help="Most texts or vectors per request.", min=1)] = 256,
    max_k: Annotated[int, typer.Option(help="Largest k accepted.", min=1)] = 1000,
    log_level: Annotated[str, typer.Option(
        help="uvicorn's log level: critical, error, warning, info (one line per request) or debug.")] = "info",
    max_candidates: Annotated[int, typer.Option(
        help="Most first-stage candidates per request (queries x shortlist, clamped to the index).", min=1)] = 1 << 20,
) -> None:
    """Serve POST /search, POST /v1/embeddings (OpenAI-compatible), GET /healthz and GET /stats."""
    import uvicorn

    if log_level not in LOG_LEVELS:
        raise MrlError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")

    from mrl.serve import ServeSettings, create_app

    settings = ServeSettings(index_path, model, api_key, max_body_bytes, max_batch, max_k, max_candidates, preload=True)
    app = create_app(settings)
    console.print(f"serving {index_path} on http://{host}:{port}" + (" (API key required)" if api_key else ""))
    uvicorn.run(app, host=host, port=port, log_level=log_level)
