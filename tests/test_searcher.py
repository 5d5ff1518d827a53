"""The searcher seam: MrlIndex implements Searcher, and a backend that is not an MrlIndex runs
through the HTTP service and ``tune`` unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from fakes import NumpyIndex
from fastapi.testclient import TestClient

from mrl.errors import MrlError
from mrl.index import MrlIndex, Searcher, SearchResult, open_index, parse_cascade
from mrl.index.tuning.tune import tune
from mrl.serve import ServeSettings, create_app


def numpy_searcher(xb: np.ndarray) -> NumpyIndex:
    """The numpy fake (``tests/fakes.py``) with string ids ``v0``, ``v1``, ..."""
    return NumpyIndex(xb, [f"v{i}" for i in range(len(xb))], "exact@8:50,16:10")


@pytest.fixture()
def vectors():
    return np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)


def test_mrl_index_is_a_searcher_and_results_unpack_like_the_tuple(vectors, tmp_path):
    index = MrlIndex.build(tmp_path / "i", vectors, first_stages=["int8@8"])
    assert isinstance(index, Searcher) and isinstance(open_index(tmp_path / "i"), Searcher)
    assert isinstance(numpy_searcher(vectors), Searcher)
    result = open_index(f"file://{tmp_path / 'i'}").search(vectors[:3], 5)
    scores, ids = result
    assert isinstance(result, SearchResult) and result.ids is ids and result.scores is scores
    assert ids.shape == (3, 5) and ids.dtype == np.int64 and scores.dtype == np.float32
    with pytest.raises(MrlError, match="index backend 'milvus' is not supported"):
        open_index("milvus://localhost:19530/docs")


def test_the_service_serves_any_searcher(vectors, tmp_path):
    backend = numpy_searcher(vectors)
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
    backend = numpy_searcher(vectors)
    best, rows = tune(backend, k=5, target_recall=0.95, n_queries=30, n_single=3)
    assert best is not None and rows and all(r.cascade.startswith("exact@8:") for r in rows)
    assert backend.set_default_cascade(best.cascade).default_cascade == parse_cascade(best.cascade)
