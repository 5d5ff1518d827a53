"""The learned per-query gate: calibrated recall on unseen queries, the fixed cascade when forced, storage."""

from __future__ import annotations

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.errors import MrlError
from mrl.index import MrlIndex
from mrl.index.cascade import parse_cascade
from mrl.index.gate import Gate, features
from mrl.index.tuning.adaptive import GateMissesTarget, ladder, tune_adaptive
from mrl.index.tuning.recall import per_query_recall
from mrl.index.work import Work

D = 64


def _corpus(n=4000, seed=0):
    rng = np.random.default_rng(seed)
    spectrum = (np.arange(D) + 1.0) ** -0.6  # leading dims carry most of the energy, as in a Matryoshka model
    centres = rng.standard_normal((80, D)) * spectrum
    x = centres[rng.integers(0, 80, n)] + 0.6 * rng.standard_normal((n, D)) * spectrum
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), spectrum


def _queries(xb, spectrum, n, seed):
    """Half easy (a corpus vector, barely moved), half hard (moved far: many near-ties)."""
    rng = np.random.default_rng(seed)
    base = xb[rng.choice(len(xb), n, replace=False)]
    noise = np.where(np.arange(n)[:, None] % 2 == 0, 0.05, 1.2) * rng.standard_normal((n, D)) * spectrum * 3
    q = base + noise
    return (q / np.linalg.norm(q, axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    xb, spectrum = _corpus()
    index = MrlIndex.build(tmp_path_factory.mktemp("g") / "i", xb, first_stages=["int8@16"], dtype="float32")
    return index, xb, spectrum


def test_the_gate_holds_the_target_on_unseen_queries_and_saves_work(setup):
    index, xb, spectrum = setup
    fixed, target = "int8@16:300,64:10", 0.95
    tuning, held_out = _queries(xb, spectrum, 800, seed=1), _queries(xb, spectrum, 800, seed=2)
    result = tune_adaptive(index, fixed, tuning, 10, target, n_single=5)
    gate = result.gate
    assert gate.cascade == "int8@16:600,64:10" and gate.levels == (0, 18, 37, 75, 150, 300, 600)
    index.gate = gate
    try:
        truth = index.exact_search(held_out, 10).ids
        work = Work()
        found = index.search(held_out, 10, str(result.cascade), work=work).ids
    finally:
        index.gate = None
    recalls = per_query_recall(found, truth)
    assert recalls.mean() >= target, recalls.mean()
    fixed_recall = per_query_recall(index.search(held_out, 10, fixed).ids, truth).mean()
    assert fixed_recall >= target
    rescored = np.array([q["candidates_rescored"] for q in work.to_dict()["per_query"]])
    assert rescored.mean() < 300  # less than the fixed cascade rescores, from a shortlist twice as long
    assert rescored[0::2].mean() < rescored[1::2].mean()  # easy queries stop earlier than hard ones


def test_a_pick_without_margin_gets_more_room_until_the_gate_meets_the_target(setup):
    index, xb, spectrum = setup
    tuning, held_out = _queries(xb, spectrum, 800, seed=1), _queries(xb, spectrum, 800, seed=2)
    # twice the shortlist (100) misses 0.99 on the calibration half; four times (200) meets it
    result = tune_adaptive(index, "int8@16:50,64:10", tuning, 10, 0.99, n_single=5)
    assert result.gate.cascade == "int8@16:200,64:10" and result.gate.calibration["recall_low"] >= 0.99
    index.gate = result.gate
    try:
        found = index.search(held_out, 10, str(result.cascade)).ids
    finally:
        index.gate = None
    assert per_query_recall(found, index.exact_search(held_out, 10).ids).mean() >= 0.99
    with pytest.raises(GateMissesTarget, match=r"widened 8x over int8@16:20,64:10"):
        tune_adaptive(index, "int8@16:20,64:10", tuning, 10, 0.999, n_single=5)  # 160 candidates still miss


def test_a_gate_that_always_continues_is_the_fixed_cascade(setup):
    index, xb, spectrum = setup
    xq = _queries(xb, spectrum, 100, seed=3)
    fixed = index.search(xq, 10, "int8@16:400,32:40,64:10")
    index.gate = Gate.always_continue("int8@16:400,32:40,64:10", 10, ladder(400, 40))
    try:
        work = Work()
        gated = index.search(xq, 10, "int8@16:400,32:40,64:10@gate", work=work)
    finally:
        index.gate = None
    np.testing.assert_array_equal(gated.ids, fixed.ids)
    np.testing.assert_array_equal(gated.scores, fixed.scores)
    assert work.to_dict()["mean_candidates_rescored"] == 440


def test_stats_count_each_querys_own_depth(setup):
    index, xb, spectrum = setup
    xq = _queries(xb, spectrum, 40, seed=4)
    levels = ladder(320, 10)
    gate = Gate.always_continue("int8@16:320,64:10", 10, levels)
    chosen = np.arange(40) % len(levels)
    work = Work()
    index.search_gated(xq, 10, parse_cascade("int8@16:320,64:10"), gate, chosen, work)
    counts = [q["candidates_rescored"] for q in work.to_dict()["per_query"]]
    assert counts == [levels[c] for c in chosen]


def test_features_are_finite_on_short_and_padded_lists():
    s = np.array([[0.9, 0.8, 0.7, -np.inf, -np.inf], [0.5, 0.5, 0.5, 0.5, 0.5]], np.float32)
    f = features(s, 2)
    assert f.shape == (2, 10) and np.isfinite(f).all()


def test_the_grammar_of_gated_cascades():
    c = parse_cascade("int8@64:2000,384:10@gate")
    assert c.gated and str(c) == "int8@64:2000,384:10@gate" and str(c.ungated) == "int8@64:2000,384:10"
    with pytest.raises(MrlError, match="a gated cascade needs a rescoring stage"):
        parse_cascade("int8@64:100@gate")


def _timings(monkeypatch, fixed_ms, gated_ms):
    """tune_adaptive times the fixed cascade, then the gated one: give them these p50s."""
    import mrl.index.tuning.adaptive as adaptive

    given = iter([(fixed_ms, fixed_ms, fixed_ms), (gated_ms, gated_ms, gated_ms)])
    monkeypatch.setattr(adaptive, "latency", lambda search, xq, n_single: (search(xq[:1]), next(given))[1])


def test_a_gate_slower_than_its_fixed_cascade_is_not_stored(tmp_path, monkeypatch):
    xb, spectrum = _corpus(2500, seed=5)
    root = tmp_path / "i"
    MrlIndex.build(root, xb, first_stages=["int8@16"], dtype="float32")
    q = tmp_path / "q.npy"
    np.save(q, _queries(xb, spectrum, 400, seed=6))
    _timings(monkeypatch, 1.0, 2.0)
    result = CliRunner().invoke(app, ["index", "tune", str(root), "--queries", str(q), "--target-recall", "0.9",
                                      "--adaptive"])
    assert result.exit_code == 0, result.output
    assert "the gate is not faster than the fixed cascade" in result.output
    index = MrlIndex.open(root)
    assert not index.default_cascade.gated and index.gate is None and not list(root.glob("gate-*"))
    assert index.manifest.tuning["adaptive"] is False and index.manifest.tuning["gate_rejected"]["gated_p50_ms"] == 2
    assert f"chosen: {index.default_cascade}" in result.output.replace("\n", " ")


def test_tune_adaptive_from_the_cli_stores_the_gate_and_bad_input_changes_nothing(tmp_path, monkeypatch):
    _timings(monkeypatch, 2.0, 1.0)  # the gate wins (timings on a tiny index are noise)
    xb, spectrum = _corpus(2500, seed=5)
    root = tmp_path / "i"
    MrlIndex.build(root, xb, first_stages=["int8@16"], dtype="float32")
    before = json.loads((root / "manifest.json").read_text())
    runner = CliRunner()
    q = tmp_path / "q.npy"
    np.save(q, _queries(xb, spectrum, 150, seed=6))
    result = runner.invoke(app, ["index", "tune", str(root), "--queries", str(q), "--target-recall", "0.9",
                                 "--adaptive"])
    assert result.exit_code != 0 and "--adaptive needs at least 200 tuning queries" in result.output
    assert json.loads((root / "manifest.json").read_text()) == before and not list(root.glob("gate-*"))
    np.save(q, _queries(xb, spectrum, 400, seed=6))
    result = runner.invoke(app, ["index", "tune", str(root), "--queries", str(q), "--target-recall", "0.9",
                                 "--adaptive"])
    assert result.exit_code == 0, result.output
    index = MrlIndex.open(root)
    assert index.default_cascade.gated and index.gate is not None and index.manifest.tuning["adaptive"]
    assert index.verify() == []
    found = index.search(_queries(xb, spectrum, 50, seed=7), 10)  # the default: gated
    assert found.ids.shape == (50, 10) and (found.ids >= 0).all()
    # another version of the gate file, then a missing one: named
    gate_file = root / index.manifest.gate["path"]
    doc = json.loads(gate_file.read_text())
    with pytest.raises(MrlError, match="format version 99"):
        Gate.from_dict({**doc, "version": 99}, "gate")
    gate_file.unlink()
    with pytest.raises(MrlError, match=r"gate-[0-9a-f]{16}\.json \(the gate: missing or altered\)"):
        MrlIndex.open(root)


@pytest.fixture(scope="module")
def ivf_setup(tmp_path_factory):
    xb, spectrum = _corpus(n=24_000, seed=5)
    index = MrlIndex.build(tmp_path_factory.mktemp("w") / "i", xb, first_stages=["ivf8@32"], dtype="float32")
    return index, xb, spectrum


def test_a_width_gate_on_an_inverted_file_holds_the_target_and_scans_fewer_lists(ivf_setup):
    index, xb, spectrum = ivf_setup
    fixed, target = "ivf8@32:100/32,64:10", 0.95
    tuning, held_out = _queries(xb, spectrum, 600, seed=6), _queries(xb, spectrum, 600, seed=7)
    truth = index.exact_search(held_out, 10).ids
    assert per_query_recall(index.search(held_out, 10, fixed).ids, truth).mean() >= target
    result = tune_adaptive(index, fixed, tuning, 10, target, confidence=0.99, n_single=5)
    gate = result.gate
    assert gate.axis == "width" and gate.cascade == "ivf8@32:100/64,64:10" and gate.levels == (2, 4, 8, 16, 32, 64)
    index.gate = Gate.from_dict(json.loads(json.dumps(gate.to_dict())))  # as stored and read back
    try:
        work = Work()
        found = index.search(held_out, 10, str(result.cascade), work=work).ids
        fixed_work = Work()
        index.search(held_out, 10, fixed, work=fixed_work)
    finally:
        index.gate = None
    assert per_query_recall(found, truth).mean() >= target
    scanned = np.concatenate(work.stages[0].candidates)  # codes the first stage scanned, per query
    assert scanned.mean() < fixed_work.to_dict()["per_stage"][0]["mean_candidates"]
    assert scanned[0::2].mean() < scanned[1::2].mean()  # easy queries stop at fewer lists than hard ones


def test_a_width_gate_that_always_continues_is_the_fixed_cascade(ivf_setup):
    index, xb, spectrum = ivf_setup
    xq = _queries(xb, spectrum, 60, seed=8)
    fixed = index.search(xq, 10, "ivf8@32:200/16,64:10")
    index.gate = Gate.always_continue("ivf8@32:200/16,64:10", 10, (1, 4, 16), axis="width")
    try:
        gated = index.search(xq, 10, "ivf8@32:200/16,64:10@gate")
        chosen = np.arange(60) % 3  # each query its own width: the fixed cascade at that width
        per_query = index.search_gated(xq, 10, parse_cascade("ivf8@32:200/16,64:10"), index.gate, chosen)
    finally:
        index.gate = None
    np.testing.assert_array_equal(gated.ids, fixed.ids)
    np.testing.assert_array_equal(gated.scores, fixed.scores)
    for li, width in enumerate((1, 4, 16)):
        expected = index.search(xq[chosen == li], 10, f"ivf8@32:200/{width},64:10")
        np.testing.assert_array_equal(per_query.ids[chosen == li], expected.ids)
