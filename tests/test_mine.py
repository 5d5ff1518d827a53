"""``mrl mine``: hard negatives mined with the model, never a judged positive, in the format train reads."""

from __future__ import annotations

import json

import numpy as np
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.data.beir import load_beir
from mrl.data.pairs import load_pairs
from mrl.encoders.model import encode, load_model
from mrl.training.config import TrainConfig
from mrl.training.loop import train


def test_mined_triplets_are_hard_valid_and_trainable(tiny_model_dir, tiny_beir, tmp_path):
    out = tmp_path / "mined.jsonl"
    result = CliRunner().invoke(app, ["mine", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "-o",
                                      str(out), "--num-negatives", "2", "--range-max", "40", "--relative-margin", "0",
                                      "--device", "cpu"])
    assert result.exit_code == 0, result.output
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    ds = load_beir(tiny_beir, "train")
    # an untrained tiny encoder scores everything alike, so many pairs find no negative below the positive
    assert 10 <= len(rows) <= len(ds.qrels) and "of 96 pairs" in result.output
    model = load_model(str(tiny_model_dir), "cpu")
    doc_ids = list(ds.corpus)
    xb = encode(model, [ds.corpus[d] for d in doc_ids])
    for row in rows:
        assert ds.queries[row["anchor_id"]] == row["anchor"] and ds.corpus[row["positive_id"]] == row["positive"]
        scores = xb @ encode(model, [row["anchor"]])[0]
        rank_41 = np.sort(scores)[::-1][40]  # range_max 40, plus the positive itself
        for name in ("negative_1", "negative_2"):
            neg_id = row[name.replace("negative", "negative_id", 1)]
            assert ds.corpus[neg_id] == row[name] and neg_id not in ds.qrels[row["anchor_id"]]
            # mined with the model: among its highest-ranked documents. The untrained encoder scores all documents
            # within a few hundredths of each other, and sentence-transformers 6.3 scores them up to ~1e-3 apart
            # from this encode (seen: 0.8972 against a 41st of 0.8980), so the boundary gets that slack
            assert scores[doc_ids.index(neg_id)] >= rank_41 - 5e-3
    pairs = load_pairs(out)
    assert len(pairs.negatives) == 2 and pairs.column_ids is not None and len(pairs.column_ids) == 4
    summary = train(TrainConfig(model=str(tiny_model_dir), data=str(out), output=str(tmp_path / "m"), dims=(16, 64),
                                batch_size=8, max_steps=2, max_seq_length=48, device="cpu"), progress=False)
    assert summary["steps"] == 2


def test_bad_mining_options_are_named(tiny_model_dir, tiny_beir, tmp_path):
    runner = CliRunner()
    base = ["mine", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "-o", str(tmp_path / "m.jsonl")]
    for extra, message in [(["--range-min", "60"], "--range-min 60 must be >= 0 and below --range-max 50"),
                           (["--relative-margin", "1.5"], "--relative-margin must be in [0, 1)"),
                           (["--sampling", "best"], "--sampling must be 'top' or 'random'")]:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "m.jsonl").exists()
