"""Training streams (columns, kinds, seeded batch plan, loss, teacher keys) and ``--freeze embeddings``."""

from __future__ import annotations

import pytest
import torch

from mrl.data.pairs import load_training_data
from mrl.errors import MrlError
from mrl.losses import InfoNCE, MatryoshkaLoss, Term
from mrl.training.checkpoint import list_checkpoints
from mrl.training.config import TrainConfig
from mrl.training.loop import train
from mrl.training.objective import build_objective
from mrl.training.streams import BatchPlan, Stream


def _cfg(tiny_model_dir, tiny_beir, out, **kw):
    base = dict(model=str(tiny_model_dir), data=str(tiny_beir), output=str(out), dims=(16, 32, 64), batch_size=8,
                lr=1e-3, max_steps=6, max_seq_length=48, device="cpu", seed=3)
    base.update(kw)
    return TrainConfig(**base)


def test_a_batch_plan_is_a_function_of_its_seed():
    keys = [f"k{i % 30}" for i in range(100)]
    lengths = [i % 17 for i in range(100)]
    a = BatchPlan(keys, lengths, 8, 5, 2, None, True, "data")
    b = BatchPlan(keys, lengths, 8, 5, 2, None, True, "data")
    assert [a.batch(s) for s in range(a.total)] == [b.batch(s) for s in range(b.total)]
    assert a.total == 2 * a.per_epoch and a.batch(0) != a.batch(a.per_epoch)  # each epoch its own shuffle
    assert all(len({keys[i] for i in a.batch(s)}) == 8 for s in range(a.total))  # no repeated key in a batch
    other = BatchPlan(keys, lengths, 8, 5, 2, None, True, "data", offset=1)
    assert [a.batch(s) for s in range(4)] != [other.batch(s) for s in range(4)]
    with pytest.raises(MrlError, match="tiny: 3 examples make no full batch of 8"):
        BatchPlan(keys[:3], lengths[:3], 8, 5, 1, None, True, "tiny")


def test_a_stream_checks_its_kinds_and_teacher_keys():
    plan = BatchPlan(["a", "b"], [1, 1], 2, 0, 1, None, True, "d")
    loss = MatryoshkaLoss([Term("infonce", InfoNCE(20.0))], [8, 16], None, 16)
    with pytest.raises(ValueError, match="stream pairs: 1 kinds for 2 columns"):
        Stream("pairs", (["x", "y"], ["u", "v"]), ("query",), plan, loss)


def test_the_objective_holds_one_stream_per_source(tiny_model_dir, tiny_beir, tmp_path):
    cfg = _cfg(tiny_model_dir, tiny_beir, tmp_path / "o")
    pairs = load_training_data(cfg.data, cfg.split)
    objective = build_objective(cfg, 64, pairs, None, lambda texts: [len(t.split()) for t in texts])
    (stream,) = objective.streams
    assert stream.name == "pairs" and stream.kinds == ("query", "document")
    assert stream.columns == (pairs.anchors, pairs.positives) and stream.teacher_keys is None
    assert list(objective.modules()) == ["pairs"]
    x = torch.nn.functional.normalize(torch.randn(8, 64), dim=-1)
    loss = objective([([x, x.clone()], list(range(8)))])
    assert loss.ndim == 0 and set(objective.logs()["dim_loss"]) == {"16", "32", "64"}


def test_freeze_embeddings_keeps_the_token_table_and_checkpoints_only_what_trains(tiny_model_dir, tiny_beir,
                                                                                  tmp_path):
    from safetensors.torch import load_file

    whole = tmp_path / "whole"
    train(_cfg(tiny_model_dir, tiny_beir, whole, freeze=("embeddings",)), progress=False)
    base, after = load_file(str(tiny_model_dir / "model.safetensors")), load_file(str(whole / "model.safetensors"))
    table = "embeddings.word_embeddings.weight"
    torch.testing.assert_close(after[table], base[table], atol=0, rtol=0)
    assert not torch.equal(after["embeddings.position_embeddings.weight"],
                           base["embeddings.position_embeddings.weight"])  # the rest trains
    # a checkpoint holds what trains, and a run resumed from it ends where the whole run ends
    part = tmp_path / "part"
    train(_cfg(tiny_model_dir, tiny_beir, part, freeze=("embeddings",), checkpoint_every=2,
               remove_checkpoints=False), progress=False)
    state = torch.load(list_checkpoints(part)[0], weights_only=False)
    assert not [k for k in state["model"] if "word_embeddings" in k] and any("position" in k for k in state["model"])
    list_checkpoints(part)[-1].unlink()  # back to step 2
    train(_cfg(tiny_model_dir, tiny_beir, part, freeze=("embeddings",), checkpoint_every=2, resume=True),
          progress=False)
    resumed = load_file(str(part / "model.safetensors"))
    for name in after:
        torch.testing.assert_close(resumed[name], after[name], atol=1e-5, rtol=1e-4, msg=name)


def test_freeze_of_an_unknown_part_is_named_before_anything_loads(tmp_path):
    with pytest.raises(MrlError, match=r"--freeze 'encoder': not a part that can be frozen \(choose from: "
                                       r"embeddings\)"):
        TrainConfig(model="m", data="d", output=str(tmp_path), freeze=("encoder",))


def test_freeze_of_a_part_the_model_does_not_have(tiny_model_dir):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Normalize

    from mrl.training.freeze import freeze

    model = SentenceTransformer(modules=[Normalize()], device="cpu")
    with pytest.raises(MrlError, match="--freeze embeddings: bare has no token table"):
        freeze(model, ["embeddings"], "bare")
