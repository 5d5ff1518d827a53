"""``create_app(settings, searcher=None)``: the FastAPI application over one searcher (an index).

Routes: ``POST /search``, ``POST /v1/embeddings`` (OpenAI-compatible, with ``dimensions``; through
the index's adaptor when it has one),
``GET /healthz`` (open) and ``GET /stats``. Errors are JSON ``{"error": {"message", "type"}}``,
the shape the OpenAI client reads.
"""

from __future__ import annotations

import base64
import secrets
import threading
import time
from typing import Annotated, Any

import numpy as np
from fastapi import Depends, FastAPI, Header, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrl.encoders.model import embedding_dim
from mrl.errors import MrlError
from mrl.index.backends import open_index
from mrl.index.base import Searcher
from mrl.index.work import Work
from mrl.prefix import truncate
from mrl.serve.schemas import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    Hit,
    SearchRequest,
    SearchResponse,
    Usage,
)
from mrl.serve.settings import ServeSettings


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def _error(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


class _BodyLimit:
    """ASGI middleware: 413 once a request body exceeds ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = _error(413, f"request body exceeds {self.limit} bytes", "request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        seen = 0

        async def limited() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.limit:  # an HTTPException passes FastAPI's body parsing unchanged
                raise HTTPException(413, f"request body exceeds {self.limit} bytes")
            return message

        await self.app(scope, limited, send)


class _State:
    """The searcher (refreshed when another process commits) and the lazily loaded model.

    When a newer snapshot cannot be opened (damaged, edited, files missing), the service keeps
    serving the last one that opened and reports why in ``/healthz`` and ``/stats``.
    """

    def __init__(self, settings: ServeSettings, searcher: Searcher | None = None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._model_lock = threading.Lock()  # one encode at a time (torch already uses every core)
        self._index: Searcher = searcher if searcher is not None else open_index(settings.index)
        self.problem: str | None = None  # why the newest snapshot is not being served
        self._model: Any = None
        self.started = time.time()
        self.requests: dict[str, int] = {}

    @property
    def index(self) -> Searcher:
        with self._lock:
            try:
                self._index, self.problem = self._index.refresh(), None
            except (MrlError, OSError) as e:
                self.problem = f"serving generation {self._index.generation}: {e}"
        return self._index

    def snapshot(self) -> dict[str, Any]:
        index = self.index
        return {"generation": index.generation, "stale": self.problem is not None, "problem": self.problem}

    @property
    def model_name(self) -> str | None:
        return self.settings.model or self._index.model

    def model(self) -> Any:
        if self._model is None:
            name = self.model_name
            if name is None:
                raise ApiError(400, "this service has no model (the index was built from vectors and no --model "
                                    "was given): send vectors instead of text")
            from mrl.encoders.model import load_model

            with self._lock:
                if self._model is None:
                    self._model = load_model(name)
        return self._model

    def warm(self) -> None:
        """Read every first-stage structure (a search through each) and load the model (when there is one) now."""
        index = self._index
        probe = index.sample(1)
        for spec in index.first_stages:
            index.search(probe, 1, f"{spec}:1", adapted=True)
        if self.model_name is not None:
            self.encode(["warm-up"])

    def encode(self, texts: list[str]) -> np.ndarray:
        from mrl.encoders.model import encode

        model = self.model()
        with self._model_lock:  # a tokenizer is not thread-safe: concurrent requests corrupt its padding
            return encode(model, texts)

    def count_tokens(self, texts: list[str]) -> int:
        model = self.model()
        with self._model_lock:
            return int(sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"]))

    def count(self, route: str) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1


def create_app(settings: ServeSettings, searcher: Searcher | None = None) -> FastAPI:
    """Build the app over ``searcher`` (default: ``open_index(settings.index)``, opened now, so a
    bad path fails here, not on the first request). Routes reach it through a FastAPI dependency
    (``app.dependency_overrides[current_searcher]`` swaps it in tests)."""
    state = _State(settings, searcher)
    if settings.preload:
        state.warm()
    app = FastAPI(title="mrl", summary="Matryoshka funnel search and embeddings")
    app.state.mrl = state

    @app.exception_handler(ApiError)
    async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.kind)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), "request_too_large" if exc.status_code == 413 else "error")

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
        # FastAPI's default is {"detail": [...]}; the README and the OpenAI client read {"error": {...}}
        parts = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return _error(422, "; ".join(parts) or "invalid request", "invalid_request_error")

    @app.exception_handler(MrlError)
    async def _mrl_error(_: Request, exc: MrlError) -> JSONResponse:
        return _error(400, str(exc), "invalid_request_error")

    def require_key(
        authorization: Annotated[str | None, Header()] = None,
        x_api_key: Annotated[str | None, Header()] = None,
    ) -> None:
        if settings.api_key is None:
            return
        given = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
        if given is None or not secrets.compare_digest(given.encode(), settings.api_key.encode()):
            raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error")

    Auth = Depends(require_key)

    @app.get("/healthz")
    def healthz(index: SearcherDep) -> dict[str, Any]:
        snapshot = state.snapshot()  # "degraded": the newest manifest is unreadable, the last good one serves
        return {"status": "degraded" if snapshot["stale"] else "ok", "count": index.count,
                "generation": snapshot["generation"], "problem": snapshot["problem"]}

    @app.get("/stats", dependencies=[Auth])
    def stats(index: SearcherDep) -> dict[str, Any]:
        state.count("stats")
        return {"index": index.stats(), "snapshot": state.snapshot(), "model": state.model_name,
                "uptime_s": round(time.time() - state.started, 1), "requests": dict(state.requests),
                "limits": {"max_body_bytes": settings.max_body_bytes, "max_batch": settings.max_batch,
                           "max_k": settings.max_k, "max_candidates": settings.max_candidates}}

    @app.post("/search", dependencies=[Auth])
    def search(req: SearchRequest, index: SearcherDep) -> SearchResponse:
        state.count("search")
        t0 = time.perf_counter()
        if (req.query is None) == (req.vector is None):
            raise ApiError(422, "give exactly one of 'query' (text) or 'vector'")
        if req.k > settings.max_k:
            raise ApiError(422, f"k={req.k} exceeds this service's limit of {settings.max_k}")
        if req.query is not None:
            texts = [req.query] if isinstance(req.query, str) else req.query
            _check_batch(len(texts), settings.max_batch)
            xq = state.encode(texts)
        else:
            vec = req.vector or []
            rows = [vec] if vec and not isinstance(vec[0], list) else vec
            _check_batch(len(rows), settings.max_batch)
            if len({len(r) for r in rows}) > 1:
                raise ApiError(400, f"vectors have different lengths ({sorted({len(r) for r in rows})})")
            with np.errstate(over="ignore"):  # beyond float32 becomes inf, which the index names as an error
                xq = np.asarray(rows, dtype=np.float32)
        plan = index.plan(req.cascade, req.k)  # shortlists clamped to the index
        if len(xq) * plan.first[1] > settings.max_candidates:
            raise ApiError(422, f"{len(xq)} queries x a first-stage shortlist of {plan.first[1]} = "
                                f"{len(xq) * plan.first[1]} candidates exceed this service's limit of "
                                f"{settings.max_candidates} (max_candidates); send fewer queries or a shorter "
                                "shortlist")
        work = Work() if req.stats else None
        # a searcher of the user's own may predate work accounting: it is only asked when wanted
        scores, ids = index.search(xq, req.k, plan, work=work) if work is not None else index.search(xq, req.k, plan)
        keys = index.keys(ids)
        results = [[Hit(id=key, score=float(s)) for key, s in zip(krow, srow) if key is not None]
                   for krow, srow in zip(keys, scores)]
        cascade = req.cascade or str(index.default_cascade)
        return SearchResponse(results=results, cascade=cascade, took_ms=round((time.perf_counter() - t0) * 1e3, 3),
                              work=work.to_dict() if work is not None else None)

    @app.post("/v1/embeddings", dependencies=[Auth])
    def embeddings(req: EmbeddingRequest, index: SearcherDep) -> EmbeddingResponse:
        state.count("embeddings")
        texts = [req.input] if isinstance(req.input, str) else req.input
        _check_batch(len(texts), settings.max_batch)
        model = state.model()
        adaptor = index.adaptor  # with one, dimensions=64 means the adaptor's 64-prefix
        full = adaptor.output_dim if adaptor is not None else embedding_dim(model)
        dim = req.dimensions or full
        if dim > full:
            raise ApiError(400, f"dimensions={dim} exceeds the model's dimension {full}")
        x = state.encode(texts)  # (n, D)
        if adaptor is not None:
            x = adaptor.transform(x)
        x = truncate(x, dim)  # (n, dim): cut, renormalise
        data = [Embedding(index=i, embedding=_encode_vector(v, req.encoding_format)) for i, v in enumerate(x)]
        tokens = state.count_tokens(texts)
        return EmbeddingResponse(data=data, model=req.model or state.model_name or "mrl",
                                 usage=Usage(prompt_tokens=tokens, total_tokens=tokens))

    app.add_middleware(_BodyLimit, limit=settings.max_body_bytes)
    return app


def current_searcher(request: Request) -> Searcher:
    """The FastAPI dependency every route gets its searcher from (the newest snapshot that opens)."""
    return request.app.state.mrl.index


SearcherDep = Annotated[Any, Depends(current_searcher)]  # a Searcher (Any: FastAPI would validate a Protocol)


def _check_batch(n: int, limit: int) -> None:
    if n == 0:
        raise ApiError(422, "the request holds no input")
    if n > limit:
        raise ApiError(413, f"{n} inputs exceed this service's limit of {limit} per request", "request_too_large")


def _encode_vector(v: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # what the openai client asks for by default: little-endian float32
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
    return [float(x) for x in v]
