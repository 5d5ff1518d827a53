"""``--first-stage auto``: first stages for the corpus size and a RAM budget, then ``tune`` to the target."""

from __future__ import annotations

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.errors import MrlError
from mrl.index import MrlIndex
from mrl.index.first_stages import auto
from mrl.index.first_stages.auto import auto_first_stages, parse_size, resolve_first_stages
from mrl.index.tuning.recall import per_query_recall
from mrl.index.tuning.tune import tune


def clusters(n: int, d: int, spread: float, seed: int, per_cluster: int = 100) -> np.ndarray:
    """Gaussian clusters under a decaying spectrum; ``spread`` 1: within-cluster spread = centre spread."""
    rng = np.random.default_rng(0)  # the same clusters for corpus and queries
    scale = (1.0 + np.arange(d)) ** -0.5
    centres = rng.standard_normal((30_000 // per_cluster, d)) * scale
    draw = np.random.default_rng(seed)
    x = centres[draw.integers(len(centres), size=n)] + spread * draw.standard_normal((n, d)) * scale
    return x.astype(np.float32)


def test_auto_first_stages_follow_the_corpus_size_and_the_budget(monkeypatch):
    monkeypatch.setattr(auto, "_memory_bytes", lambda: 24e9)
    assert auto_first_stages(50_001, 384) == ["int8@64"]  # a flat scan is cheap at this size
    assert auto_first_stages(1_000, 32) == ["int8@32"]
    assert auto_first_stages(1_000_000, 768) == ["ivf8@128"]  # <= 256 B: 256 + 8 + centroids does not fit
    assert auto_first_stages(1_000_000, 768, ram_budget=parse_size("300MB")) == ["ivf8@256"]
    assert auto_first_stages(1_000_000, 768, ram_budget=parse_size("100MB")) == ["ivf8@64"]
    assert auto_first_stages(1_000_000, 128) == ["ivf8@64"]  # at most half the dimension
    monkeypatch.setattr(auto, "_memory_bytes", lambda: 4e9)  # a quarter of 4 GB over 10M vectors: 100 B
    assert auto_first_stages(10_000_000, 768) == ["ivf8@64"]
    with pytest.raises(MrlError, match=r"50.0 B per vector, below the 73.\d B of the smallest automatic first stage"):
        auto_first_stages(1_000_000, 768, ram_budget=50e6)
    with pytest.raises(MrlError, match="below the 64 B of the smallest automatic first stage"):
        auto_first_stages(1_000, 384, ram_budget=1_000)
    assert resolve_first_stages(None, 1_000, 384) == ["int8@64"]
    assert resolve_first_stages(["auto", "binary@256", "int8@64"], 1_000, 384) == ["int8@64", "binary@256"]
    with pytest.raises(MrlError, match="--ram-budget chooses automatic first stages"):
        resolve_first_stages(["int8@64"], 1_000, 384, ram_budget=1e9)


@pytest.mark.parametrize("text,expected", [("2GB", 2e9), ("512MiB", 512 * 2**20), ("1e9", 1e9), ("64 kb", 64e3)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "-1GB", "2 parsecs", "GB", "0"])
def test_parse_size_names_bad_input(text):
    with pytest.raises(MrlError, match="expected a positive size"):
        parse_size(text)


@pytest.mark.parametrize("spread", [0.25, 1.0])  # tight and diffuse clusters
def test_default_build_then_tune_meets_the_target_on_held_out_queries(tmp_path, monkeypatch, spread):
    monkeypatch.setattr(auto, "FLAT_MAX", 10_000)  # so that 30,000 vectors get the inverted file
    xb = clusters(30_000, 128, spread, seed=1)
    tuning, held_out = clusters(300, 128, spread, seed=2), clusters(200, 128, spread, seed=3)
    index = MrlIndex.build(tmp_path / "i", xb, dtype="float32")  # no first stages named: auto
    assert index.manifest.first_stages == ("ivf8@64",)
    assert index.rows.segments[0].structure(index.specs[0]).nlist == 1024
    outcomes: dict = {}
    best, _ = tune(index, k=10, target_recall=0.97, queries=tuning, n_single=2, outcomes=outcomes)
    assert best is not None and outcomes["ivf8@64/2"]["status"] == "met", outcomes
    _, truth = index.exact_search(held_out, 10)
    _, found = index.search(held_out, 10, best.cascade)
    assert per_query_recall(found, truth).mean() >= 0.96, best.cascade


def test_build_cli_takes_auto_and_a_ram_budget_and_names_bad_budgets(tmp_path):
    np.save(tmp_path / "x.npy", clusters(2_000, 64, 0.5, seed=4))
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, ["index", "build", "--vectors", str(tmp_path / "x.npy"), *map(str, args)])
        return result.exit_code, result.output + (result.stderr if result.stderr_bytes is not None else "")

    code, out = run("--out", tmp_path / "a", "--first-stage", "auto", "--ram-budget", "1MB")
    assert code == 0, out
    assert MrlIndex.open(tmp_path / "a").manifest.first_stages == ("int8@64",)
    code, out = run("--out", tmp_path / "b", "--ram-budget", "10KB")
    assert code != 0 and "5.0 B per vector, below the 64 B" in out and not (tmp_path / "b").exists()
    code, out = run("--out", tmp_path / "c", "--ram-budget", "lots")
    assert code != 0 and "--ram-budget 'lots': expected a positive size" in out
    code, out = run("--out", tmp_path / "d", "--first-stage", "int8@32", "--ram-budget", "1GB")
    assert code != 0 and "goes with --first-stage auto" in out
    code, out = run("--out", tmp_path / "e", "--backend", "qdrant-edge", "--first-stage", "auto")
    assert code != 0 and "apply to --backend mrl" in out


def test_widening_an_inverted_file_doubles_the_lists_and_the_shortlist(tmp_path):
    from mrl.index.cascade import parse_cascade
    from mrl.index.tuning.tune import _wider

    index = MrlIndex.build(tmp_path / "i", clusters(20_000, 64, 1.0, seed=5), first_stages=["ivf8@32"])
    nlist = index.max_width(index.specs[0])
    assert str(_wider(index, parse_cascade("ivf8@32:100/16,64:10"))) == "ivf8@32:200/32,64:10"
    assert str(_wider(index, parse_cascade(f"ivf8@32:100/{nlist},64:10"))) == f"ivf8@32:200/{nlist},64:10"
    assert _wider(index, parse_cascade(f"ivf8@32:20000/{nlist},64:10")) is None  # nothing left to widen


def test_one_hnsw_search_queue_rule_for_every_backend(monkeypatch):
    """faiss's efSearch, pgvector's hnsw.ef_search and Qdrant's hnsw_ef all come from ``ef_search``."""
    from mrl.index.first_stages.kinds import EF_SEARCH_MIN, ef_search
    from mrl.index.postgres.engine import EF_MAX, search_settings

    assert (ef_search(10, None), ef_search(200, None), ef_search(10, 64), ef_search(100, 64)) == (
        EF_SEARCH_MIN, 200, 64, 100)
    assert search_settings("hnsw", 10, None) == [("hnsw.ef_search", str(EF_SEARCH_MIN))]
    assert search_settings("hnsw", 300, 500)[0] == ("hnsw.ef_search", "500") and EF_MAX >= 500
