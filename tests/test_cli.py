from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from mrl.cli.main import app

runner = CliRunner()


def _run(*args):
    result = runner.invoke(app, [str(a) for a in args])
    return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")


def test_eval_cli_writes_json_plot_markdown_and_selects(tiny_model_dir, tiny_beir, tmp_path):
    code, out = _run("eval", "--model", tiny_model_dir, "--data", tiny_beir, "--split", "test", "--dims", "16,32,64",
                     "--baseline", "pca", "--json", tmp_path / "r.json", "--plot", tmp_path / "p.png",
                     "--markdown", tmp_path / "r.md", "--select", "0.9")
    assert code == 0, out
    data = json.loads((tmp_path / "r.json").read_text())
    assert data["model"] == str(tiny_model_dir) and set(data["dims"]) == {"16", "32", "64"}
    assert set(data["dims"]["16"]) >= {"ndcg@10", "recall@10", "recall@100", "mrr@10"}
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert "smallest dim with nDCG@10 >= 90%" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dims", "16,128"], "Matryoshka dim 128 is larger than the model dimension 64"),
        (["--dims", "0,32"], "dim 0 is not a positive integer"),
        (["--dims", "16,16"], "dims are duplicated: 16"),
        (["--dims", "16,x"], "--dims: 'x' is not an integer"),
        (["--split", "nope"], "missing qrels file"),
        (["--baseline", "ica"], "--baseline 'ica' is unknown"),
        (["--select", "1.5"], "--select takes a fraction"),
    ],
)
def test_eval_cli_bad_input(tiny_model_dir, tiny_beir, extra, message):
    code, out = _run("eval", "--model", tiny_model_dir, "--data", tiny_beir, *extra)
    assert code == 2, out
    assert message in " ".join(out.split()) and "Traceback" not in out


def test_missing_model_path_and_data(tiny_beir, tmp_path):
    code, out = _run("eval", "--model", tmp_path / "no-such-model", "--data", tiny_beir)
    assert code == 2 and "model path does not exist" in out and "Traceback" not in out
    code, out = _run("eval", "--model", "minilm", "--data", tmp_path / "nowhere")
    assert code == 2 and "BEIR folder not found" in out


@pytest.mark.parametrize(
    "extra,message",
    [
        (["--dims", "16,32", "--weights", "1"], "1 weights given for 2 dims"),
        (["--dims", "16,-32"], "dim -32 is not a positive integer"),
        (["--dims", "16,128"], "Matryoshka dim 128 is larger than the model dimension 64"),
        (["--weights", "1,2"], "--weights needs --dims"),
        (["--batch-size", "1"], "invalid training option batch_size=1"),
    ],
)
def test_train_cli_bad_input(tiny_model_dir, tiny_beir, tmp_path, extra, message):
    code, out = _run("train", "--model", tiny_model_dir, "--data", tiny_beir, "-o", tmp_path / "o", *extra)
    assert code == 2, out
    assert message in " ".join(out.split()) and "Traceback" not in out


def test_train_cli_on_a_triplets_file(tiny_model_dir, tmp_path):
    from conftest import synthetic_texts

    texts = synthetic_texts(48, seed=11)
    rows = [{"anchor": texts[i], "positive": texts[i + 16], "negative": texts[i + 32]} for i in range(16)]
    path = tmp_path / "triplets.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    code, out = _run("train", "--model", tiny_model_dir, "--data", path, "-o", tmp_path / "m", "--dims", "32,64",
                     "--batch-size", "8", "--max-steps", "2", "--device", "cpu")
    assert code == 0, out
    assert json.loads((tmp_path / "m" / "mrl.json").read_text())["matryoshka_dims"] == [32, 64]
