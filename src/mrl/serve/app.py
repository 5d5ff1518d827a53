"""``create_app(settings, searcher=None)``: the FastAPI application over one searcher (an index).

The app only assembles: the shared state (:mod:`mrl.serve.state`), the error handlers
(:mod:`mrl.serve.errors`; every error is ``{"error": {"message", "type"}}``, the shape the OpenAI
client reads), the body limit and the routes (:mod:`mrl.serve.routes`, which reach the state through
the dependencies of :mod:`mrl.serve.deps`).
"""

from __future__ import annotations

from fastapi import Depends, FastAPI

from mrl.index.base import Searcher
from mrl.serve import writes
from mrl.serve.deps import require_key
from mrl.serve.errors import add_error_handlers
from mrl.serve.middleware import BodyLimit
from mrl.serve.routes import router
from mrl.serve.settings import ServeSettings
from mrl.serve.state import ServiceState


def create_app(settings: ServeSettings, searcher: Searcher | None = None) -> FastAPI:
    """Build the app over ``searcher`` (default: ``open_index(settings.index)``, opened now, so a
    bad path fails here, not on the first request). Routes reach it through a FastAPI dependency
    (``app.dependency_overrides[mrl.serve.deps.current_searcher]`` swaps it in tests)."""
    state = ServiceState(settings, searcher)
    if settings.preload:
        state.warm()
    keyed = settings.api_key is not None  # with a key only /healthz is open: the schema needs it, no docs pages
    app = FastAPI(title="mrl", summary="Matryoshka funnel search and embeddings",
                  docs_url=None if keyed else "/docs", redoc_url=None if keyed else "/redoc",
                  openapi_url=None if keyed else "/openapi.json")
    app.state.mrl = state
    add_error_handlers(app)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes, read_timeout_s=settings.read_timeout_s)
    app.include_router(router)
    app.include_router(writes.router)
    if keyed:
        app.add_api_route("/openapi.json", lambda: app.openapi(), dependencies=[Depends(require_key)],
                          include_in_schema=False)
    return app
