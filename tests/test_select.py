"""Quantised prefixes in the evaluation, and `mrl select`: the cheapest (dim, precision) for a target."""

from __future__ import annotations

import json

import numpy as np
import pytest
from test_eval import _synthetic
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.errors import MrlError
from mrl.eval import EvalReport, evaluate_embeddings
from mrl.eval.precision import bytes_per_vector, ranked
from mrl.eval.select import choose, options, pareto


def _scores(v):
    return {"ndcg@10": v, "recall@10": v, "recall@100": v, "mrr@10": v}


def _hand_report():
    """Full float 0.80 at 384 dims. 95% = 0.76: binary+rescore at 256 dims (32 B) is the cheapest that keeps it."""
    r = {
        "truncate": {64: 0.70, 128: 0.75, 256: 0.78, 384: 0.80},  # 256, 512, 1024, 1536 B
        "int8": {64: 0.69, 128: 0.745, 256: 0.775, 384: 0.795},  # 64, 128, 256, 384 B
        "int8+rescore": {64: 0.70, 128: 0.75, 256: 0.78, 384: 0.80},
        "binary": {64: 0.40, 128: 0.55, 256: 0.66, 384: 0.70},  # 8, 16, 32, 48 B
        "binary+rescore": {64: 0.62, 128: 0.72, 256: 0.765, 384: 0.79},
    }
    return EvalReport("m", "hand", "test", 10, 100, 384,
                      {m: {d: _scores(v) for d, v in by.items()} for m, by in r.items()})


def test_select_picks_the_known_optimum_of_a_hand_made_report():
    opts = options(_hand_report())
    assert len(opts) == 20
    pick = choose(opts, 0.95)
    assert (pick.precision, pick.dim, pick.bytes_per_vector) == ("binary+rescore", 256, 32.0)
    assert pick.share == pytest.approx(0.765 / 0.80)
    # a tighter budget: 16 B keeps at most binary+rescore@128 (90%): not 95%
    with pytest.raises(MrlError, match=r"no option keeps 95% .* within 16 B/vector: the best is binary\+rescore@128"):
        choose(opts, 0.95, max_bytes=16)
    assert choose(opts, 0.89, max_bytes=16).dim == 128
    assert choose(opts, 1.0).precision in ("float32", "int8+rescore") and choose(opts, 1.0).bytes_per_vector == 384
    front = pareto(opts)
    assert [o.bytes_per_vector for o in front] == sorted(o.bytes_per_vector for o in front)
    assert all(a.ndcg < b.ndcg for a, b in zip(front, front[1:]))
    assert all(any(f.bytes_per_vector <= o.bytes_per_vector and f.ndcg >= o.ndcg for f in front) for o in opts)


def test_select_cli_table_json_plot_and_errors(tmp_path):
    path = tmp_path / "report.json"
    _hand_report().write_json(path)
    runner = CliRunner()
    result = runner.invoke(app, ["select", str(path), "--target", "0.95", "--max-bytes", "64", "--json",
                                 "--plot", str(tmp_path / "front.png")])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc == {"dim": 256, "precision": "binary+rescore", "bytes_per_vector": 32.0, "ndcg@10": 0.765,
                   "share": pytest.approx(0.95625)}
    assert (tmp_path / "front.png").stat().st_size > 1000
    float_only = tmp_path / "float.json"
    float_only.write_text(json.dumps({k: v for k, v in json.loads(path.read_text()).items() if k != "precisions"}))
    cases = [
        ([str(path), "--max-bytes", "4"],
         "--max-bytes 4 is below every option (the cheapest is binary+rescore@64 (8 B/vector))"),
        ([str(float_only), "--precision", "int8,binary"], "the report has no int8 results (it has float32)"),
        ([str(path), "--target", "1.5"], "--target takes a share in (0, 1]"),
        ([str(tmp_path / "none.json")], "report not found"),
        ([str(path), "--precision", "fp8"], "--precision 'fp8' is unknown"),
    ]
    for args, message in cases:
        result = runner.invoke(app, ["select", *args])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
    assert json.loads(path.read_text())["precisions"]  # the report is only read


def test_quantised_prefixes_in_the_evaluation():
    xq, xb, qids, docs, qrels = _synthetic(n=600, d=64, nq=80)
    report = evaluate_embeddings(xq, xb, qids, docs, qrels, [16, 32, 64], precisions=["float32", "int8", "binary"],
                                 rescore=50)
    assert set(report.results) == {"truncate", "int8", "int8+rescore", "binary", "binary+rescore"}
    for d in (16, 32, 64):
        full = report.results["truncate"][d]["ndcg@10"]
        assert report.results["int8"][d]["ndcg@10"] >= full - 0.05  # 8-bit codes lose little
        assert report.results["binary+rescore"][d]["ndcg@10"] >= report.results["binary"][d]["ndcg@10"] - 1e-9
    data = report.to_dict()
    assert set(data["precisions"]) == {"int8", "int8+rescore", "binary", "binary+rescore"} and "baselines" not in data
    assert EvalReport.from_dict(json.loads(json.dumps(data))).results == report.results
    assert bytes_per_vector("binary+rescore", 256) == 32 and bytes_per_vector("int8", 64) == 64
    with pytest.raises(MrlError, match="dim 12 is not a multiple of 8"):
        evaluate_embeddings(xq, xb, qids, docs, qrels, [12], precisions=["binary"])


def test_a_rescore_of_the_whole_corpus_is_exact_search():
    rng = np.random.default_rng(3)
    xb = rng.normal(size=(200, 16)).astype(np.float32)
    xb /= np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xb[:10] + 0.1 * rng.normal(size=(10, 16)).astype(np.float32)
    xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    exact = np.argsort(-(xq @ xb.T), axis=1, kind="stable")[:, :20]
    for p in ("int8", "binary"):
        np.testing.assert_array_equal(ranked(xq, xb, p, 20, rescore=200), exact)


def test_eval_cli_precision_then_select(tiny_model_dir, tiny_beir, tmp_path):
    out = tmp_path / "r.json"
    runner = CliRunner()
    result = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "--dims", "16,32",
                                 "--precision", "float32,int8,binary", "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert set(json.loads(out.read_text())["precisions"]) == {"int8", "int8+rescore", "binary", "binary+rescore"}
    result = runner.invoke(app, ["select", str(out), "--target", "0.5", "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["share"] >= 0.5, result.output
    bad = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "--dims", "12",
                              "--precision", "binary"])
    assert bad.exit_code != 0 and "dim 12 is not a multiple of 8" in bad.output
