from __future__ import annotations

import pytest
import torch
from conftest import synthetic_texts

from mrl.encoders.model import load_model, preprocess
from mrl.errors import MrlError
from mrl.losses import MatryoshkaInfoNCELoss
from mrl.prefix import default_dims


@pytest.fixture(scope="module")
def model(tiny_model_dir):
    m = load_model(str(tiny_model_dir), device="cpu")
    m.eval()  # no dropout: both losses see identical embeddings
    return m


def _features(model, n_cols: int, b: int = 8):
    texts = synthetic_texts(b * n_cols, seed=5)
    return [preprocess(model, texts[i * b : (i + 1) * b], "cpu") for i in range(n_cols)]


def _value_and_grads(model, loss_fn, feats):
    model.zero_grad()
    loss = loss_fn([dict(f) for f in feats], None)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return loss.detach(), grads


@pytest.mark.parametrize("n_cols,weights", [(2, None), (3, [1.0, 2.0, 0.5, 1.0])])
def test_matches_sentence_transformers_matryoshka_loss(model, n_cols, weights):
    from sentence_transformers.sentence_transformer.losses import MatryoshkaLoss, MultipleNegativesRankingLoss

    dims = [8, 16, 32, 64]
    feats = _features(model, n_cols)
    ours, g_ours = _value_and_grads(model, MatryoshkaInfoNCELoss(model, dims, weights), feats)
    ref_fn = MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), dims, weights)
    ref, g_ref = _value_and_grads(model, ref_fn, feats)
    # float32 sums in another order: a relative tolerance of ~100 ulp, not an absolute one
    assert float(ours) == pytest.approx(float(ref), rel=1e-5)
    assert g_ours.keys() == g_ref.keys() and len(g_ours) > 10
    for name in g_ref:
        torch.testing.assert_close(g_ours[name], g_ref[name], atol=1e-5, rtol=1e-4, msg=name)


def test_single_dim_equals_inner_infonce_and_does_not_patch_forward(model):
    from sentence_transformers.sentence_transformer.losses import MultipleNegativesRankingLoss

    feats = _features(model, 2)
    forward = model.forward
    ours = MatryoshkaInfoNCELoss(model, [64])([dict(f) for f in feats])
    assert model.forward == forward  # nothing patched
    ref = MultipleNegativesRankingLoss(model)([dict(f) for f in feats], None)
    # two float32 losses of ~2 summed in another order differ by a few ulp (2.4e-7 each): compare relatively
    assert float(ours.detach()) == pytest.approx(float(ref.detach()), rel=1e-5)


def test_self_distillation_adds_a_term_per_prefix(model):
    feats = _features(model, 2)
    fn = MatryoshkaInfoNCELoss(model, [16, 32, 64], distill_weight=1.0, return_components=True)
    terms = fn([dict(f) for f in feats])
    assert set(terms) == {"infonce_16", "infonce_32", "infonce_64", "distill_16", "distill_32"}
    assert all(float(v.detach()) >= 0 for v in terms.values()) and float(terms["distill_16"].detach()) > 0
    assert set(fn.last_losses) == {16, 32, 64}


def test_default_dims():
    assert default_dims(384) == [32, 64, 128, 256, 384]
    assert default_dims(64) == [32, 64]


@pytest.mark.parametrize(
    "dims,weights,message",
    [
        ([], None, "dims is empty"),
        ([0, 64], None, "dim 0 is not a positive integer"),
        ([32, 32, 64], None, "dims are duplicated: 32"),
        ([32, 128], None, "dim 128 is larger than the model dimension 64"),
        ([32, 64], [1.0], "1 weights given for 2 dims"),
        ([32, 64], [1.0, -1.0], "must be non-negative"),
        ([32, 64], [float("nan"), 1.0], "must be finite numbers"),
        ([32, 64], [0.0, 0.0], "all zero"),
    ],
)
def test_validation_names_the_bad_value(model, dims, weights, message):
    with pytest.raises(MrlError, match=message):
        MatryoshkaInfoNCELoss(model, dims, weights)


def test_works_as_loss_of_a_plain_sentence_transformers_trainer(tiny_model_dir, tmp_path):
    from datasets import Dataset
    from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments

    model = load_model(str(tiny_model_dir), device="cpu")
    texts = synthetic_texts(32, seed=9)
    ds = Dataset.from_dict({"anchor": texts[:16], "positive": texts[16:]})
    loss = MatryoshkaInfoNCELoss(model, [16, 32, 64], return_components=True)
    before = [p.detach().clone() for p in model.parameters()]
    args = SentenceTransformerTrainingArguments(output_dir=str(tmp_path), per_device_train_batch_size=8,
                                                max_steps=2, report_to="none", save_strategy="no", use_cpu=True)
    SentenceTransformerTrainer(model=model, args=args, train_dataset=ds, loss=loss).train()
    assert set(loss.last_losses) == {16, 32, 64}
    assert any(not torch.equal(a, b.detach()) for a, b in zip(before, model.parameters()))
