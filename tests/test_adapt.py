"""Matryoshka adaptors on seeded synthetic vectors whose ideal map is known."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mrl.adapt import Adaptor, FitConfig, fit_adaptor, fit_pca
from mrl.errors import MrlError
from mrl.eval import evaluate_embeddings
from mrl.index import MrlIndex
from mrl.prefix import truncate

D = 32
DIMS = (4, 8, 16, 32)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def rotated_low_rank(n: int = 2000, seed: int = 0) -> np.ndarray:
    """Points near a 6-dim subspace with a decaying spectrum, hidden by a random rotation."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 6)) * np.linspace(3, 1, 6)
    x = np.concatenate([z, 0.25 * rng.normal(size=(n, D - 6))], 1)
    basis = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return (x @ basis).astype(np.float32)


def nuisance_pairs(n: int = 2300, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Documents = 8 high-variance nuisance coordinates (absent from queries) + 24 identity coordinates;
    a query is its document's identity coordinates plus noise, all under a random rotation. Variance,
    hence PCA and the unsupervised losses, puts the nuisance first; only pairs reveal what matters."""
    rng = np.random.default_rng(seed)
    ident = rng.normal(size=(n, 24))
    docs = np.concatenate([2 * rng.normal(size=(n, 8)), ident], 1)
    queries = np.concatenate([0.2 * rng.normal(size=(n, 8)), ident + 0.5 * rng.normal(size=(n, 24))], 1)
    rot = np.linalg.qr(rng.normal(size=(D, D)))[0]
    return (docs @ rot).astype(np.float32), (queries @ rot).astype(np.float32)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return rotated_low_rank()


@pytest.fixture(scope="module")
def orthogonal(corpus) -> Adaptor:
    return fit_adaptor(corpus, FitConfig(kind="orthogonal", dims=DIMS, epochs=3, holdout=300), progress=False)


def test_orthogonal_kind_preserves_full_dimension_inner_products(corpus, orthogonal):
    x, y = _unit(corpus[:300]), orthogonal.transform(corpus[:300])
    np.testing.assert_allclose(y @ y.T, x @ x.T, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(y, axis=1), 1.0, atol=1e-5)


def test_adapt_then_truncate_beats_plain_truncation_and_is_no_worse_than_pca(orthogonal, corpus):
    scores = orthogonal.info["scores"]["neighbour_recall@10"]
    for d in ("4", "8"):
        assert scores["adaptor"][d] > scores["truncate"][d] + 0.2
    assert scores["adaptor"]["32"] == pytest.approx(1.0)  # a rotation keeps the full geometry
    # queries near documents: adapted prefixes find them where truncated ones do not
    rng = np.random.default_rng(1)
    target = rng.choice(len(corpus), 200, replace=False)
    xq = corpus[target] + 0.3 * rng.normal(size=(200, D)).astype(np.float32)
    qids, docs = [f"q{i}" for i in range(200)], [f"d{i}" for i in range(len(corpus))]
    qrels = {q: {docs[t]: 1} for q, t in zip(qids, target)}
    report = evaluate_embeddings(xq, corpus, qids, docs, qrels, list(DIMS), ["pca"], adaptors=orthogonal)
    res = report.results
    assert set(res) == {"truncate", "pca", "adaptor"}
    assert res["adaptor"][8]["ndcg@10"] > res["truncate"][8]["ndcg@10"] + 0.1
    assert res["adaptor"][8]["ndcg@10"] >= res["pca"][8]["ndcg@10"] - 0.02
    assert res["adaptor"][32]["ndcg@10"] == pytest.approx(res["truncate"][32]["ndcg@10"], abs=1e-6)


def test_an_orthogonal_fit_does_not_depend_on_the_input_coordinates(corpus):
    """Fitted on a rotated copy, every prefix holds the same geometry (the start is PCA up to signs,
    and the learned rotation acts on its coordinates, where Adam is sign-equivariant)."""
    q = np.linalg.qr(np.random.default_rng(5).normal(size=(D, D)))[0].astype(np.float32)
    cfg = FitConfig(kind="orthogonal", dims=DIMS, epochs=2, holdout=200, batch_size=256, distribution_weight=1.0)
    a, b = fit_adaptor(corpus, cfg, progress=False), fit_adaptor(corpus @ q, cfg, progress=False)
    for d in (4, 8):
        pa, pb = truncate(a.transform(corpus[:200]), d), truncate(b.transform(corpus[:200] @ q), d)
        np.testing.assert_allclose(pa @ pa.T, pb @ pb.T, atol=2e-3)  # float rounding, amplified over steps


def test_supervised_fit_learns_what_variance_hides():
    docs, queries = nuisance_pairs()
    fit, held = slice(0, 2000), slice(2000, None)
    base = dict(dims=(8, 16, 32), epochs=10, batch_size=128, lr=3e-2, holdout=300, distribution_weight=0.0)
    unsup = fit_adaptor(docs[fit], FitConfig(kind="orthogonal", **base), progress=False)
    sup = fit_adaptor(docs[fit], FitConfig(kind="orthogonal", **base), queries[fit], docs[fit], progress=False)
    mlp = fit_adaptor(docs[fit], FitConfig(kind="mlp", hidden=32, **base), queries[fit], docs[fit], progress=False)
    pair = sup.info["scores"]["pair_recall@10"]
    assert "pair_recall@10" not in unsup.info["scores"] and sup.info["training"]["supervised"]
    assert pair["adaptor"]["8"] > pair["truncate"]["8"] + 0.3
    assert mlp.info["scores"]["pair_recall@10"]["adaptor"]["8"] > pair["truncate"]["8"] + 0.3

    def hit_rate(a: Adaptor, d: int = 8) -> float:  # on pairs no fit saw
        q, b = truncate(a.transform(queries[held]), d), truncate(a.transform(docs[held]), d)
        return float(((q @ b.T).argmax(1) == np.arange(len(q))).mean())

    assert hit_rate(sup) > hit_rate(unsup) + 0.3 and hit_rate(mlp) > hit_rate(unsup) + 0.3
    assert hit_rate(sup, 32) == pytest.approx(hit_rate(unsup, 32), abs=1e-9)  # rotations: same full-dim ranking


def test_save_load_round_trips_bit_for_bit(orthogonal, corpus, tmp_path):
    mlp = fit_adaptor(corpus, FitConfig(kind="mlp", dims=DIMS, epochs=1, holdout=100, hidden=16), progress=False)
    for a in (orthogonal, mlp, fit_pca(corpus)):
        path = a.save(tmp_path / a.kind)
        b = Adaptor.load(path)
        assert b.kind == a.kind and b.dims == a.dims and b.fingerprint == a.fingerprint
        assert all(np.array_equal(a.arrays[k], b.arrays[k]) for k in a.arrays)
        np.testing.assert_array_equal(b.transform(corpus[:100]), a.transform(corpus[:100]))
    cfg = json.loads((tmp_path / "orthogonal" / "adaptor.json").read_text())
    assert cfg["kind"] == "orthogonal" and cfg["input_dim"] == D and cfg["training"]["n_vectors"] == len(corpus)
    assert "neighbour_recall@10" in cfg["scores"]


def test_index_applies_the_adaptor_to_queries_and_additions(orthogonal, corpus, tmp_path):
    mlp = fit_adaptor(corpus, FitConfig(kind="mlp", dims=DIMS, epochs=1, holdout=100, hidden=16), progress=False)
    rng = np.random.default_rng(2)
    xq = corpus[:20] + 0.2 * rng.normal(size=(20, D)).astype(np.float32)
    (tmp_path / "i" / "adaptor-mine").mkdir(parents=True)  # a user's folder: no writer may delete it
    (tmp_path / "i" / "adaptor-mine" / "notes.txt").write_text("keep")
    index = MrlIndex.build(tmp_path / "i", corpus, first_stages=["int8@8"], dtype="float32", adaptor=mlp)
    ab, aq = _unit(mlp.transform(corpus)), _unit(mlp.transform(xq))  # what the index stores and searches
    ref_ids = np.argsort(-(aq @ ab.T), axis=1, kind="stable")[:, :10]
    _, ids = index.search(xq, 10, f"int8@8:{len(corpus)},{D}:10")
    np.testing.assert_array_equal(ids, ref_ids)
    np.testing.assert_array_equal(index.exact_search(xq, 10)[1], ref_ids)
    reopened = MrlIndex.open(tmp_path / "i")
    assert reopened.adaptor is not None and reopened.adaptor.fingerprint == mlp.fingerprint
    assert reopened.stats()["adaptor"]["kind"] == "mlp" and reopened.verify() == []
    new = reopened.add(xq[:3], [len(corpus) + i for i in range(3)])  # raw vectors, adapted on the way in
    np.testing.assert_array_equal(new.search(xq[:3], 1, f"exact@{D}:1")[1][:, 0], len(corpus) + np.arange(3))
    assert new.compact().search(xq[:3], 1, f"exact@{D}:1")[1][:, 0].tolist() == (len(corpus) + np.arange(3)).tolist()
    assert (tmp_path / "i" / "adaptor-mine" / "notes.txt").read_text() == "keep"
    new.check_adaptor(mlp)
    with pytest.raises(MrlError, match="built with another adaptor"):
        new.check_adaptor(orthogonal)
    plain = MrlIndex.build(tmp_path / "p", corpus)
    with pytest.raises(MrlError, match="built without an adaptor"):
        plain.check_adaptor(mlp)
    weights = tmp_path / "i" / f"adaptor-{mlp.fingerprint[:16]}" / "weights.npz"
    weights.write_bytes(weights.read_bytes()[:-10])
    with pytest.raises(MrlError, match="missing or altered"):
        MrlIndex.open(tmp_path / "i")


@pytest.mark.parametrize("x,message", [
    (np.full((3, D), np.nan, np.float32), "row 0 holds NaN or Inf"),
    (np.ones((3, 5), np.float32), "dimension 5 does not match the adaptor's input dimension 32"),
    (np.ones(D, np.float32), "expected a 2-D array"),
    (np.ones((0, D), np.float32), "no rows"),
    (np.zeros((2, D), np.float32), "row 0 is all zeros"),
])
def test_transform_rejects_bad_vectors(orthogonal, x, message):
    with pytest.raises(MrlError, match=message):
        orthogonal.transform(x)


def test_load_rejects_missing_truncated_and_foreign_folders(orthogonal, tmp_path):
    with pytest.raises(MrlError, match="no such folder"):
        Adaptor.load(tmp_path / "nope")
    path = orthogonal.save(tmp_path / "a")
    weights = path / "weights.npz"
    good = weights.read_bytes()
    weights.write_bytes(good[: len(good) // 2])
    with pytest.raises(MrlError, match="checksum does not match"):
        Adaptor.load(path)
    weights.write_bytes(good)
    cfg = json.loads((path / "adaptor.json").read_text())
    (path / "adaptor.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(MrlError, match="version 99 is not supported"):
        Adaptor.load(path)
    (path / "adaptor.json").write_text("{not json")
    with pytest.raises(MrlError, match="not valid JSON"):
        Adaptor.load(path)
    (path / "adaptor.json").unlink()
    with pytest.raises(MrlError, match="adaptor.json not found"):
        Adaptor.load(path)


@pytest.mark.parametrize("config,message", [
    (FitConfig(dims=(8, 64)), "dim 64 is larger than the model dimension 32"),
    (FitConfig(kind="ica"), "adaptor kind 'ica' is unknown"),
    (FitConfig(epochs=0), "epochs must be a positive integer"),
    (FitConfig(dims=(8, 32), weights=(0.0, 0.0)), "weights are all zero"),
    (FitConfig(dims=(8, 32), weights=(float("nan"), 1.0)), "must be finite numbers"),
    (FitConfig(lr=float("inf")), "lr must be a positive number"),
])
def test_fit_rejects_bad_options(corpus, config, message):
    with pytest.raises(MrlError, match=message):
        fit_adaptor(corpus[:100], config, progress=False)


def test_fit_rejects_unpaired_supervision(corpus):
    with pytest.raises(MrlError, match="5 queries but 4 positives"):
        fit_adaptor(corpus, FitConfig(dims=DIMS), corpus[:5], corpus[:4], progress=False)
    with pytest.raises(MrlError, match="needs both queries and their positive documents"):
        fit_adaptor(corpus, FitConfig(dims=DIMS), corpus[:5], None, progress=False)
