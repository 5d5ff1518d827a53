"""The service's routes: ``POST /search``, ``POST /v1/embeddings`` (OpenAI-compatible, with
``dimensions``; through the index's adaptor when it has one), ``GET /healthz`` (open) and ``GET /stats``."""

from __future__ import annotations

import base64
import time
from typing import Any, cast

import numpy as np
from fastapi import APIRouter, Depends

from mrl.index.cascade import Cascade
from mrl.index.filters import parse_filter
from mrl.index.work import Work
from mrl.prefix import truncate
from mrl.serve.deps import AliveDep, EncoderDep, SearcherDep, SettingsDep, StateDep, require_key
from mrl.serve.errors import ApiError
from mrl.serve.schemas import (
    Embedding,
    EmbeddingRequest,
    EmbeddingResponse,
    Hit,
    SearchRequest,
    SearchResponse,
    SearchWork,
    Usage,
)
from mrl.serve.settings import ServeSettings
from mrl.serve.state import Liveness

router = APIRouter()
_KEYED = [Depends(require_key)]  # every route but /healthz


@router.get("/healthz")
def healthz(index: SearcherDep, state: StateDep) -> dict[str, Any]:
    snapshot = state.snapshot()  # "degraded": the newest manifest is unreadable, the last good one serves
    return {"status": "degraded" if snapshot["stale"] else "ok", "count": index.count,
            "generation": snapshot["generation"], "problem": snapshot["problem"]}


@router.get("/stats", dependencies=_KEYED)
def stats(index: SearcherDep, state: StateDep, settings: SettingsDep) -> dict[str, Any]:
    state.count("stats")
    return {"index": index.stats(), "snapshot": state.snapshot(), "model": state.encoder.name,
            "uptime_s": round(time.time() - state.started, 1), "requests": dict(state.requests),
            "limits": {"max_body_bytes": settings.max_body_bytes, "max_batch": settings.max_batch,
                       "max_k": settings.max_k, "max_candidates": settings.max_candidates,
                       "max_work": settings.max_work, "max_seconds": settings.max_seconds}}


@router.post("/search", dependencies=_KEYED)
def search(req: SearchRequest, index: SearcherDep, encoder: EncoderDep, state: StateDep,
           settings: SettingsDep, alive: AliveDep) -> SearchResponse:
    state.count("search")
    t0 = time.perf_counter()
    if (req.query is None) == (req.vector is None):
        raise ApiError(422, "give exactly one of 'query' (text) or 'vector'")
    if req.k > settings.max_k:
        raise ApiError(422, f"k={req.k} exceeds this service's limit of {settings.max_k}")
    if req.query is not None and req.cascade is not None:  # a bad cascade is refused before any encoding
        index.plan(req.cascade, req.k)
    where = parse_filter(req.filter)  # a malformed filter too
    xq = _queries(req, encoder, settings.max_batch, alive)  # (nq, d)
    plan = index.plan(req.cascade, req.k)  # shortlists clamped to the index
    _check_candidates(len(xq), plan.first[1], settings)
    _check_work(len(xq), plan, settings)
    alive.check("searching")
    work = Work() if req.stats else None
    # a searcher of the user's own may predate work accounting: it is only asked when wanted
    options: dict[str, Any] = {"work": work} if work is not None else {}
    if where is not None:
        options["filter"] = where
    scores, ids = index.search(xq, req.k, plan, **options)
    keys = index.keys(ids)
    results = [[Hit(id=key, score=float(s)) for key, s in zip(krow, srow) if key is not None]
               for krow, srow in zip(keys, scores)]
    return SearchResponse(results=results, cascade=req.cascade or str(index.default_cascade),
                          took_ms=round((time.perf_counter() - t0) * 1e3, 3),
                          work=SearchWork.model_validate(work.to_dict()) if work is not None else None)


@router.post("/v1/embeddings", dependencies=_KEYED)
def embeddings(req: EmbeddingRequest, index: SearcherDep, encoder: EncoderDep, state: StateDep,
               settings: SettingsDep, alive: AliveDep) -> EmbeddingResponse:
    state.count("embeddings")
    texts = [req.input] if isinstance(req.input, str) else req.input
    _check_batch(len(texts), settings.max_batch)
    encoder.model()  # a 400 when the service has no model, before anything else
    adaptor = index.adaptor  # with one, dimensions=64 means the adaptor's 64-prefix
    full = adaptor.output_dim if adaptor is not None else encoder.dim
    dim = req.dimensions or full
    if dim > full:
        raise ApiError(400, f"dimensions={dim} exceeds the model's dimension {full}")
    x = encoder.encode(texts, alive, req.input_type)  # (n, D)
    if adaptor is not None:
        x = adaptor.transform(x)
    x = truncate(x, dim)  # (n, dim): cut, renormalise
    data = [Embedding(index=i, embedding=_encode_vector(v, req.encoding_format)) for i, v in enumerate(x)]
    tokens = encoder.count_tokens(texts)
    return EmbeddingResponse(data=data, model=req.model or encoder.name or "mrl",
                             usage=Usage(prompt_tokens=tokens, total_tokens=tokens))


def _queries(req: SearchRequest, encoder: EncoderDep, max_batch: int, alive: Liveness) -> np.ndarray:
    """The request's query vectors ``(nq, d)``: its texts encoded, or its vectors (float64: the index
    renormalises them before any narrowing cast, so values beyond float32's range keep their direction)."""
    if req.query is not None:
        texts = [req.query] if isinstance(req.query, str) else req.query
        _check_batch(len(texts), max_batch)
        return encoder.encode(texts, alive)
    vec = req.vector or []
    rows = [cast(list[float], vec)] if vec and not isinstance(vec[0], list) else cast(list[list[float]], vec)
    _check_batch(len(rows), max_batch)
    if len({len(r) for r in rows}) > 1:
        raise ApiError(400, f"vectors have different lengths ({sorted({len(r) for r in rows})})")
    return np.asarray(rows, dtype=np.float64)


def _check_batch(n: int, limit: int) -> None:
    if n == 0:
        raise ApiError(422, "the request holds no input")
    if n > limit:
        raise ApiError(413, f"{n} inputs exceed this service's limit of {limit} per request", "request_too_large")


def _check_candidates(nq: int, shortlist: int, settings: ServeSettings) -> None:
    if nq * shortlist > settings.max_candidates:
        raise ApiError(422, f"{nq} queries x a first-stage shortlist of {shortlist} = {nq * shortlist} candidates "
                            f"exceed this service's limit of {settings.max_candidates} (max_candidates); send fewer "
                            "queries or a shorter shortlist")


def _check_work(nq: int, plan: Cascade, settings: ServeSettings) -> None:
    """The whole work of a request (every stage, not only the first) within ``max_work``."""
    if nq * plan.work > settings.max_work:
        raise ApiError(422, f"{nq} queries x cascade {plan} ({plan.work} candidate-dimensions per query: each "
                            f"stage's candidates x its prefix) = {nq * plan.work} exceed this service's limit of "
                            f"{settings.max_work} (max_work); send fewer queries or shorter shortlists")


def _encode_vector(v: np.ndarray, fmt: str) -> list[float] | str:
    if fmt == "base64":  # what the openai client asks for by default: little-endian float32
        return base64.b64encode(np.asarray(v, dtype="<f4").tobytes()).decode()
    return [float(x) for x in v]
