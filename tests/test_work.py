"""Work accounting: candidates rescored and bytes read, counted exactly, per query, stage and mean."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.index import MrlIndex
from mrl.index.work import Work
from mrl.serve import ServeSettings, create_app


def _vectors(n=500, d=32, seed=0):
    x = np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    xb = _vectors()
    return MrlIndex.build(tmp_path_factory.mktemp("w") / "i", xb, first_stages=["int8@16", "binary@16", "hnsw@16"],
                          dtype="float16")


def test_a_two_stage_cascade_counts_exactly(index):
    work = Work()
    xq = _vectors(7, seed=1)
    plain = index.search(xq, 5, "int8@16:50,32:5")
    counted = index.search(xq, 5, "int8@16:50,32:5", work=work)
    np.testing.assert_array_equal(plain.ids, counted.ids)  # counting changes nothing
    doc = work.to_dict()
    assert doc["queries"] == 7 and doc["mean_candidates_rescored"] == 50
    first, second = doc["per_stage"]
    assert first == {"stage": "int8@16", "dim": 16, "first": True, "counted": True, "mean_candidates": 500,
                     "mean_bytes": 500 * 16}
    assert second["stage"] == "rescore@32" and second["mean_candidates"] == 50 and second["mean_bytes"] == 50 * 32 * 2
    assert doc["mean_bytes_read"] == 500 * 16 + 50 * 32 * 2
    assert doc["per_query"] == [{"candidates_rescored": 50, "bytes_read": 500 * 16 + 50 * 32 * 2}] * 7


def test_three_stages_binary_exact_and_clamped_shortlists(index):
    work = Work()
    index.search(_vectors(3, seed=2), 4, "binary@16:2000,24:40,32:4", work=work)  # 2000 clamps to 500 vectors
    doc = work.to_dict()
    assert [s["stage"] for s in doc["per_stage"]] == ["binary@16", "rescore@24", "rescore@32"]
    assert [s["mean_candidates"] for s in doc["per_stage"]] == [500, 500, 40]
    assert doc["per_stage"][0]["mean_bytes"] == 500 * 2  # 16 sign bits
    assert doc["mean_candidates_rescored"] == 540
    work = Work()
    index.search(_vectors(2, seed=3), 3, "exact@8:30,32:3", work=work)  # no structure at 8 dims: a scan
    stage = work.to_dict()["per_stage"][0]
    assert stage["stage"] == "exact@8" and stage["mean_bytes"] == 500 * 8 * 2


def test_graph_search_reports_faiss_distance_counts(index):
    work = Work()
    index.search(_vectors(20, seed=4), 5, "hnsw@16:20,32:5", work=work)
    stage = work.to_dict()["per_stage"][0]
    assert 20 <= stage["mean_candidates"] < 500 and stage["mean_bytes"] == stage["mean_candidates"] * 16


def test_deleted_rows_are_not_rescored(tmp_path):
    xb = _vectors(300, seed=5)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16"], dtype="float32")
    index = index.delete(np.arange(0, 295))  # 5 live vectors
    work = Work()
    index.search(_vectors(2, seed=6), 3, "int8@16:100,32:3", work=work)
    assert work.to_dict()["mean_candidates_rescored"] == 5


def test_cli_stats_file_and_service_fields(index, tmp_path):
    q = tmp_path / "q.npy"
    np.save(q, _vectors(4, seed=7))
    stats = tmp_path / "stats.json"
    result = CliRunner().invoke(app, ["search", str(index.root), "--vectors", str(q), "--cascade", "int8@16:60,32:5",
                                      "-k", "5", "--stats", str(stats)])
    assert result.exit_code == 0, result.output
    doc = json.loads(stats.read_text())
    assert doc["cascade"] == "int8@16:60,32:5" and doc["mean_candidates_rescored"] == 60
    assert len(doc["per_query"]) == 4 and {"mean_candidates_rescored", "mean_bytes_read", "per_stage"} <= set(doc)
    client = TestClient(create_app(ServeSettings(index.root)))
    body = client.post("/search", json={"vector": _vectors(2, seed=8).tolist(), "k": 5,
                                        "cascade": "int8@16:60,32:5", "stats": True}).json()
    assert body["work"]["mean_candidates_rescored"] == 60 and len(body["work"]["per_query"]) == 2
    assert body["took_ms"] > 0
    assert client.post("/search", json={"vector": _vectors(1, seed=8)[0].tolist(), "k": 5}).json()["work"] is None
    assert client.post("/search", json={"vector": _vectors(1)[0].tolist(), "stats": "yes"}).status_code == 422
