"""Data-parallel training: 2 gloo processes on CPU (torchrun) against one process over the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mrl.training import TrainConfig
from mrl.training.loop import train

pytestmark = pytest.mark.skipif(not torch.distributed.is_available(), reason="torch without distributed")


@pytest.fixture(scope="module")
def plain_model(tmp_path_factory):
    """The tiny model without dropout: otherwise each process draws other masks than one process would."""
    from conftest import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-nodrop"), dropout=0.0)


def _args(model, data, out, *extra):
    return ["train", "--model", str(model), "--data", str(data), "--output", str(out), "--dims", "16,32,64",
            "--batch-size", "8", "--lr", "1e-3", "--max-steps", "4", "--max-seq-length", "48", "--seed", "3",
            "--device", "cpu", *extra]


def _torchrun(args, n=2, timeout=300):
    import socket

    with socket.socket() as sock:  # (torchrun's --master-port 0 hangs the rendezvous)
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(n), "--master-port", str(port),
           "-m", "mrl", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)


def _weights(path):
    from safetensors.torch import load_file

    return load_file(str(path / "model.safetensors"))


def _losses(path):
    return [e["dim_loss"] for e in map(json.loads, (path / "train_log.jsonl").read_text().splitlines())
            if e["kind"] == "train"]


def test_two_processes_equal_one_over_the_global_batch(plain_model, tiny_beir, tmp_path):
    single = tmp_path / "single"
    cfg = TrainConfig(model=str(plain_model), data=str(tiny_beir), output=str(single), dims=(16, 32, 64),
                      batch_size=8, lr=1e-3, max_steps=4, max_seq_length=48, seed=3, device="cpu")
    train(cfg, progress=False)
    r = _torchrun(_args(plain_model, tiny_beir, tmp_path / "ddp"))
    assert r.returncode == 0, r.stderr[-3000:]
    for a, b in zip(_losses(single), _losses(tmp_path / "ddp"), strict=True):  # every step, every prefix
        for d in a:
            assert abs(a[d] - b[d]) <= 1e-5 * max(1.0, abs(a[d])), (d, a[d], b[d])
    wa, wb = _weights(single), _weights(tmp_path / "ddp")
    for name in wa:  # equal updates: the averaged gradients are the single-process ones
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4, msg=name)


@pytest.mark.slow  # three torchrun launches, ~45 s
def test_a_resumed_ddp_run_ends_where_an_uninterrupted_one_ends(plain_model, tiny_beir, tmp_path):
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert _torchrun(_args(plain_model, tiny_beir, whole)).returncode == 0
    r = _torchrun(_args(plain_model, tiny_beir, cut, "--checkpoint-every", "2", "--keep-checkpoints"))
    assert r.returncode == 0, r.stderr[-2000:]
    (cut / "model.safetensors").unlink()  # as if killed after the step-2 checkpoint: the rest redone
    for p in (cut / "checkpoints").glob("step-0000004*"):
        p.unlink()
    r = _torchrun(_args(plain_model, tiny_beir, cut, "--checkpoint-every", "2", "--resume"))
    assert r.returncode == 0 and "continuing from the checkpoint of step 2 of 4" in r.stdout + r.stderr, r.stderr[-999:]
    wa, wb = _weights(whole), _weights(cut)
    for name in wa:
        torch.testing.assert_close(wa[name], wb[name], atol=1e-5, rtol=1e-4, msg=name)


def test_a_batch_that_does_not_split_is_a_clear_error(plain_model, tiny_beir, tmp_path):
    r = _torchrun(_args(plain_model, tiny_beir, tmp_path / "o", "--batch-size", "9"))
    assert r.returncode != 0 and "--batch-size 9 does not split over 2 processes" in r.stderr, r.stderr[-2000:]


_DISAGREE = """
import os, sys
from mrl.errors import MrlError
from mrl.training.distributed import Distributed
dist = Distributed.from_env()
try:
    dist.check_same("training data", {"pairs": 96 + dist.rank})  # rank 1 read other data
except MrlError as e:
    print("refused:", e, flush=True)
    sys.exit(3)
finally:
    dist.close()
"""


def test_ranks_that_disagree_stop_with_a_clear_error_instead_of_hanging(tmp_path):
    script = tmp_path / "disagree.py"
    script.write_text(_DISAGREE)
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
                        str(port), str(script)], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode != 0 and "rank 1 has other training data than rank 0" in r.stdout, r.stdout + r.stderr[-999:]
