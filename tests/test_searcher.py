"""The searcher seam: MrlIndex implements Searcher, and a backend that is not an MrlIndex runs
through the HTTP service and ``tune`` unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrl.errors import MrlError
from mrl.index import Cascade, FirstStageSpec, MrlIndex, Searcher, SearchResult, open_index, parse_cascade
from mrl.index.tuning.tune import tune
from mrl.prefix import truncate, unit_rows
from mrl.serve import ServeSettings, create_app


class NumpySearcher:
    """A minimal backend: exact scans in numpy (every cascade's first stage is exact on its prefix)."""

    adaptor = None
    model = None

    def __init__(self, xb: np.ndarray, cascade: str = "exact@8:50,16:10") -> None:
        self.xb = unit_rows(xb)
        self.dim = xb.shape[1]
        self._cascade = parse_cascade(cascade, self.dim)
        self.generation = 1

    count = property(lambda self: len(self.xb))
    default_cascade = property(lambda self: self._cascade)
    first_stages = property(lambda self: [FirstStageSpec("exact", 8)])

    def plan(self, cascade=None, k=10) -> Cascade:
        plan = self._cascade if cascade is None else (
            cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim))
        return Cascade(plan.kind, tuple((d, min(n, self.count)) for d, n in plan.stages), plan.width)

    def prepare_queries(self, xq, adapted=False):
        return np.atleast_2d(np.asarray(xq, np.float32))

    def _top(self, xq, d, n, rows=None):
        q = truncate(xq, d)
        s = q @ unit_rows(self.xb[:, :d]).T
        if rows is not None:
            mask = np.full(s.shape, -np.inf, np.float32)
            np.put_along_axis(mask, rows, 0.0, axis=1)
            s = s + mask
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(s, order, 1).astype(np.float32), order.astype(np.int64)

    def search(self, xq, k=10, cascade=None, *, adapted=False, work=None) -> SearchResult:
        xq = self.prepare_queries(xq)
        plan = self.plan(cascade, k)
        rows = None
        for d, n in plan.stages:
            scores, rows = self._top(xq, d, n, rows)
        return SearchResult(scores[:, :k], rows[:, :k])

    def exact_search(self, xq, k=10, dim=None, *, adapted=False) -> SearchResult:
        return SearchResult(*self._top(self.prepare_queries(xq), dim or self.dim, k))

    def keys(self, ids):
        return [[f"v{i}" if i >= 0 else None for i in row] for row in np.atleast_2d(ids).tolist()]

    def sample(self, n, seed=0):
        rows = np.sort(np.random.default_rng(seed).choice(self.count, size=min(n, self.count), replace=False))
        return self.xb[rows]

    def max_width(self, spec):
        return 0

    def stats(self):
        return {"count": self.count, "dim": self.dim, "model": None, "id_kind": "str", "generation": self.generation,
                "default_cascade": str(self._cascade), "segments": 1, "deleted_rows": 0,
                "first_stages": {"exact@8": {"bytes_per_vector": 32.0}}}

    def set_default_cascade(self, cascade, tuning=None, gate=None):
        self._cascade = parse_cascade(str(cascade), self.dim)
        self.generation += 1
        return self

    def refresh(self):
        return self

    def check_adaptor(self, adaptor):
        if adaptor is not None:
            raise MrlError("no adaptor here")


@pytest.fixture()
def vectors():
    return np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)


def test_mrl_index_is_a_searcher_and_results_unpack_like_the_tuple(vectors, tmp_path):
    index = MrlIndex.build(tmp_path / "i", vectors, first_stages=["int8@8"])
    assert isinstance(index, Searcher) and isinstance(open_index(tmp_path / "i"), Searcher)
    assert isinstance(NumpySearcher(vectors), Searcher)
    result = open_index(f"file://{tmp_path / 'i'}").search(vectors[:3], 5)
    scores, ids = result
    assert isinstance(result, SearchResult) and result.ids is ids and result.scores is scores
    assert ids.shape == (3, 5) and ids.dtype == np.int64 and scores.dtype == np.float32
    with pytest.raises(MrlError, match="index backend 'milvus' is not supported"):
        open_index("milvus://localhost:19530/docs")


def test_the_service_serves_any_searcher(vectors, tmp_path):
    backend = NumpySearcher(vectors)
    client = TestClient(create_app(ServeSettings(tmp_path / "unused"), searcher=backend))
    r = client.post("/search", json={"vector": vectors[7].tolist(), "k": 3})
    assert r.status_code == 200, r.text
    assert r.json()["results"][0][0]["id"] == "v7" and r.json()["cascade"] == "exact@8:50,16:10"
    huge = client.post("/search", json={"vector": vectors[7].tolist(), "k": 3, "cascade": "8:1000000,16:3"})
    exact = backend.keys(backend.exact_search(vectors[7:8], 3).ids)[0]
    assert huge.status_code == 200 and [h["id"] for h in huge.json()["results"][0]] == exact  # clamped by plan()
    assert client.get("/healthz").json() == {"status": "ok", "count": 200, "generation": 1, "problem": None}
    assert client.get("/stats").json()["index"]["count"] == 200


def test_tune_runs_on_any_searcher(vectors):
    backend = NumpySearcher(vectors)
    best, rows = tune(backend, k=5, target_recall=0.95, n_queries=30, n_single=3)
    assert best is not None and rows and all(r.cascade.startswith("exact@8:") for r in rows)
    assert backend.set_default_cascade(best.cascade).default_cascade == parse_cascade(best.cascade)
