"""ASGI middleware of the service."""

from __future__ import annotations

from typing import Any

from fastapi import HTTPException

from mrl.serve.errors import error_response


class BodyLimit:
    """413 once a request body exceeds ``limit`` bytes (declared or streamed)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = error_response(413, f"request body exceeds {self.limit} bytes", "request_too_large")
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
