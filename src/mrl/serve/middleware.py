"""ASGI middleware of the service: the body limit and a read timeout."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import HTTPException

from mrl.serve.errors import error_response


class BodyLimit:
    """413 once a request body exceeds ``limit`` bytes (declared or streamed); 408 when it stops arriving."""

    def __init__(self, app: Any, limit: int, read_timeout_s: float = 30.0) -> None:
        self.app, self.limit, self.read_timeout_s = app, limit, read_timeout_s

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        too_big = error_response(413, f"request body exceeds {self.limit} bytes", "request_too_large")
        if declared is not None and declared.isdigit() and int(declared) > self.limit:
            return await too_big(scope, receive, send)
        seen, complete = 0, False

        async def limited() -> dict:
            nonlocal seen, complete
            if complete:  # later receives wait for a disconnect, as long as the request runs: no limit
                return await receive()
            try:  # a client that declares more than it sends would hold the connection forever
                with anyio.fail_after(self.read_timeout_s):
                    message = await receive()
            except TimeoutError:
                raise HTTPException(408, f"the request body stopped arriving for {self.read_timeout_s:g} s") from None
            complete = message.get("type") != "http.request" or not message.get("more_body", False)
            seen += len(message.get("body", b""))
            if seen > self.limit:  # an HTTPException passes FastAPI's body parsing unchanged
                raise HTTPException(413, f"request body exceeds {self.limit} bytes")
            return message

        await self.app(scope, limited, send)
