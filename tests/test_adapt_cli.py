"""``mrl adapt``, ``mrl eval --adaptor``, ``mrl index build --adaptor`` and the service, end to end."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import synthetic_texts
from fastapi.testclient import TestClient
from test_adapt import rotated_low_rank
from test_cli import _run

from mrl.adapt import Adaptor
from mrl.encoders.model import encode, load_model
from mrl.index import MrlIndex
from mrl.serve import ServeSettings, create_app


@pytest.fixture(scope="module")
def fitted(tiny_model_dir, tiny_beir, tmp_path_factory):
    """A supervised adaptor fitted by the CLI on the tiny BEIR set, encoded with the tiny model."""
    out = tmp_path_factory.mktemp("adapt") / "sup"
    code, text = _run("adapt", "fit", "--model", tiny_model_dir, "--data", tiny_beir, "--out", out,
                      "--kind", "mlp", "--dims", "16,32,64", "--epochs", "4", "--batch-size", "32")
    assert code == 0, text
    assert "pair_recall@10" in text and "wrote" in text
    return out


def test_fit_from_vectors_and_apply_streams_the_same_transform(tmp_path):
    x = rotated_low_rank(600)
    np.save(tmp_path / "x.npy", x)
    code, out = _run("adapt", "fit", "--vectors", tmp_path / "x.npy", "--out", tmp_path / "a", "--dims", "4,8,32",
                     "--epochs", "2", "--batch-size", "128")
    assert code == 0, out
    adaptor = Adaptor.load(tmp_path / "a")
    assert adaptor.kind == "orthogonal" and adaptor.dims == (4, 8, 32)
    code, out = _run("adapt", "apply", tmp_path / "a", "--vectors", tmp_path / "x.npy", "--out", tmp_path / "y.npy")
    assert code == 0, out
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), adaptor.transform(x))
    assert not list(tmp_path.glob(".*tmp"))


def test_supervised_fit_from_a_beir_folder_and_eval_side_by_side(fitted, tiny_model_dir, tiny_beir, tmp_path):
    info = json.loads((fitted / "adaptor.json").read_text())
    assert info["training"]["supervised"] and info["training"]["n_pairs"] == 96 and info["kind"] == "mlp"
    code, out = _run("eval", "--model", tiny_model_dir, "--data", tiny_beir, "--dims", "16,32,64",
                     "--adaptor", fitted, "--baseline", "pca,adaptor", "--json", tmp_path / "r.json")
    assert code == 0, out
    report = json.loads((tmp_path / "r.json").read_text())
    assert set(report["baselines"]) == {"pca", "adaptor"}
    assert set(report["baselines"]["adaptor"]["dims"]) == {"16", "32", "64"}


def test_index_built_with_an_adaptor_searches_and_serves_adapted(fitted, tiny_model_dir, tiny_beir, tmp_path):
    idx = tmp_path / "idx"
    code, out = _run("index", "build", "--model", tiny_model_dir, "--data", tiny_beir, "--out", idx,
                     "--first-stage", "int8@16", "--adaptor", fitted)
    assert code == 0, out
    code, out = _run("search", idx, "library tool server", "-k", "2", "--adaptor", fitted)
    assert code == 0 and "rank" in out, out
    adaptor = Adaptor.load(fitted)
    model = load_model(str(tiny_model_dir))
    client = TestClient(create_app(ServeSettings(idx)))
    texts = synthetic_texts(2, seed=4)
    r = client.post("/v1/embeddings", json={"input": texts, "dimensions": 16})
    assert r.status_code == 200, r.text
    want = adaptor.transform(encode(model, texts))[:, :16]
    want /= np.linalg.norm(want, axis=1, keepdims=True)
    np.testing.assert_allclose([d["embedding"] for d in r.json()["data"]], want, atol=1e-5)
    r = client.post("/search", json={"query": texts[0], "k": 3})
    ids = MrlIndex.open(idx).search(encode(model, texts[:1]), 3)[1]
    assert [h["id"] for h in r.json()["results"][0]] == MrlIndex.open(idx).keys(ids)[0]
    assert client.get("/stats").json()["index"]["adaptor"]["fingerprint"] == adaptor.fingerprint


@pytest.mark.parametrize("args,message", [
    (["adapt", "fit", "--out", "{tmp}/a"], "give either --vectors X.npy or --model PATH --data BEIR_DIR"),
    (["adapt", "fit", "--vectors", "{tmp}/missing.npy", "--out", "{tmp}/a"], "missing.npy: no such file"),
    (["adapt", "fit", "--vectors", "{tmp}/nan.npy", "--out", "{tmp}/a", "--dims", "4,8"], "holds NaN or Inf"),
    (["adapt", "fit", "--vectors", "{tmp}/ok.npy", "--out", "{tmp}/a", "--dims", "4,99"],
     "dim 99 is larger than the model dimension 8"),
    (["adapt", "fit", "--vectors", "{tmp}/flat.npy", "--out", "{tmp}/a"], "expected a 2-D array"),
    (["adapt", "fit", "--vectors", "{tmp}/text.npy", "--out", "{tmp}/a"], "not a readable .npy array"),
    (["adapt", "apply", "{tmp}/nothing", "--vectors", "{tmp}/ok.npy", "--out", "{tmp}/y.npy"], "no such folder"),
    (["adapt", "apply", "{tmp}/a8", "--vectors", "{tmp}/wide.npy", "--out", "{tmp}/y.npy"],
     "dimension 16 does not match the adaptor's input dimension 8"),
    (["adapt", "apply", "{tmp}/a8", "--vectors", "{tmp}/ok.npy", "--out", "{tmp}/ok.npy"], "is the input file"),
    (["index", "build", "--vectors", "{tmp}/wide.npy", "--out", "{tmp}/i", "--adaptor", "{tmp}/a8"],
     "dimension 16 does not match the adaptor's input dimension 8"),
    (["search", "{tmp}/plain", "--vectors", "{tmp}/ok.npy", "--adaptor", "{tmp}/a8"], "built without an adaptor"),
    (["eval", "--model", "minilm", "--data", "{tmp}", "--baseline", "adaptor"], "--baseline adaptor needs --adaptor"),
    (["adapt", "fit", "--vectors", "{tmp}/ok.npy", "--out", "{tmp}/a", "--batch-size", "0"],
     "Invalid value for '--batch-size'"),
    (["serve", "{tmp}/plain", "--port", "70000"], "Invalid value for '--port'"),
    (["search", "{tmp}/plain", "--vectors", "{tmp}/ok.npy", "-k", "0"], "Invalid value for '-k'"),
])
def test_adapt_cli_bad_input_names_the_problem_and_writes_nothing(args, message, tmp_path):
    rng = np.random.default_rng(0)
    ok = rng.normal(size=(300, 8)).astype(np.float32)
    np.save(tmp_path / "ok.npy", ok)
    np.save(tmp_path / "wide.npy", rng.normal(size=(5, 16)).astype(np.float32))
    np.save(tmp_path / "flat.npy", ok[0])
    nan = ok.copy()
    nan[7, 1] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    (tmp_path / "text.npy").write_text("not an array")
    from mrl.adapt import fit_pca

    fit_pca(ok).save(tmp_path / "a8")
    MrlIndex.build(tmp_path / "plain", ok)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, out = _run(*[a.format(tmp=tmp_path) for a in args])
    assert code == 2 and message in " ".join(out.replace("│", " ").split()), out
    assert "Traceback" not in out
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written
    np.testing.assert_array_equal(np.load(tmp_path / "ok.npy"), ok)
