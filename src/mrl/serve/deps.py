"""FastAPI dependencies: the routes get the searcher, the text encoder, the settings and the state
through these (``app.dependency_overrides[current_searcher]`` swaps a searcher in)."""

from __future__ import annotations

import secrets
from typing import Annotated

from fastapi import Depends, Header, Request

from mrl.index.base import Searcher
from mrl.serve.errors import ApiError
from mrl.serve.settings import ServeSettings
from mrl.serve.state import Liveness, ServiceState, TextEncoder


def current_state(request: Request) -> ServiceState:
    """The state ``create_app`` put on the app."""
    state: ServiceState = request.app.state.mrl
    return state


StateDep = Annotated[ServiceState, Depends(current_state)]


def current_settings(state: StateDep) -> ServeSettings:
    return state.settings


SettingsDep = Annotated[ServeSettings, Depends(current_settings)]


def current_searcher(state: StateDep) -> Searcher:
    """The newest snapshot of the index that opens (refreshed once per request)."""
    return state.index


SearcherDep = Annotated[Searcher, Depends(current_searcher)]


def current_encoder(state: StateDep) -> TextEncoder:
    return state.encoder


EncoderDep = Annotated[TextEncoder, Depends(current_encoder)]


def liveness(request: Request, settings: SettingsDep) -> Liveness:
    """The request's time limit and connection, checked before its expensive steps."""
    return Liveness(request, settings.max_seconds)


AliveDep = Annotated[Liveness, Depends(liveness)]


def require_key(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
    x_api_key: Annotated[str | None, Header()] = None,
) -> None:
    """401 unless the settings have no key or the request carries it (``Authorization: Bearer`` or ``X-API-Key``)."""
    if settings.api_key is None:
        return
    given = x_api_key or (authorization[7:] if authorization and authorization.startswith("Bearer ") else None)
    if given is None or not secrets.compare_digest(given.encode(), settings.api_key.encode()):
        raise ApiError(401, "missing or wrong API key (send 'Authorization: Bearer KEY')", "authentication_error")
