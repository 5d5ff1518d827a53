"""Service settings: a frozen dataclass, filled from arguments or ``MRL_*`` environment variables."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ServeSettings:
    index: str | Path  # a folder or an index URI (see mrl.index.open_index)
    model: str | None = None  # default: the model the index manifest records
    api_key: str | None = None  # when set, every route but /healthz needs it
    max_body_bytes: int = 4 << 20  # larger requests get 413
    max_batch: int = 256  # texts or vectors per request
    max_k: int = 1000
    max_candidates: int = 1 << 20  # queries x first-stage shortlist (clamped to the index) per request
    preload: bool = False  # load the model and first-stage structures at start-up, not on first use

    @classmethod
    def from_env(cls, **overrides: object) -> ServeSettings:
        """``MRL_INDEX``, ``MRL_MODEL``, ``MRL_API_KEY``, ``MRL_MAX_BODY_BYTES``, ``MRL_MAX_BATCH``, ``MRL_MAX_K``,
        ``MRL_MAX_CANDIDATES``."""
        env = os.environ
        values: dict[str, object] = {
            "index": env.get("MRL_INDEX"),
            "model": env.get("MRL_MODEL"),
            "api_key": env.get("MRL_API_KEY"),
        }
        for name in ("max_body_bytes", "max_batch", "max_k", "max_candidates"):
            if f"MRL_{name.upper()}" in env:
                values[name] = int(env[f"MRL_{name.upper()}"])
        values.update({k: v for k, v in overrides.items() if v is not None})
        if values.get("index") is None:
            raise ValueError("no index: pass one or set MRL_INDEX")
        return cls(**{k: v for k, v in values.items() if v is not None})  # type: ignore[arg-type]
