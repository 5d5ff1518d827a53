from __future__ import annotations

import numpy as np
import pytest
import torch

from mrl import mrr_at_k, ndcg_at_k, recall_at_k, truncate


def test_truncate_numpy_and_torch_agree_and_are_unit_length():
    x = np.random.default_rng(0).normal(size=(5, 16)).astype(np.float32)
    p = truncate(x, 4)
    assert p.shape == (5, 4) and p.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(p, axis=1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(truncate(torch.from_numpy(x), 4).numpy(), p, rtol=1e-6)
    np.testing.assert_array_equal(truncate(x, 4, normalize=False), x[:, :4])


@pytest.mark.parametrize("dim", [0, 17, -1])
def test_truncate_rejects_out_of_range_dims(dim):
    with pytest.raises(ValueError, match=f"prefix dim {dim} is outside 1..16"):
        truncate(np.ones((2, 16)), dim)


def test_metrics_by_hand():
    qrels = {"a": {"d1": 1, "d2": 2}, "b": {"d9": 1}}
    ranked = [["d2", "d3", "d1"], ["d3", "d4"]]
    ndcg = ndcg_at_k(ranked, ["a", "b"], qrels, 10)
    ideal = 2 / np.log2(2) + 1 / np.log2(3)
    assert ndcg[0] == pytest.approx((2 / np.log2(2) + 1 / np.log2(4)) / ideal)
    assert ndcg[1] == 0.0
    np.testing.assert_allclose(recall_at_k(ranked, ["a", "b"], qrels, 2), [0.5, 0.0])
    np.testing.assert_allclose(mrr_at_k(ranked, ["a", "b"], qrels, 10), [1.0, 0.0])
    np.testing.assert_allclose(mrr_at_k([["d3", "d1"]], ["a"], qrels, 1), [0.0])


def test_metrics_agree_with_pytrec_eval():
    pytrec_eval = pytest.importorskip("pytrec_eval")
    rng = np.random.default_rng(0)
    docs = [f"d{i}" for i in range(300)]
    qids = [f"q{i}" for i in range(60)]
    qrels = {}
    for q in qids:
        rel = rng.choice(docs, size=rng.integers(1, 6), replace=False)
        qrels[q] = {d: int(rng.integers(1, 4)) for d in rel}
    # distinct scores, so trec_eval's tie-breaking never matters; relevant docs made likely
    run, ranked = {}, []
    for q in qids:
        scores = rng.random(len(docs))
        for d in qrels[q]:
            scores[docs.index(d)] += rng.random()
        order = np.argsort(-scores)[:100]
        ranked.append([docs[i] for i in order])
        run[q] = {docs[i]: float(scores[i]) for i in order}
    ev = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10", "recall.100"})
    ref = ev.evaluate(run)
    top10 = {q: dict(sorted(r.items(), key=lambda kv: -kv[1])[:10]) for q, r in run.items()}
    ref_rr = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    ours = {
        "ndcg_cut_10": ndcg_at_k(ranked, qids, qrels, 10),
        "recall_10": recall_at_k(ranked, qids, qrels, 10),
        "recall_100": recall_at_k(ranked, qids, qrels, 100),
    }
    for measure, values in ours.items():
        np.testing.assert_allclose(values, [ref[q][measure] for q in qids], atol=1e-6, err_msg=measure)
    np.testing.assert_allclose(mrr_at_k(ranked, qids, qrels, 10), [ref_rr[q]["recip_rank"] for q in qids], atol=1e-6)
    assert ours["ndcg_cut_10"].mean() > 0.1  # the comparison is not vacuous


def test_import_mrl_stays_light():
    import subprocess
    import sys

    code = "import sys, mrl; print('torch' in sys.modules, 'sentence_transformers' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


def test_every_public_name_resolves():
    import mrl

    missing = [n for n in mrl.__all__ if getattr(mrl, n, None) is None]
    assert not missing
