"""mrl encode: shards with ids, resumable, one share per torchrun rank; index build reads the folder."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.data.beir import load_corpus
from mrl.data.vectors import load_folder
from mrl.encoders.model import encode, load_model
from mrl.errors import MrlError

runner = CliRunner()


def _encode(model, data, out, *extra, env=None):
    result = runner.invoke(app, ["encode", "--model", str(model), "--data", str(data), "--out", str(out),
                                 "--shard-size", "7", *extra], env=env)
    return result.exit_code, result.output


def test_shards_hold_what_encode_gives_and_build_an_index(tiny_model_dir, tiny_beir, tmp_path):
    code, out = _encode(tiny_model_dir, tiny_beir, tmp_path / "emb")
    assert code == 0 and "complete" in out, out
    corpus = load_corpus(tiny_beir)
    x, ids = load_folder(tmp_path / "emb")
    assert list(ids) == list(corpus)
    np.testing.assert_allclose(x, encode(load_model(str(tiny_model_dir)), list(corpus.values())), atol=1e-5)
    assert len(list((tmp_path / "emb").glob("shard-*.npy"))) == -(-len(corpus) // 7)
    result = runner.invoke(app, ["index", "build", "--vectors", str(tmp_path / "emb"), "--out", str(tmp_path / "i"),
                                 "--first-stage", "int8@16"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["search", str(tmp_path / "i"), "--vectors", str(tmp_path / "emb" / "shard-00000.npy"),
                                 "-k", "1", "--json"])
    assert [r["hits"][0]["id"] for r in json.loads(result.stdout)["results"]] == list(corpus)[:7]


def test_a_rerun_resumes_and_only_writes_what_is_missing(tiny_model_dir, tiny_beir, tmp_path):
    emb = tmp_path / "emb"
    assert _encode(tiny_model_dir, tiny_beir, emb)[0] == 0
    whole, _ = load_folder(emb)
    (emb / "shard-00001.json").unlink()  # killed between the two renames
    (emb / "shard-00002.npy").write_bytes(b"torn")  # or mid-write of a shard's data
    (emb / ".shard-00003.npy.0123.tmp").write_bytes(b"left by a kill")
    code, out = _encode(tiny_model_dir, tiny_beir, emb)
    assert code == 0 and "2 shard(s) written" in out and "already there" in out, out
    np.testing.assert_array_equal(load_folder(emb)[0], whole)


def test_ranks_split_the_shards_and_the_last_one_completes_the_folder(tiny_model_dir, tiny_beir, tmp_path):
    emb = tmp_path / "emb"
    code, out = _encode(tiny_model_dir, tiny_beir, emb, env={"RANK": "0", "WORLD_SIZE": "2"})
    assert code == 0 and "waiting for the other ranks" in out, out
    with pytest.raises(MrlError, match="shards are not written yet"):
        load_folder(emb)
    assert sorted(p.name for p in emb.glob("shard-*.npy"))[:2] == ["shard-00000.npy", "shard-00002.npy"]
    code, out = _encode(tiny_model_dir, tiny_beir, emb, env={"RANK": "1", "WORLD_SIZE": "2"})
    assert code == 0 and "complete" in out, out
    assert len(load_folder(emb)[1]) == len(load_corpus(tiny_beir))


def test_bad_runs_and_damaged_shards_are_named(tiny_model_dir, tiny_beir, tmp_path):
    emb = tmp_path / "emb"
    assert _encode(tiny_model_dir, tiny_beir, emb)[0] == 0
    code, out = _encode(tiny_model_dir, tiny_beir, emb, "--what", "queries")
    assert code == 2 and "holds shards of another run (source=" in " ".join(out.split()), out
    (emb / "shard-00001.npy").write_bytes((emb / "shard-00001.npy").read_bytes()[:-8] + b"\0" * 8)
    with pytest.raises(MrlError, match="shard-00001.npy: missing, truncated or altered"):
        load_folder(emb)
    code, out = _encode(tiny_model_dir, tiny_beir, tmp_path / "e2", env={"RANK": "3", "WORLD_SIZE": "2"})
    assert code == 2 and "RANK=3 is outside" in out


def test_a_rerun_after_the_weights_or_the_texts_changed_is_refused(tiny_model_dir, tiny_beir, tmp_path):
    import shutil

    from conftest import write_beir

    from mrl.data.beir import load_beir

    model = tmp_path / "model"
    shutil.copytree(tiny_model_dir, model)
    emb = tmp_path / "emb"
    assert _encode(model, tiny_beir, emb)[0] == 0
    (emb / "shard-00001.json").unlink()  # a resume is due
    weights = next(p for p in model.rglob("*.safetensors"))
    data = bytearray(weights.read_bytes())
    data[-8:] = bytes(8)  # the weights changed (fine-tuned again in place)
    weights.write_bytes(bytes(data))
    code, out = _encode(model, tiny_beir, emb)
    assert code == 2 and "the model's weights changed" in out, out
    ds = load_beir(tiny_beir, "test")
    data = tmp_path / "data"
    write_beir(data, ds.corpus, ds.queries, {"test": ds.qrels})
    assert _encode(tiny_model_dir, data, tmp_path / "emb2")[0] == 0
    (tmp_path / "emb2" / "shard-00001.json").unlink()
    write_beir(data, {k: v + " (edited)" for k, v in ds.corpus.items()}, ds.queries, {"test": ds.qrels})
    code, out = _encode(tiny_model_dir, data, tmp_path / "emb2")
    assert code == 2 and "the texts or their ids changed" in out, out
