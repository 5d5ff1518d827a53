"""Distillation into every prefix: the inner losses by hand, teachers of every kind, parallel data, bad input."""

from __future__ import annotations

import gzip
import json
import random

import numpy as np
import pytest
import torch
from conftest import WORDS, build_tiny_model, synthetic_texts

from mrl.data import vectors as shards
from mrl.data.parallel import load_parallel
from mrl.encoders.model import encode, load_model
from mrl.errors import MrlError
from mrl.losses import DistillKL, DistillMSE, InfoNCE, MatryoshkaLoss, Term
from mrl.prefix import truncate
from mrl.training.config import TrainConfig
from mrl.training.loop import train

CIPHER = dict(zip(WORDS, random.Random(7).sample(WORDS, len(WORDS))))


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def _fixed(seed: int, *shape: int) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=shape).astype(np.float64))


def test_wrapped_mse_equals_a_hand_computation_per_prefix():
    student = [_fixed(1, 4, 8), _fixed(2, 4, 8)]
    teacher = [_fixed(3, 4, 8), _fixed(4, 4, 8)]
    dims, weights = [2, 4, 8], [1.0, 2.0, 3.0]
    loss = MatryoshkaLoss([Term("mse", DistillMSE(), 0.5, teacher="given")], dims, weights)
    got = loss.components(student, teacher)
    for d, w in zip(dims, weights):
        per_col = [np.mean(np.sum((_unit(s.numpy()[:, :d]) - _unit(t.numpy()[:, :d])) ** 2, axis=1))
                   for s, t in zip(student, teacher)]
        assert float(got[f"mse_{d}"]) == pytest.approx(0.5 * w * np.mean(per_col), rel=1e-12)
        assert loss.last_terms["mse"][d] == pytest.approx(np.mean(per_col), rel=1e-12)
    # the full view compares every prefix with the teacher's whole (renormalised) vector
    full = MatryoshkaLoss([Term("mse", DistillMSE(), teacher="given", teacher_view="full")], [8])
    hand = np.mean([np.mean(np.sum((_unit(s.numpy()) - _unit(t.numpy())) ** 2, axis=1))
                    for s, t in zip(student, teacher)])
    assert float(full(student, teacher)) == pytest.approx(hand, rel=1e-12)


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(axis=1, keepdims=True)
    return x - np.log(np.exp(x).sum(axis=1, keepdims=True))


@pytest.mark.parametrize("view", ["prefix", "full"])
def test_wrapped_kl_equals_a_hand_computation_per_prefix(view):
    student = [_fixed(5, 4, 8), _fixed(6, 4, 8), _fixed(7, 4, 8)]  # anchors, positives, hard negatives
    teacher = [_fixed(8, 4, 6), _fixed(9, 4, 6), _fixed(10, 4, 6)]  # 6 wide: "full" needs no equal width
    dims, scale, t = [2, 4, 8] if view == "full" else [2, 4], 20.0, 2.0
    loss = MatryoshkaLoss([Term("kl", DistillKL(scale, t), teacher="given", teacher_view=view)], dims)
    got = loss.components(student, teacher)
    for d in dims:
        s = [_unit(c.numpy()[:, :d]) for c in student]
        k = [_unit(c.numpy()[:, :d] if view == "prefix" else c.numpy()) for c in teacher]
        log_p_student = _log_softmax(scale * s[0] @ np.concatenate(s[1:]).T / t)
        log_p_teacher = _log_softmax(scale * k[0] @ np.concatenate(k[1:]).T / t)
        kl = np.sum(np.exp(log_p_teacher) * (log_p_teacher - log_p_student)) / 4 * t * t
        assert float(got[f"kl_{d}"]) == pytest.approx(kl, rel=1e-10)


def test_a_teacher_of_another_width():
    student = [_fixed(11, 4, 8).float().requires_grad_(), _fixed(12, 4, 8).float()]
    teacher = [_fixed(13, 4, 6).float(), _fixed(14, 4, 6).float()]
    with pytest.raises(MrlError, match="teacher is 6-dimensional, so it has no 8-dim prefix"):
        MatryoshkaLoss([Term("mse", DistillMSE(), teacher="given")], [4, 8])(student, teacher)
    mse = DistillMSE(teacher_dim=6, dims=[4, 8])  # a learned map from each student prefix into the teacher's width
    loss = MatryoshkaLoss([Term("mse", mse, teacher="given", teacher_view="full")], [4, 8])
    value = loss(student, teacher)
    value.backward()
    assert student[0].grad is not None and all(p.grad is not None for p in mse.parameters())
    assert {p.shape for p in mse.parameters()} == {torch.Size([6, 4]), torch.Size([6, 8])}


def test_infonce_and_distillation_sum_with_their_weights():
    student = [_fixed(15, 4, 8), _fixed(16, 4, 8)]
    teacher = [_fixed(17, 4, 8), _fixed(18, 4, 8)]
    parts = [Term("infonce", InfoNCE(20.0)), Term("mse", DistillMSE(), 0.25, {4: 1.0, 8: 1.0}, teacher="given")]
    both = MatryoshkaLoss(parts, [4, 8], [3.0, 1.0])
    alone_nce = MatryoshkaLoss(parts[:1], [4, 8], [3.0, 1.0])(student)
    alone_mse = MatryoshkaLoss(parts[1:], [4, 8])(student, teacher)
    assert float(both(student, teacher)) == pytest.approx(float(alone_nce) + float(alone_mse), rel=1e-12)
    assert set(both.last_terms) == {"infonce", "mse"} and set(both.last_terms["mse"]) == {4, 8}


def _write_parallel(path, sources, form=("en", "text")):
    with gzip.open(path, "wt", encoding="utf-8") as f:
        for i, s in enumerate(sources):
            f.write(json.dumps({"id": f"p{i}", form[0]: s, form[1]: " ".join(CIPHER[w] for w in s.split())}) + "\n")
    return path


def _cosines(model, teacher, sources, targets, dims):
    s, t = encode(model, targets), encode(teacher, sources)
    return {d: float(np.mean(np.sum(truncate(s, d) * truncate(t, d), axis=1))) for d in dims}


def test_a_student_distilled_on_parallel_data_moves_every_prefix_toward_the_teacher(tiny_model_dir, tmp_path):
    train_src, held_out = synthetic_texts(160, seed=21), synthetic_texts(40, seed=22)
    path = _write_parallel(tmp_path / "xx.jsonl.gz", train_src)
    out = tmp_path / "student"
    dims = (16, 32, 64)
    summary = train(TrainConfig(model=str(tiny_model_dir), data=None, output=str(out), parallel=(str(path),),
                                dims=dims, batch_size=16, lr=2e-3, max_steps=40, max_seq_length=48, device="cpu",
                                seed=1), progress=False)
    teacher = load_model(str(tiny_model_dir), "cpu")
    targets = [" ".join(CIPHER[w] for w in s.split()) for s in held_out]
    before = _cosines(teacher, teacher, held_out, targets, dims)
    after = _cosines(load_model(str(out), "cpu"), teacher, held_out, targets, dims)
    # a random tiny encoder already gives every pair a high cosine: the gap to 1 is what distillation closes
    assert all(1 - after[d] < 0.7 * (1 - before[d]) for d in dims), (before, after)
    log = [json.loads(x) for x in (out / "train_log.jsonl").read_text().splitlines()]
    for d in map(str, dims):
        first = np.mean([e["terms"]["parallel_mse"][d] for e in log[:5]])
        last = np.mean([e["terms"]["parallel_mse"][d] for e in log[-5:]])
        assert last < 0.7 * first, (d, first, last)
    assert summary["distillation"]["teacher"] == str(tiny_model_dir) and summary["parallel_records"] == {"xx": 160}
    # the teacher was encoded once, into the cache, and a second run reuses it
    cache = list((out / "teacher-cache").iterdir())
    assert len(cache) == 1 and shards.read_plan(cache[0])["complete"]


@pytest.fixture(scope="module")
def narrow_teacher(tmp_path_factory):
    return build_tiny_model(tmp_path_factory.mktemp("teacher-48"), hidden=48, dropout=0.0)


@pytest.mark.parametrize("distill", ["mse", "kl"])
def test_pairs_distilled_from_a_teacher_of_another_width(tiny_model_dir, tiny_beir, narrow_teacher, tmp_path,
                                                         distill):
    out = tmp_path / distill
    summary = train(TrainConfig(model=str(tiny_model_dir), data=str(tiny_beir), output=str(out), dims=(16, 32, 64),
                                teacher=str(narrow_teacher), distill=distill, distill_weight=0.5, batch_size=8,
                                max_steps=6, max_seq_length=48, device="cpu"), progress=False)
    assert summary["distillation"]["teacher_dim"] == 48 and summary["distillation"]["kind"] == distill
    terms = summary["final_train_terms"]
    assert set(terms) == {"infonce", distill} and set(terms[distill]) == {"16", "32", "64"}
    assert load_model(str(out), "cpu").get_embedding_dimension() == 64  # the projections are not part of it


def _teacher_folder(folder, ids, dim=64, seed=0):
    x = np.random.default_rng(seed).normal(size=(len(ids), dim)).astype(np.float32)
    plan = shards.start(folder, "api-model", "test", len(ids), 10_000)
    shards.write_shard(plan, 0, x, list(ids))
    shards.finish(plan)
    return folder, x


def _beir_ids(tiny_beir):
    from mrl.data.pairs import pairs_from_beir

    p = pairs_from_beir(tiny_beir, "train")
    return p.column_ids[0], p.column_ids[1]


def test_a_folder_of_precomputed_teacher_vectors_keyed_by_id(tiny_model_dir, tiny_beir, tmp_path):
    qids, dids = _beir_ids(tiny_beir)
    queries, _ = _teacher_folder(tmp_path / "t-queries", qids, seed=1)
    docs, _ = _teacher_folder(tmp_path / "t-docs", dids, seed=2)
    out = tmp_path / "run"
    summary = train(TrainConfig(model=str(tiny_model_dir), data=str(tiny_beir), output=str(out), dims=(16, 32, 64),
                                teacher=f"{queries},{docs}", distill="mse", batch_size=8, max_steps=4,
                                max_seq_length=48, device="cpu"), progress=False)
    assert summary["distillation"]["teacher_dim"] == 64 and "mse" in summary["final_train_terms"]


def _cfg(tiny_model_dir, data, out, **kw):
    return TrainConfig(model=str(tiny_model_dir), data=str(data) if data else None, output=str(out),
                       dims=(16, 32, 64), batch_size=8, max_steps=4, max_seq_length=48, device="cpu", **kw)


def test_bad_teachers_are_named_before_any_step(tiny_model_dir, tiny_beir, tmp_path):
    qids, dids = _beir_ids(tiny_beir)
    queries, _ = _teacher_folder(tmp_path / "q", qids)
    short, _ = _teacher_folder(tmp_path / "d-short", dids[:-1])
    cases = {
        f"{queries},{short}": f"1 positive ids of {tiny_beir} have no teacher vector, e.g. '{dids[-1]}'",
        str(tmp_path / "missing"): "does not exist",
        str(queries): "positive ids .* have no teacher vector",
    }
    x = np.full((len(dids), 64), 0.5, np.float32)
    x[3, 7] = np.nan
    nan = tmp_path / "d-nan"
    plan = shards.start(nan, "api", "t", len(dids), 10_000)
    shards.write_shard(plan, 0, x, list(dids))
    shards.finish(plan)
    cases[f"{queries},{nan}"] = f"the vector of id '{dids[3]}' is not finite"
    narrow, _ = _teacher_folder(tmp_path / "narrow", list(qids) + list(dids), dim=32)
    cases[str(narrow)] = "teacher is 32-dimensional, narrower than the largest Matryoshka dim 64"
    for spec, message in cases.items():
        out = tmp_path / f"run-{abs(hash(spec))}"
        view = "prefix" if spec == str(narrow) else None
        with pytest.raises(MrlError, match=message):
            train(_cfg(tiny_model_dir, tiny_beir, out, teacher=spec, distill="mse", teacher_view=view),
                  progress=False)
        assert not (out / "train_log.jsonl").exists() or not (out / "train_log.jsonl").read_text()
    with pytest.raises(MrlError, match="--distill mse needs --teacher"):
        train(_cfg(tiny_model_dir, tiny_beir, tmp_path / "self-mse", distill="mse", distill_weight=1.0),
              progress=False)


def test_a_pairs_file_without_ids_cannot_use_a_precomputed_teacher(tiny_model_dir, tmp_path):
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": a + " more"}) + "\n"
                             for a in synthetic_texts(20, seed=4)))
    teacher, _ = _teacher_folder(tmp_path / "t", ["x"])
    with pytest.raises(MrlError, match="anchor ids of .* are not named"):
        train(_cfg(tiny_model_dir, pairs, tmp_path / "run", teacher=str(teacher)), progress=False)
    # with anchor_id / positive_id columns it is looked up by them
    texts = synthetic_texts(20, seed=4)
    pairs.write_text("".join(json.dumps({"anchor": a, "positive": a + " more", "anchor_id": f"a{i}",
                                         "positive_id": f"p{i}"}) + "\n" for i, a in enumerate(texts)))
    teacher, _ = _teacher_folder(tmp_path / "t2", [f"a{i}" for i in range(20)] + [f"p{i}" for i in range(20)])
    train(_cfg(tiny_model_dir, pairs, tmp_path / "run2", teacher=str(teacher), distill="mse"), progress=False)


@pytest.mark.parametrize("lines,message", [
    ([{"en": "a b", "text": ""}], r"xx.jsonl:1: column 'text' must be a non-empty string"),
    ([{"en": "a b", "text": "c"}, {"en": "d", "txt": "e"}], r"xx.jsonl:2: column 'text' must be a non-empty"),
    ([{"src": "a", "tgt": "b"}], r"xx.jsonl:1: a parallel record needs 'en' and 'text'"),
    ([], r"xx.jsonl: no parallel records \(the language 'xx' would get no training\)"),
    ([{"source": "a", "target": None}], r"xx.jsonl:1: column 'target' must be a non-empty string, got None"),
])
def test_bad_parallel_files_are_named(tmp_path, lines, message):
    path = tmp_path / "xx.jsonl"
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    with pytest.raises(MrlError, match=message):
        load_parallel([path])


def test_parallel_files_of_both_forms_and_a_limit(tmp_path):
    a = _write_parallel(tmp_path / "de.jsonl.gz", synthetic_texts(30, seed=1))
    b = _write_parallel(tmp_path / "plain.jsonl.gz", synthetic_texts(10, seed=2), form=("source", "target"))
    p = load_parallel([a, b], limit=12, seed=0)
    assert p.counts() == {"de": 12, "plain": 10} and len(p.sources) == len(p.targets) == 22
    assert p.targets[0] == " ".join(CIPHER[w] for w in p.sources[0].split())
    assert load_parallel([a], limit=12, seed=0).sources == p.sources[:12]  # seeded


def test_cli_names_bad_input_and_exits_non_zero(tiny_model_dir, tmp_path):
    from typer.testing import CliRunner

    from mrl.cli.main import app

    bad = tmp_path / "de.jsonl"
    bad.write_text(json.dumps({"en": "x", "text": " "}) + "\n")
    runner = CliRunner()
    cases = [
        (["--parallel", str(bad)], "de.jsonl:1: column 'text' must be a non-empty string"),
        (["--parallel", str(tmp_path / "nope.jsonl")], "--parallel: file not found"),
        (["--parallel", str(bad), "--teacher", str(tmp_path / "no" / "such")], "--teacher: folder does not exist"),
        ([], "give --data (training pairs), --parallel (translations) and/or --xling"),
    ]
    for extra, message in cases:
        result = runner.invoke(app, ["train", "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"),
                                     "--device", "cpu", *extra])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
        assert not (tmp_path / "o" / "train_log.jsonl").exists()
