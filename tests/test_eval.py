from __future__ import annotations

import json

import numpy as np
import pytest

from mrl.errors import MrlError
from mrl.eval import EvalReport, evaluate_embeddings
from mrl.prefix import exact_top_k


def test_exact_search_contract_and_ties():
    rng = np.random.default_rng(0)
    xb = rng.normal(size=(50, 8)).astype(np.float32)
    xq = rng.normal(size=(7, 8)).astype(np.float32)
    scores, ids = exact_top_k(xq, xb, 5, block=3)
    assert scores.shape == ids.shape == (7, 5) and scores.dtype == np.float32 and ids.dtype == np.int64
    ref = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :5]
    np.testing.assert_array_equal(ids, ref)
    s, i = exact_top_k(xq, xb[:3], 5)
    assert (i[:, 3:] == -1).all() and np.isneginf(s[:, 3:]).all()
    tied = np.ones((4, 2), dtype=np.float32)
    assert exact_top_k(tied[:1], tied, 4)[1].tolist() == [[0, 1, 2, 3]]


def _synthetic(n=400, d=32, nq=60, seed=0):
    """Documents whose variance decays over coordinates; queries are noisy copies of their document."""
    rng = np.random.default_rng(seed)
    xb = (rng.normal(size=(n, d)) * np.linspace(3, 0.2, d)).astype(np.float32)
    rot = np.linalg.qr(rng.normal(size=(d, d)))[0].astype(np.float32)
    xb = xb @ rot  # hide the spectrum from plain truncation, PCA can recover it
    target = rng.choice(n, nq, replace=False)
    xq = xb[target] + rng.normal(scale=0.5, size=(nq, d)).astype(np.float32)
    qids = [f"q{i}" for i in range(nq)]
    docs = [f"d{i}" for i in range(n)]
    qrels = {q: {docs[t]: 1} for q, t in zip(qids, target)}
    return xq, xb, qids, docs, qrels


def test_evaluate_embeddings_per_dim_with_pca_baseline_and_selection(tmp_path):
    xq, xb, qids, docs, qrels = _synthetic()
    report = evaluate_embeddings(xq, xb, qids, docs, qrels, [4, 8, 16], ["pca"], "synthetic")
    assert report.dims == [4, 8, 16, 32]
    full = report.results["truncate"][32]["ndcg@10"]
    assert full > 0.9 and report.retention(32) == 1.0
    # PCA finds the high-variance directions that truncation of a rotated space misses
    assert report.results["pca"][4]["ndcg@10"] > report.results["truncate"][4]["ndcg@10"]
    chosen = report.select(0.95)
    assert report.retention(chosen) >= 0.95
    assert all(report.retention(d) < 0.95 for d in report.dims if d < chosen)
    path = tmp_path / "r.json"
    report.write_json(path)
    data = json.loads(path.read_text())
    assert set(data["dims"]["8"]) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert "pca" in data["baselines"]
    assert EvalReport.from_dict(data).results == report.results


def test_evaluate_embeddings_rejects_bad_dims():
    xq, xb, qids, docs, qrels = _synthetic()
    with pytest.raises(MrlError, match="dim 64 is outside 1..32"):
        evaluate_embeddings(xq, xb, qids, docs, qrels, [64])
    with pytest.raises(MrlError, match="unknown baseline 'ica'"):
        evaluate_embeddings(xq, xb, qids, docs, qrels, [8], ["ica"])
