"""HTTP service over an index: search, OpenAI-compatible embeddings, health and stats."""

from __future__ import annotations

from mrl.serve.app import create_app
from mrl.serve.settings import ServeSettings

__all__ = ["ServeSettings", "create_app"]
