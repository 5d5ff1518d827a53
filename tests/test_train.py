from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from mrl import truncate
from mrl.encoders.model import encode, load_model
from mrl.errors import MrlError
from mrl.training.checkpoint import list_checkpoints
from mrl.training.config import TrainConfig
from mrl.training.loop import train


def _cfg(tiny_model_dir, tiny_beir, out, **kw):
    base = dict(model=str(tiny_model_dir), data=str(tiny_beir), output=str(out), dims=(16, 32, 64), batch_size=8,
                lr=1e-3, max_steps=8, max_seq_length=48, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_train_writes_a_sentence_transformers_model_with_matryoshka_metadata(tiny_model_dir, tiny_beir, tmp_path):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "run"
    summary = train(_cfg(tiny_model_dir, tiny_beir, out, dev_data=str(tiny_beir), eval_every=4, max_steps=12),
                    progress=False)
    meta = json.loads((out / "mrl.json").read_text())
    assert meta["matryoshka_dims"] == [16, 32, 64] and set(meta["final_dev_ndcg@10"]) == {"16", "32", "64"}
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    train_lines = [e for e in log if e["kind"] == "train"]
    assert [e["step"] for e in train_lines] == list(range(1, 13))
    assert set(train_lines[0]["dim_loss"]) == {"16", "32", "64"}
    assert [e["step"] for e in log if e["kind"] == "dev"] == [4, 8]
    assert summary["steps"] == 12
    # a plain Sentence-Transformers load with truncate_dim gives mrl's prefix
    texts = ["python library for images", "network file server"]
    st = SentenceTransformer(str(out), truncate_dim=32, device="cpu")
    ref = st.encode(texts, normalize_embeddings=True)
    ours = truncate(encode(load_model(str(out), "cpu"), texts), 32)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


def test_training_learns(tiny_model_dir, tiny_beir, tmp_path):
    """Loss at every dim drops on a learnable task (queries are words of their documents)."""
    out = tmp_path / "learn"
    train(_cfg(tiny_model_dir, tiny_beir, out, max_steps=36, lr=3e-3), progress=False)
    log = [json.loads(line) for line in (out / "train_log.jsonl").read_text().splitlines()]
    first = np.mean([list(e["dim_loss"].values()) for e in log[:4]], axis=0)
    last = np.mean([list(e["dim_loss"].values()) for e in log[-4:]], axis=0)
    assert (last < first).all(), (first, last)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


@pytest.mark.parametrize("objective", ["infonce", "distilled"])
def test_resume_after_sigkill_ends_where_an_uninterrupted_run_ends(tiny_model_dir, tiny_beir, tmp_path, objective):
    args = ["--model", str(tiny_model_dir), "--data", str(tiny_beir), "--dims", "16,32,64", "--batch-size", "8",
            "--lr", "1e-3", "--max-steps", "24", "--max-seq-length", "48", "--checkpoint-every", "2",
            "--device", "cpu", "--seed", "3"]
    if objective == "distilled":  # a teacher of another width: learned projections, a cached teacher
        from conftest import build_tiny_model

        teacher = build_tiny_model(tmp_path / "teacher", hidden=48, dropout=0.0)
        args += ["--teacher", str(teacher), "--distill", "mse", "--distill-weight", "0.5",
                 "--teacher-cache", str(tmp_path / "cache")]
    cmd = [sys.executable, "-m", "mrl.cli.main", "train"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    whole = tmp_path / "whole"
    subprocess.run([*cmd, *args, "-o", str(whole)], check=True, env=env, capture_output=True)

    killed = tmp_path / "killed"
    proc = subprocess.Popen([*cmd, *args, "-o", str(killed)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    # kill right after the first checkpoint lands (older ones are pruned, so look for any)
    while time.time() < deadline and not list_checkpoints(killed) and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list_checkpoints(killed), "no checkpoint was written before the kill"
    assert not (killed / "model.safetensors").exists()  # it really died mid-run
    resumed = subprocess.run([*cmd, *args, "-o", str(killed), "--resume"], check=True, env=env, capture_output=True,
                             text=True)
    assert "--resume: continuing from the checkpoint of step" in resumed.stdout + resumed.stderr
    a, b = _weights(whole), _weights(killed)
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)
    steps = [json.loads(x)["step"] for x in (killed / "train_log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 25))


def test_bad_config_values_are_named():
    from mrl.errors import MrlError

    with pytest.raises(MrlError, match="invalid training option batch_size=1"):
        TrainConfig(model="m", data="d", output="o", batch_size=1)


def test_a_finished_run_removes_its_checkpoints_unless_asked_to_keep_them(tiny_model_dir, tiny_beir, tmp_path):
    train(_cfg(tiny_model_dir, tiny_beir, tmp_path / "a", max_steps=6, checkpoint_every=2), progress=False)
    assert not (tmp_path / "a" / "checkpoints").exists() and (tmp_path / "a" / "mrl.json").is_file()
    train(_cfg(tiny_model_dir, tiny_beir, tmp_path / "b", max_steps=6, checkpoint_every=2, remove_checkpoints=False),
          progress=False)
    assert [p.name for p in list_checkpoints(tmp_path / "b")] == ["step-0000002.pt", "step-0000004.pt"]


def test_resume_falls_back_to_the_previous_checkpoint_when_the_newest_is_damaged(tiny_model_dir, tiny_beir,
                                                                                 tmp_path, caplog):
    whole = tmp_path / "whole"
    train(_cfg(tiny_model_dir, tiny_beir, whole, max_steps=6, checkpoint_every=2), progress=False)
    out = tmp_path / "r"
    train(_cfg(tiny_model_dir, tiny_beir, out, max_steps=6, checkpoint_every=2, remove_checkpoints=False),
          progress=False)
    newest = list_checkpoints(out)[-1]
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])  # a torn write
    with caplog.at_level("INFO"):
        train(_cfg(tiny_model_dir, tiny_beir, out, max_steps=6, checkpoint_every=2, resume=True), progress=False)
    text = caplog.text
    assert f"{newest} is damaged" in text and "continuing from the checkpoint of step 2 of 6" in text, text
    a, b = _weights(whole), _weights(out)  # resuming from step 2 still ends where the whole run ends
    for name in a:
        torch.testing.assert_close(a[name], b[name], atol=1e-5, rtol=1e-4, msg=name)


def test_resume_refuses_a_checkpoint_of_another_run(tiny_model_dir, tiny_beir, tmp_path):
    from mrl.errors import MrlError

    out = tmp_path / "r"
    train(_cfg(tiny_model_dir, tiny_beir, out, max_steps=4, checkpoint_every=2, remove_checkpoints=False),
          progress=False)
    assert list_checkpoints(out)
    with pytest.raises(MrlError, match=r"written with lr=0.001, this run has lr=0.002"):
        train(_cfg(tiny_model_dir, tiny_beir, out, max_steps=4, checkpoint_every=2, lr=2e-3, resume=True),
              progress=False)


@pytest.mark.parametrize("head", ["linear", "orthogonal"])
def test_linear_head_trains_and_loads_as_plain_sentence_transformers(tiny_model_dir, tiny_beir, tmp_path, head):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "head"
    train(_cfg(tiny_model_dir, tiny_beir, out, head=head, max_steps=4, checkpoint_every=2, remove_checkpoints=False),
          progress=False)
    st = SentenceTransformer(str(out), device="cpu", truncate_dim=16)
    dense = [m for m in st if type(m).__name__ == "Dense"]
    assert len(dense) == 1 and not torch.equal(dense[0].linear.weight, torch.eye(64))
    if head == "orthogonal":  # a rotation: the saved plain weight still is one
        w = dense[0].linear.weight.detach()
        torch.testing.assert_close(w @ w.T, torch.eye(64), atol=1e-5, rtol=0)
        # the parametrised checkpoint loads back into a parametrised model
        train(_cfg(tiny_model_dir, tiny_beir, out, head=head, max_steps=4, checkpoint_every=2, resume=True),
              progress=False)
    texts = ["python library", "mail server"]
    np.testing.assert_allclose(truncate(encode(load_model(str(out), "cpu"), texts), 16),
                               st.encode(texts, normalize_embeddings=True), atol=1e-5)


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tiny_model_dir, tiny_beir, tmp_path,
                                                                        monkeypatch):
    from mrl.errors import MrlError
    from mrl.training.objective import Objective

    real = Objective.__call__
    calls = {"n": 0}

    def poisoned(self, *args):
        calls["n"] += 1
        loss = real(self, *args)
        return loss * float("nan") if calls["n"] == 5 else loss

    monkeypatch.setattr(Objective, "__call__", poisoned)
    out = tmp_path / "run"
    with pytest.raises(MrlError, match="step 5: the training loss is nan"):
        train(_cfg(tiny_model_dir, tiny_beir, out, checkpoint_every=2), progress=False)
    assert [p.name for p in list_checkpoints(out)][-1] == "step-0000004.pt"
    assert not (out / "mrl.json").exists()  # no model was saved from the poisoned run


def test_a_resume_after_the_data_was_rewritten_is_refused(tiny_model_dir, tiny_beir, tmp_path):
    from conftest import write_beir

    from mrl.data.beir import load_beir

    ds = load_beir(tiny_beir, "train")
    data = write_beir(tmp_path / "data", ds.corpus, ds.queries, {"train": ds.qrels})
    out = tmp_path / "run"
    train(_cfg(tiny_model_dir, data, out, max_steps=4, checkpoint_every=2, remove_checkpoints=False), progress=False)
    write_beir(data, {k: v + " (rewritten)" for k, v in ds.corpus.items()}, ds.queries, {"train": ds.qrels})
    with pytest.raises(MrlError, match="the training data changed since the checkpoint"):
        train(_cfg(tiny_model_dir, data, out, max_steps=4, checkpoint_every=2, remove_checkpoints=False, resume=True),
              progress=False)
