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
        (["--device", "cuda:99"], "device 'cuda:99': "),
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
        (["--batch-size", "1"], "Invalid value for '--batch-size'"),
        (["--device", "quantum"], "device 'quantum': not a device name"),
        (["--device", "cuda:99"], "device 'cuda:99': "),  # no CUDA here, or not 100 GPUs
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


def test_index_cli_build_search_change_tune(tiny_model_dir, tiny_beir, tmp_path):
    import numpy as np

    rng = np.random.default_rng(0)
    xb = (rng.standard_normal((400, 32)) * (np.arange(32) + 1.0) ** -0.7).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    (tmp_path / "ids.txt").write_text("".join(f"doc{i}\n" for i in range(400)))
    idx = tmp_path / "idx"
    code, out = _run("index", "build", "--vectors", tmp_path / "x.npy", "--ids", tmp_path / "ids.txt", "--out", idx,
                     "--first-stage", "int8@8", "--first-stage", "binary@16")
    assert code == 0, out
    np.save(tmp_path / "q.npy", xb[:5])
    code, out = _run("search", idx, "--vectors", tmp_path / "q.npy", "-k", "3", "--out", tmp_path / "r.npz",
                     "--cascade", "binary@16:100,32:3")
    assert code == 0, out
    res = np.load(tmp_path / "r.npz")
    assert res["ids"].shape == (5, 3) and res["ids"].dtype == np.int64 and res["scores"].dtype == np.float32
    assert list(res["keys"][:, 0]) == [f"doc{i}" for i in range(5)]
    code, out = _run("index", "delete", idx, "doc1", "nope")
    assert code == 2 and "not in the index, e.g. 'nope'; nothing was deleted" in " ".join(out.split())
    code, out = _run("index", "delete", idx, "doc1")
    assert code == 0 and "400 -> 399 live" in " ".join(out.split())
    np.save(tmp_path / "y.npy", xb[:2] * -1)
    (tmp_path / "y.txt").write_text("doc2\nfresh\n")
    code, out = _run("index", "add", idx, "--vectors", tmp_path / "y.npy", "--ids", tmp_path / "y.txt")
    assert code == 0 and "399 -> 400 live, 2 segment(s)" in " ".join(out.split()), out
    code, out = _run("index", "compact", idx)
    assert code == 0 and "1 segment" in " ".join(out.split())
    code, out = _run("index", "tune", idx, "--target-recall", "0.9", "--n-queries", "40")
    assert code == 0, out
    chosen = json.loads((idx / "tune" / "tune.json").read_text())["best"]["cascade"]
    assert (idx / "tune" / "tune.png").exists() and json.loads((idx / "manifest.json").read_text())[
        "default_cascade"] == chosen
    code, out = _run("index", "verify", idx)
    assert code == 0 and "all checksums match" in " ".join(out.split())
    code, out = _run("index", "stats", idx)
    assert code == 0 and '"count": 400' in " ".join(out.split())


def test_json_results_are_alone_on_stdout(tiny_model_dir, tiny_beir, tmp_path):
    """--json: one JSON document on stdout (progress and messages go to stderr), so it pipes into jq."""
    import numpy as np

    xb = np.random.default_rng(1).standard_normal((300, 16)).astype(np.float32)
    np.save(tmp_path / "x.npy", xb)
    np.save(tmp_path / "q.npy", xb[:2])
    idx = tmp_path / "idx"
    assert _run("index", "build", "--vectors", tmp_path / "x.npy", "--out", idx, "--first-stage", "int8@8")[0] == 0

    def stdout_json(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)

    found = stdout_json("search", idx, "--vectors", tmp_path / "q.npy", "-k", "3", "--json")
    assert [r["hits"][0]["id"] for r in found["results"]] == ["0", "1"] and len(found["results"][0]["hits"]) == 3
    tuned = stdout_json("index", "tune", idx, "--target-recall", "0.9", "--n-queries", "30", "--json")
    assert tuned["best"]["cascade"] and tuned["stored"] is True and tuned["rows"]
    assert stdout_json("index", "stats", idx, "--json")["default_cascade"] == tuned["best"]["cascade"]
    report = stdout_json("eval", "--model", tiny_model_dir, "--data", tiny_beir, "--dims", "16,64", "--json", "-")
    assert set(report["dims"]) == {"16", "64"}


def test_tables_are_not_cut_when_stdout_is_not_a_terminal(tiny_model_dir, tiny_beir):
    """Off a terminal rich fits tables to 80 columns and cuts headers to '…'; ours are printed whole."""
    code, out = _run("eval", "--model", tiny_model_dir, "--data", tiny_beir, "--dims", "16,64", "--baseline", "pca")
    assert code == 0 and "…" not in out and "recall@100" in out.lower(), out


def test_index_cli_text_search_uses_the_recorded_model(tiny_model_dir, tiny_beir, tmp_path):
    idx = tmp_path / "idx"
    code, out = _run("index", "build", "--model", tiny_model_dir, "--data", tiny_beir, "--out", idx,
                     "--first-stage", "int8@16")
    assert code == 0, out
    code, out = _run("search", idx, "some query text", "-k", "2")
    assert code == 0 and "rank" in " ".join(out.split()), out


@pytest.mark.parametrize("args,message", [
    (["index", "build", "--vectors", "{tmp}/oned.npy", "--out", "{tmp}/i"], "expected a 2-D array"),
    (["index", "build", "--vectors", "{tmp}/ok.npy", "--ids", "{tmp}/big.txt", "--out", "{tmp}/i"],
     "big.txt:1: id 1180591620717411303424 does not fit in 64 bits"),
    (["index", "tune", "{tmp}/idx", "--queries", "{tmp}/empty.npy"], "queries: no rows"),
    (["index", "build", "--out", "{tmp}/i"], "give either --vectors"),
    (["index", "build", "--vectors", "{tmp}/missing.npy", "--out", "{tmp}/i"], "missing.npy: no such file"),
    (["index", "build", "--vectors", "{tmp}/bad.npy", "--out", "{tmp}/i"], "row 1 holds NaN or Inf"),
    (["index", "build", "--vectors", "{tmp}/ok.npy", "--out", "{tmp}/i", "--first-stage", "int8@99"],
     "exceeds the vectors' dimension 8"),
    (["index", "build", "--vectors", "{tmp}/ok.npy", "--ids", "{tmp}/dup.txt", "--out", "{tmp}/i"],
     "'a' appears 2 times"),
    (["search", "{tmp}/nothing", "--vectors", "{tmp}/ok.npy"], "not an mrl index"),
    (["index", "build", "--vectors", "{tmp}/ok.npy", "--ids", "{tmp}/latin1.txt", "--out", "{tmp}/i"],
     "latin1.txt:2: not UTF-8 text"),
])
def test_index_cli_bad_input(args, message, tmp_path):
    import numpy as np

    ok = np.ones((3, 8), np.float32)
    np.save(tmp_path / "ok.npy", ok)
    bad = ok.copy()
    bad[1, 2] = np.inf
    np.save(tmp_path / "bad.npy", bad)
    (tmp_path / "dup.txt").write_text("a\nb\na\n")
    (tmp_path / "latin1.txt").write_bytes("a\ncaf\u00e9\nc\n".encode("latin-1"))
    (tmp_path / "big.txt").write_text(f"{2**70}\n1\n2\n")
    np.save(tmp_path / "oned.npy", np.ones(8, np.float32))
    np.save(tmp_path / "empty.npy", np.zeros((0, 8), np.float32))
    if "{tmp}/idx" in args:
        np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((50, 8)).astype(np.float32))
        assert _run("index", "build", "--vectors", tmp_path / "x.npy", "--out", tmp_path / "idx")[0] == 0
    code, out = _run(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in " ".join(out.split()), out
    assert "Traceback" not in " ".join(out.split())


def test_eval_with_a_model_that_is_neither_a_folder_nor_cached_says_so(tmp_path, tiny_beir):
    from mrl.cli.main import app as cli_app

    for name, message in (("some-org/some-model", "no such folder, and not a hub model in the local cache"),
                          (str(tmp_path / "missing"), "model path does not exist")):
        result = CliRunner().invoke(cli_app, ["eval", "--model", name, "--data", str(tiny_beir)])
        assert result.exit_code == 2 and message in result.output and "huggingface.co" not in result.output
