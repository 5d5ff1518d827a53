"""A model with query/document prompts (as multilingual-e5-small has) gets each prompt once and only once,
on every path that encodes text: encode, eval, cross-lingual eval, `mrl encode`, training, teachers, the saved model.

A forward pre-hook on the tiny model's Transformer module decodes what the model really reads.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from mrl.data.beir import load_beir
from mrl.encoders.model import encode, load_model, preprocess, prompt_name
from mrl.training.config import TrainConfig

# words the tiny WordPiece vocabulary can spell (it has no ':' and no 'q'), and that no test text holds
PROMPTS = {"query": "asking ", "document": "passages "}


@pytest.fixture(scope="module")
def prompted_model(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("prompted") / "model"
    shutil.copytree(tiny_model_dir, folder)
    path = folder / "config_sentence_transformers.json"
    config = json.loads(path.read_text()) if path.exists() else {}
    path.write_text(json.dumps({**config, "prompts": PROMPTS, "default_prompt_name": None}))
    return folder


def _spy(model) -> list[str]:
    """Every text the model's encoder reads from now on, decoded."""
    seen: list[str] = []
    tok = model.tokenizer

    def hook(_module, args):
        seen.extend(tok.batch_decode(args[0]["input_ids"], skip_special_tokens=True))

    model[0].register_forward_pre_hook(hook)
    return seen


def _kinds(seen: list[str]) -> dict[str, int]:
    """How many texts read carry 0, 1 or 2+ prompts, by prompt."""
    counts = {"query": 0, "passage": 0, "none": 0, "twice": 0}
    for text in seen:
        words = text.replace(" ##", "").split()  # the tiny tokenizer has no WordPiece decoder
        q, p = words.count("asking"), words.count("passages")
        if q + p > 1:
            counts["twice"] += 1
        elif q == 1 and words[0] == "asking":
            counts["query"] += 1
        elif p == 1 and words[0] == "passages":
            counts["passage"] += 1
        else:
            counts["none"] += 1
    return counts


def test_encode_applies_the_prompt_of_the_kind_once(prompted_model: Path) -> None:
    model = load_model(str(prompted_model), "cpu")
    texts = ["python library for images", "network file server"]
    assert prompt_name(model, "query") == "query" and prompt_name(model, "document") == "document"
    np.testing.assert_allclose(encode(model, texts, kind="query"), encode(model, ["asking " + t for t in texts]),
                               atol=1e-6)
    np.testing.assert_allclose(encode(model, texts, kind="document"),
                               encode(model, ["passages " + t for t in texts]), atol=1e-6)
    seen = _spy(model)
    encode(model, texts, kind="query")
    encode(model, texts)
    assert _kinds(seen) == {"query": 2, "passage": 0, "none": 2, "twice": 0}
    feats = preprocess(model, texts, "cpu", "document")
    assert _kinds(model.tokenizer.batch_decode(feats["input_ids"], skip_special_tokens=True))["passage"] == 2


def test_training_tokenizes_as_encode_does_with_a_default_prompt(prompted_model: Path) -> None:
    model = load_model(str(prompted_model), "cpu")
    model.eval()
    model.default_prompt_name = "document"
    texts = ["python library for images"]
    for kind in (None, "query"):
        x = model(preprocess(model, texts, "cpu", kind))["sentence_embedding"].detach().numpy()
        np.testing.assert_allclose(x, encode(model, texts, kind=kind), atol=1e-5)


def test_a_model_without_prompts_encodes_the_texts_as_they_are(tiny_model_dir: Path) -> None:
    model = load_model(str(tiny_model_dir), "cpu")  # Sentence-Transformers 6 saves empty query/document prompts
    assert not (model.prompts or {}).get(prompt_name(model, "query") or "", "")
    np.testing.assert_array_equal(encode(model, ["a b"], kind="query"), encode(model, ["a b"]))
    with pytest.raises(ValueError, match="kind must be 'query' or 'document', got 'passage'"):
        prompt_name(model, "passage")  # type: ignore[arg-type]


def test_eval_and_cross_lingual_eval_prompt_queries_and_documents(prompted_model: Path, tiny_beir: Path,
                                                                  tmp_path: Path) -> None:
    from mrl.data.xling import load_cross_lingual
    from mrl.eval.evaluate import evaluate
    from mrl.eval.xling import evaluate_cross_lingual

    model = load_model(str(prompted_model), "cpu")
    data = load_beir(tiny_beir, "test")
    seen = _spy(model)
    evaluate(model, data, dims=[16, 64], show_progress=False)
    assert _kinds(seen) == {"query": len(data.queries), "passage": len(data.corpus), "none": 0, "twice": 0}

    xl = tmp_path / "xling" / "xx"
    (xl / "qrels").mkdir(parents=True)
    (xl / "queries-test.jsonl").write_text("".join(json.dumps({"_id": q, "text": t[::-1]}) + "\n"
                                                   for q, t in data.queries.items()))
    shutil.copy(tiny_beir / "qrels" / "test.tsv", xl / "qrels" / "test.tsv")
    seen.clear()
    evaluate_cross_lingual(model, data, [load_cross_lingual(tmp_path / "xling", "xx", "test", data.corpus)], [16],
                           show_progress=False)
    assert _kinds(seen) == {"query": 2 * len(data.queries), "passage": len(data.corpus), "none": 0, "twice": 0}


def test_encode_command_prompts_by_what_it_encodes(prompted_model: Path, tiny_beir: Path, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    import mrl.encoders.model as encoders_model
    from mrl.encoders.shards import encode_shards

    seen: list[str] = []
    real = encoders_model.load_model

    def spied(*args, **kwargs):
        model = real(*args, **kwargs)
        seen_here = _spy(model)
        seen_lists.append(seen_here)
        return model

    seen_lists: list[list[str]] = []
    monkeypatch.setattr(encoders_model, "load_model", spied)
    data = load_beir(tiny_beir, "test")
    encode_shards(str(prompted_model), list(data.corpus.values()), list(data.corpus), tmp_path / "c", "c",
                  kind="document")
    encode_shards(str(prompted_model), list(data.queries.values()), list(data.queries), tmp_path / "q", "q",
                  kind="query")
    seen = [t for s in seen_lists for t in s]
    assert _kinds(seen) == {"query": len(data.queries), "passage": len(data.corpus), "none": 0, "twice": 0}


def test_training_prompts_anchors_as_queries_and_positives_as_documents(prompted_model: Path, tiny_beir: Path,
                                                                        tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    import mrl.training.loop as loop
    from mrl.training.loop import train

    seen: list[list[str]] = []
    real_preprocess = loop.preprocess

    def spied_preprocess(model, texts, device, kind=None):
        feats = real_preprocess(model, texts, device, kind)
        seen.append(model.tokenizer.batch_decode(feats["input_ids"], skip_special_tokens=True))
        return feats

    monkeypatch.setattr(loop, "preprocess", spied_preprocess)
    out = tmp_path / "run"
    train(TrainConfig(model=str(prompted_model), data=str(tiny_beir), output=str(out), dims=(16, 64), batch_size=8,
                      max_steps=2, max_seq_length=48, device="cpu", seed=3, head="orthogonal"), progress=False)
    # per step: the anchors' batch, then the positives'
    assert [_kinds(batch) for batch in seen] == [{"query": 8, "passage": 0, "none": 0, "twice": 0},
                                                 {"query": 0, "passage": 8, "none": 0, "twice": 0}] * 2
    # the trained model (with its head) keeps the prompts
    trained = load_model(str(out), "cpu")
    assert trained.prompts == PROMPTS and trained.default_prompt_name is None


def test_a_prompted_teacher_encodes_queries_and_documents_with_their_prompts(prompted_model: Path, tiny_beir: Path,
                                                                            tmp_path: Path) -> None:
    from mrl.training import teacher as teachers

    model = load_model(str(prompted_model), "cpu")
    t = teachers.from_model(str(prompted_model), {"query": ["a b", "c"], "document": ["a b"]}, tmp_path, "cpu")
    np.testing.assert_allclose(t.lookup([teachers.text_key("a b", "query")]), encode(model, ["a b"], kind="query"),
                               atol=1e-6)
    np.testing.assert_allclose(t.lookup([teachers.text_key("a b", "document")]),
                               encode(model, ["a b"], kind="document"), atol=1e-6)
    assert len(list(tmp_path.iterdir())) == 2
