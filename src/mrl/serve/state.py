"""What the routes share: the searcher (refreshed when another process commits), the text model
(loaded once, used by one request at a time) and the request counts."""

from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np

from mrl.encoders.model import embedding_dim
from mrl.errors import MrlError
from mrl.index.backends import open_index
from mrl.index.base import Searcher
from mrl.serve.errors import ApiError
from mrl.serve.settings import ServeSettings


class Liveness:
    """Whether a request is still wanted: its client connected and its time limit not passed.

    Checked by the worker thread right before the expensive steps (encoding, searching), after any
    wait for the encoder: abandoned requests queued behind a slow one cost nothing.
    """

    def __init__(self, request: Any, max_seconds: float) -> None:
        self.request, self.max_seconds = request, max_seconds
        self.deadline = time.monotonic() + max_seconds

    def check(self, before: str) -> None:
        if time.monotonic() > self.deadline:
            raise ApiError(503, f"the request waited longer than this service's limit of {self.max_seconds:g} s "
                                f"(max_seconds) before {before}; nothing was done", "timeout")
        if self.request is not None and _disconnected(self.request):
            raise ApiError(499, "the client closed the connection; nothing was done", "client_closed")


def _disconnected(request: Any) -> bool:
    """``request.is_disconnected()`` from a worker thread (routes run in anyio's threads)."""
    import anyio.from_thread

    try:
        return bool(anyio.from_thread.run(request.is_disconnected))
    except RuntimeError:  # not in a worker thread (a direct call in tests): cannot tell, assume connected
        return False


class TextEncoder:
    """The model that turns text into vectors, loaded on first use (or by :meth:`model`)."""

    def __init__(self, name: str | None) -> None:
        self.name = name  # None: the service takes vectors only
        self._model: Any = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()  # one encode at a time (torch already uses every core)

    def model(self) -> Any:
        """The loaded model; a 400 naming the cause when this service has none."""
        if self._model is None:
            if self.name is None:
                raise ApiError(400, "this service has no model (the index was built from vectors and no --model "
                                    "was given): send vectors instead of text")
            from mrl.encoders.model import load_model

            with self._load_lock:
                if self._model is None:
                    self._model = load_model(self.name)
        return self._model

    @property
    def loaded(self) -> Any:
        """The model once loaded, else None."""
        return self._model

    @property
    def dim(self) -> int:
        return embedding_dim(self.model())

    def encode(self, texts: list[str], alive: Liveness | None = None, kind: str = "query") -> np.ndarray:
        """Unit vectors at the model's full dimension, ``(len(texts), dim)``, with ``kind``'s prompt
        (``query`` or ``document``: e5's ``query: `` / ``passage: ``); ``alive`` is checked once the
        encoder is this request's (a request abandoned while it waited is not encoded)."""
        from mrl.encoders.model import encode

        model = self.model()
        with self._lock:  # a tokenizer is not thread-safe: concurrent requests corrupt its padding
            if alive is not None:
                alive.check("encoding")
            return encode(model, texts, kind="document" if kind == "document" else "query")

    def count_tokens(self, texts: list[str]) -> int:
        model = self.model()
        with self._lock:
            return int(sum(len(ids) for ids in model.tokenizer(texts, truncation=True)["input_ids"]))


class ServiceState:
    """The served snapshot of the index, the text model, the settings and the request counts.

    When a newer snapshot cannot be opened (damaged, edited, files missing), the service keeps
    serving the last one that opened and reports why in ``/healthz`` and ``/stats``.
    """

    def __init__(self, settings: ServeSettings, searcher: Searcher | None = None) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._index: Searcher = searcher if searcher is not None else open_index(settings.index)
        self.problem: str | None = None  # why the newest snapshot is not being served
        self.encoder = TextEncoder(settings.model or self._index.model)
        self.started = time.time()
        self.requests: dict[str, int] = {}
        self.write_lock = threading.Lock()  # one write at a time from this service

    @property
    def index(self) -> Searcher:
        """The newest snapshot that opens and fits the text model (the last good one, with :attr:`problem`
        set, otherwise). An index rebuilt with another model reloads the encoder (unless the service was
        given a model of its own); with another dimension than that model's, the last good one stays."""
        with self._lock:
            try:
                fresh = self._index.refresh()
            except (MrlError, OSError) as e:
                self.problem = f"serving generation {self._index.generation}: {e}"
                return self._index
            self.problem = self._adopt(fresh) if fresh is not self._index else None
        return self._index

    def _adopt(self, fresh: Searcher) -> str | None:
        """Serve ``fresh`` if its vectors fit the text model; else keep the old snapshot and say why."""
        if self.settings.model is None and fresh.model != self.encoder.name:
            self.encoder = TextEncoder(fresh.model)  # the index's own model: loaded on first use
        elif fresh.dim != self._index.dim and self.encoder.name is not None:
            return (f"serving generation {self._index.generation}: generation {fresh.generation} has dimension "
                    f"{fresh.dim}, but this service encodes text with {self.encoder.name} (dimension "
                    f"{self._index.dim}); restart it with a model of dimension {fresh.dim}")
        self._index = fresh
        return None

    @property
    def _model(self) -> Any:
        """The loaded text model, None before the first use (what ``preload`` is seen by)."""
        return self.encoder.loaded

    def snapshot(self) -> dict[str, Any]:
        index = self.index
        return {"generation": index.generation, "stale": self.problem is not None, "problem": self.problem}

    def warm(self) -> None:
        """Read every first-stage structure (a search through each) and load the model (when there is one) now."""
        index = self._index
        probe = index.sample(1)
        for spec in index.first_stages:
            index.search(probe, 1, f"{spec}:1", adapted=True)
        if self.encoder.name is not None:
            self.encoder.encode(["warm-up"])

    def committed(self, snapshot: Searcher) -> None:
        """Serve ``snapshot`` from now on: a write's own result, so a search after its response sees it."""
        with self._lock:
            self._index, self.problem = snapshot, None

    def count(self, route: str) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1
