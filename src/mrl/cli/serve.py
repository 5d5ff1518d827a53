"""``mrl serve``: the HTTP service over an index (uvicorn)."""

from __future__ import annotations

from typing import Annotated

import typer

from mrl.cli.common import ThreadsOpt, console, handle_errors
from mrl.errors import MrlError

LOG_LEVELS = ("critical", "error", "warning", "info", "debug")

# Options left out are read from MRL_* (ServeSettings.from_env), then take ServeSettings' defaults.
IndexArg = Annotated[str | None, typer.Argument(
    help="Index folder, qdrant-edge://PATH, qdrant://HOST:PORT/COLLECTION or postgresql://USER@HOST:PORT/DB?table=NAME "
         "(default: $MRL_INDEX).",
    metavar="INDEX", show_default=False)]
ModelOpt = Annotated[str | None, typer.Option(
    "--model", "-m", help="Model for text (default: $MRL_MODEL, else the index's).", show_default=False)]
ApiKeyOpt = Annotated[str | None, typer.Option(
    help="Require 'Authorization: Bearer KEY' (default: $MRL_API_KEY, else none).", show_default=False)]
MaxBodyOpt = Annotated[int | None, typer.Option(
    help="Largest request body accepted (default: $MRL_MAX_BODY_BYTES, else 4194304).", min=1, show_default=False)]
MaxBatchOpt = Annotated[int | None, typer.Option(
    help="Most texts or vectors per request (default: $MRL_MAX_BATCH, else 256).", min=1, show_default=False)]
MaxKOpt = Annotated[int | None, typer.Option(
    help="Largest k accepted (default: $MRL_MAX_K, else 1000).", min=1, show_default=False)]
MaxCandidatesOpt = Annotated[int | None, typer.Option(
    help="Most first-stage candidates per request (queries x shortlist, clamped to the index; default: "
         "$MRL_MAX_CANDIDATES, else 1048576).", min=1, show_default=False)]
MaxWorkOpt = Annotated[int | None, typer.Option(
    help="Most work per request: queries x the cascade's candidate-dimensions (every stage's candidates x its "
         "prefix; default: $MRL_MAX_WORK, else 67108864).", min=1, show_default=False)]
MaxSecondsOpt = Annotated[int | None, typer.Option(
    help="A request not encoded or searched within this many seconds gets 503; one whose client has gone is "
         "dropped (default: $MRL_MAX_SECONDS, else 60).", min=1, show_default=False)]
RuntimeOpt = Annotated[str | None, typer.Option(
    help="Text encoder: torch, onnx, onnx-int8, openvino (folders written by `mrl export`) or auto, the best the model "
         "folder has (default: $MRL_RUNTIME, else auto). With an ONNX runtime the service imports no torch.",
    show_default=False)]
BatchWaitOpt = Annotated[float, typer.Option(
    help="Milliseconds concurrent texts may wait to be encoded together in one batch.", min=0)]
LogLevelOpt = Annotated[str, typer.Option(
    help="uvicorn's log level: critical, error, warning, info (one line per request) or debug.")]


KEEP_ALIVE_S = 20  # uvicorn's default is 5 s, the same as httpx's pool expiry: the two race


@handle_errors
def serve_command(
    index_path: IndexArg = None,
    model: ModelOpt = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", min=1, max=65535)] = 8000,
    api_key: ApiKeyOpt = None,
    max_body_bytes: MaxBodyOpt = None,
    max_batch: MaxBatchOpt = None,
    max_k: MaxKOpt = None,
    log_level: LogLevelOpt = "info",
    max_candidates: MaxCandidatesOpt = None,
    max_work: MaxWorkOpt = None,
    max_seconds: MaxSecondsOpt = None,
    runtime: RuntimeOpt = None,
    threads: ThreadsOpt = None,
    batch_wait_ms: BatchWaitOpt = 2.0,
) -> None:
    """Serve POST /search, POST /v1/embeddings (OpenAI-compatible), GET /healthz and GET /stats."""
    import uvicorn

    if log_level not in LOG_LEVELS:
        raise MrlError(f"--log-level {log_level!r}: expected one of {', '.join(LOG_LEVELS)}")

    from mrl.serve import ServeSettings, create_app

    settings = ServeSettings.from_env(index=index_path, model=model, api_key=api_key, max_body_bytes=max_body_bytes,
                                      max_batch=max_batch, max_k=max_k, max_candidates=max_candidates,
                                      max_work=max_work, max_seconds=max_seconds, runtime=runtime, threads=threads,
                                      batch_wait_ms=batch_wait_ms, preload=True)
    app = create_app(settings)
    console.print(f"serving {settings.index} on http://{host}:{port}"
                  + (" (API key required)" if settings.api_key else ""))
    # idle keep-alive connections outlive common clients' pools (httpx, requests: 5 s), so a client never
    # reuses a connection the server is closing at that moment (a ReadError, no response)
    uvicorn.run(app, host=host, port=port, log_level=log_level, timeout_keep_alive=KEEP_ALIVE_S)
