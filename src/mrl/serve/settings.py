"""Service settings: a frozen dataclass, filled from arguments and ``MRL_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.errors import MrlError

ENV_PREFIX = "MRL_"
_FROM_ENV = ("index", "model", "api_key", "max_body_bytes", "max_batch", "max_k", "max_candidates", "max_work",
             "max_seconds", "runtime")


@dataclass(frozen=True)
class ServeSettings:
    index: str | Path  # a folder or an index URI (see mrl.index.open_index)
    model: str | None = None  # default: the model the index manifest records
    api_key: str | None = None  # when set, every route but /healthz needs it
    max_body_bytes: int = 4 << 20  # larger requests get 413
    max_batch: int = 256  # texts or vectors per request
    max_k: int = 1000
    max_candidates: int = 1 << 20  # queries x first-stage shortlist (clamped to the index) per request
    max_work: int = 1 << 26  # queries x candidate-dimensions of the cascade (Cascade.work) per request
    max_seconds: int = 60  # a request not encoded or searched by then gets 503; work nobody waits for is dropped
    preload: bool = False  # load the model and first-stage structures at start-up, not on first use
    read_timeout_s: float = 30.0  # a request body that stops arriving (a Content-Length it never sends) gets 408
    runtime: str = "auto"  # the text encoder: torch, onnx, onnx-int8, openvino, or auto (the folder's best)
    threads: int | None = None  # the encoder's threads (None: the runtime's default)
    batch_wait_ms: float = 2.0  # concurrent texts arriving within this wait are encoded as one batch

    def __post_init__(self) -> None:
        if self.api_key is not None and not self.api_key.strip():
            raise MrlError("--api-key is empty: every request would be refused; give a key or leave it out")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> ServeSettings:
        """Settings from ``MRL_INDEX``, ``MRL_MODEL``, ``MRL_API_KEY``, ``MRL_MAX_BODY_BYTES``,
        ``MRL_MAX_BATCH``, ``MRL_MAX_K``, ``MRL_MAX_CANDIDATES``, ``MRL_MAX_WORK`` and
        ``MRL_MAX_SECONDS`` (``environ``, default
        ``os.environ``; empty ones are not set), under ``overrides`` (``None``: not given). What
        neither sets keeps its default. ``mrl serve`` builds its settings so: its options win.

        Raises:
            MrlError: no index, or a limit that is not a positive integer (naming the variable).
        """
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for name in _FROM_ENV:
            var = ENV_PREFIX + name.upper()
            if env.get(var):
                values[name] = _positive_int(var, env[var]) if name.startswith("max_") else env[var]
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("index") is None:
            raise MrlError(f"no index: pass one or set {ENV_PREFIX}INDEX")
        return cls(**values)


def _positive_int(var: str, raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        value = 0
    if value < 1:
        raise MrlError(f"{var}={raw!r}: expected a positive integer")
    return value
