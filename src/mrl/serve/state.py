"""What the routes share: the searcher (refreshed when another process commits), the text model
(loaded once, used by one request at a time) and the request counts."""

from __future__ import annotations

import queue
import threading
import time
from typing import Any

import numpy as np

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


CHUNK = 64  # texts per encoder call: a request abandoned mid-batch stops within one chunk


class TextEncoder:
    """The encoder that turns text into vectors (PyTorch or an exported ONNX graph, see
    :func:`mrl.encoders.runtime.open_encoder`), opened on first use (or by :meth:`model`).

    Concurrent requests are encoded together: each waits in a queue, a worker takes everything that
    arrived within ``batch_wait_s`` of the first (up to ``max_texts``), drops what was abandoned
    meanwhile, and encodes one batch per kind of text.
    """

    def __init__(self, name: str | None, runtime: str = "auto", threads: int | None = None,
                 batch_wait_s: float = 0.002, max_texts: int = 256) -> None:
        self.name = name  # None: the service takes vectors only
        self.runtime, self.threads = runtime, threads
        self.batch_wait_s, self.max_texts = batch_wait_s, max_texts
        self._encoder: Any = None
        self._load_lock = threading.Lock()
        self._lock = threading.Lock()  # one call into the encoder at a time (a tokenizer is not thread-safe)
        self._queue: queue.Queue[_Job] = queue.Queue()
        self._worker: threading.Thread | None = None

    def model(self) -> Any:
        """The opened encoder; a 400 naming the cause when this service has none."""
        if self._encoder is None:
            if self.name is None:
                raise ApiError(400, "this service has no model (the index was built from vectors and no --model "
                                    "was given): send vectors instead of text")
            from mrl.encoders.runtime import open_encoder

            with self._load_lock:
                if self._encoder is None:
                    self._encoder = open_encoder(self.name, self.runtime, self.threads, spin=False)
        return self._encoder

    @property
    def loaded(self) -> Any:
        """The encoder once opened, else None."""
        return self._encoder

    @property
    def dim(self) -> int:
        return int(self.model().dim)

    def encode(self, texts: list[str], alive: Liveness | None = None, kind: str = "query") -> np.ndarray:
        """Unit vectors at the model's full dimension, ``(len(texts), dim)``, with ``kind``'s prompt
        (``query`` or ``document``: e5's ``query: `` / ``passage: ``). A request abandoned (or out of
        time) while it waited is not encoded."""
        self.model()
        if alive is not None:
            alive.check("encoding")
        job = _Job(list(texts), "document" if kind == "document" else "query")
        self._start()
        self._queue.put(job)
        while not job.done.wait(0.05):  # the waiting request's thread watches its own client
            if alive is not None:
                try:
                    alive.check("encoding")
                except ApiError:
                    job.cancelled = True
                    raise
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def count_tokens(self, texts: list[str]) -> int:
        encoder = self.model()
        with self._lock:
            return int(encoder.count_tokens(texts))

    def _start(self) -> None:
        with self._load_lock:
            if self._worker is None:
                self._worker = threading.Thread(target=self._run, name="mrl-encoder", daemon=True)
                self._worker.start()

    def _run(self) -> None:
        while True:
            jobs = self._gather()
            for kind in dict.fromkeys(j.kind for j in jobs):
                self._encode_group([j for j in jobs if j.kind == kind], kind)

    def _gather(self) -> list[_Job]:
        """The first waiting job and whatever arrives within ``batch_wait_s``, not yet abandoned."""
        jobs = [self._queue.get()]
        deadline = time.monotonic() + self.batch_wait_s
        while sum(len(j.texts) for j in jobs) < self.max_texts:
            try:
                jobs.append(self._queue.get(timeout=max(0.0, deadline - time.monotonic())))
            except queue.Empty:
                break
        for job in jobs:
            if job.cancelled:
                job.done.set()
        return [j for j in jobs if not j.cancelled]

    def _encode_group(self, jobs: list[_Job], kind: str) -> None:
        """One batch of every job's texts, encoded ``CHUNK`` texts at a time: a chunk whose requests were
        all abandoned meanwhile is skipped, so a long request nobody waits for stops within a chunk."""
        texts = [t for j in jobs for t in j.texts]
        owner = np.repeat(np.arange(len(jobs)), [len(j.texts) for j in jobs])  # (n,) job of each text
        try:
            encoder = self.model()
            x = np.zeros((len(texts), encoder.dim), np.float32)
            for a in range(0, len(texts), CHUNK):
                if all(jobs[j].cancelled for j in set(owner[a : a + CHUNK].tolist())):
                    continue
                with self._lock:
                    x[a : a + CHUNK] = encoder.encode(texts[a : a + CHUNK], kind=kind)
        except BaseException as e:  # every request of the batch gets the error
            for job in jobs:
                job.error = e
                job.done.set()
            return
        at = 0
        for job in jobs:
            job.result, at = x[at : at + len(job.texts)], at + len(job.texts)
            job.done.set()


class _Job:
    def __init__(self, texts: list[str], kind: str) -> None:
        self.texts, self.kind = texts, kind
        self.done = threading.Event()
        self.cancelled = False
        self.result: np.ndarray | None = None
        self.error: BaseException | None = None


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
        self.encoder = self._encoder(settings.model or self._index.model)
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
            self.encoder = self._encoder(fresh.model)  # the index's own model: loaded on first use
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

    def _encoder(self, name: str | None) -> TextEncoder:
        s = self.settings
        return TextEncoder(name, s.runtime, s.threads, s.batch_wait_ms / 1e3, s.max_batch)

    def committed(self, snapshot: Searcher) -> None:
        """Serve ``snapshot`` from now on: a write's own result, so a search after its response sees it."""
        with self._lock:
            self._index, self.problem = snapshot, None

    def count(self, route: str) -> None:
        self.requests[route] = self.requests.get(route, 0) + 1
