"""The service's one error shape, ``{"error": {"message", "type"}}`` (what the OpenAI client reads),
and the handlers that turn every failure into it."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from mrl.errors import LimitError, MrlError


class ApiError(Exception):
    """A refused request: HTTP ``status``, a message naming the value at fault, an OpenAI error type."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error") -> None:
        super().__init__(message)
        self.status, self.message, self.kind = status, message, kind


def error_response(status: int, message: str, kind: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": kind}}, status_code=status)


async def _api_error(_: Request, exc: ApiError) -> JSONResponse:
    return error_response(exc.status, exc.message, exc.kind)


async def _http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
    return error_response(exc.status_code, str(exc.detail), "request_too_large" if exc.status_code == 413 else "error")


async def _validation_error(_: Request, exc: RequestValidationError) -> JSONResponse:
    # FastAPI's default is {"detail": [...]}; the README and the OpenAI client read {"error": {...}}
    parts = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
        parts.append(f"{where}: {err.get('msg', 'invalid')}")
    return error_response(422, "; ".join(parts) or "invalid request", "invalid_request_error")


async def _mrl_error(_: Request, exc: MrlError) -> JSONResponse:
    # bad values the index names (dim, cascade): 400; a stated limit passed (stages of a cascade): 422
    return error_response(422 if isinstance(exc, LimitError) else 400, str(exc), "invalid_request_error")


def add_error_handlers(app: FastAPI) -> None:
    """Every error the routes, FastAPI's validation and the index raise, in the one shape."""
    app.exception_handler(ApiError)(_api_error)
    app.exception_handler(StarletteHTTPException)(_http_error)
    app.exception_handler(RequestValidationError)(_validation_error)
    app.exception_handler(MrlError)(_mrl_error)
