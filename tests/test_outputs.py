"""Unusable output paths are refused before any work, and `mrl select` refuses absurd input (issue 30, class 13)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.index import MrlIndex


@pytest.fixture()
def paths(tmp_path):
    xb = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    MrlIndex.build(tmp_path / "idx", xb, first_stages=["int8@8"])
    (tmp_path / "a-file").write_text("not a folder")
    (tmp_path / "a-folder").mkdir()
    return tmp_path


@pytest.mark.parametrize("args, message", [
    (["index", "build", "--vectors", "{t}/x.npy", "-o", "{t}/a-file"], "--out {t}/a-file: is a file"),
    (["index", "build", "--vectors", "{t}/x.npy", "-o", "{t}/a-file/idx"], "{t}/a-file is a file, so nothing"),
    (["search", "{t}/idx", "--vectors", "{t}/x.npy", "--out", "{t}/a-folder"], "--out {t}/a-folder: is a folder"),
    (["search", "{t}/idx", "--vectors", "{t}/x.npy", "--stats", "{t}/a-file/w.json"], "is a file, so nothing"),
    (["index", "tune", "{t}/idx", "--out", "{t}/a-file"], "--out {t}/a-file: is a file"),
    (["eval", "-m", "{t}/no-model", "--data", "{t}", "--plot", "{t}/a-folder"], "--plot {t}/a-folder: is a folder"),
    (["adapt", "fit", "--vectors", "{t}/x.npy", "-o", "{t}/a-file"], "--out {t}/a-file: is a file"),
])
def test_unusable_outputs_are_refused_before_any_work(paths, args, message):
    result = CliRunner().invoke(app, [a.format(t=paths) for a in args])
    assert result.exit_code == 2 and message.format(t=paths) in result.output, result.output
    assert "Traceback" not in result.output


def _report(tmp_path, ndcg):
    from mrl.eval.report import EvalReport

    other = {"recall@10": 0.5, "recall@100": 0.6, "mrr@10": 0.4}
    results = {"truncate": {8: {"ndcg@10": 0.5, **other}, 16: {"ndcg@10": 0.8, **other}}}
    doc = EvalReport(model="m", dataset="d", split="test", full_dim=16, n_queries=1, n_docs=2,
                     results=results).to_dict()
    text = json.dumps(doc).replace('"ndcg@10": 0.8', f'"ndcg@10": {json.dumps(ndcg)}')  # a hand-edited report
    assert text != json.dumps(doc) or ndcg == 0.8
    (tmp_path / "r.json").write_text(text)
    return tmp_path / "r.json"


@pytest.mark.parametrize("case, message", [
    ("folder", "a folder, not an `mrl eval --json` report"),
    ("string", "has nDCG@10 '0.7'; expected a number in [0, 1]"),
    ("range", "has nDCG@10 7.8; expected a number in [0, 1]"),
    ("nan-budget", "--max-bytes nan: expected a positive number"),
])
def test_select_refuses_absurd_input(tmp_path, case, message):
    report = tmp_path if case == "folder" else _report(tmp_path, {"string": "0.7", "range": 7.8}.get(case, 0.8))
    extra = ["--max-bytes", "nan"] if case == "nan-budget" else []
    result = CliRunner().invoke(app, ["select", str(report), *extra])
    assert result.exit_code == 2 and message in result.output, result.output


def test_adapt_fit_does_not_overwrite_in_silence(paths):
    args = ["adapt", "fit", "--vectors", str(paths / "x.npy"), "-o", str(paths / "ad"), "--unsupervised",
            "--kind", "pca"]
    runner = CliRunner()
    assert runner.invoke(app, args).exit_code == 0
    before = (paths / "ad" / "adaptor.json").read_bytes()
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "an adaptor already exists there (pass --overwrite" in result.output
    assert (paths / "ad" / "adaptor.json").read_bytes() == before
    assert runner.invoke(app, [*args, "--overwrite"]).exit_code == 0


def test_train_does_not_overwrite_a_model_in_silence(paths):
    (paths / "model").mkdir()
    (paths / "model" / "mrl.json").write_text("{}")
    (paths / "pairs.jsonl").write_text('{"anchor": "a", "positive": "b"}\n')
    result = CliRunner().invoke(app, ["train", "-o", str(paths / "model"), "--data", str(paths / "pairs.jsonl")])
    assert result.exit_code == 2 and "a trained model is already there (pass --overwrite" in result.output
    assert (paths / "model" / "mrl.json").read_text() == "{}"
