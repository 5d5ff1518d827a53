from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mrl.demo import demo_data_path, run_demo


def test_demo_data_ships_inside_the_package():
    from mrl.data import load_beir

    test = load_beir(demo_data_path(), "test")
    train = load_beir(demo_data_path(), "train")
    assert len(test.queries) == 300 and len(train.queries) == 2048 and len(test.corpus) > 3000


def test_demo_pipeline_on_a_tiny_model(tiny_model_dir, tmp_path):
    result = run_demo(tmp_path / "out", model=str(tiny_model_dir), max_steps=2, device="cpu")
    out = tmp_path / "out"
    report = json.loads((out / "report.json").read_text())
    assert set(report["base"]["dims"]) == set(report["trained"]["dims"]) == {"32", "64"}
    assert "pca" in report["base"]["baselines"]
    assert report["training"]["steps"] == 2
    assert (out / "quality_vs_dim.png").read_bytes()[:4] == b"\x89PNG"
    assert "| 32 |" in (out / "report.md").read_text()
    assert (out / "model" / "mrl.json").is_file() and result.trained.n_queries == 300


@pytest.mark.slow
def test_mrl_demo_end_to_end_with_minilm(tmp_path):
    """The real thing: `mrl demo` with all-MiniLM-L6-v2, offline (a few minutes on 2 cores)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "mrl.cli.main", "demo", "-o", str(tmp_path / "demo")],
                          env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((tmp_path / "demo" / "report.json").read_text())
    base, trained = report["base"]["dims"], report["trained"]["dims"]
    # Matryoshka training must lift the small prefixes above plain truncation of the base model
    assert trained["64"]["ndcg@10"] > base["64"]["ndcg@10"]
    assert trained["32"]["ndcg@10"] > base["32"]["ndcg@10"]
