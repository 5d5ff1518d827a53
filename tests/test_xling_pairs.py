"""Cross-lingual pairs (``--xling``): the reader's forms and faults, and the stream beside English pairs."""

from __future__ import annotations

import gzip
import json

import pytest
import torch

from mrl.data.xling_pairs import load_xling_pairs
from mrl.errors import MrlError
from mrl.training.checkpoint import list_checkpoints
from mrl.training.config import TrainConfig
from mrl.training.loop import train


def _xling_file(path, records):
    with gzip.open(path, "wt") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    return path


def _debian(lang, n, start=0):
    return [{"id": f"p{i}", "lang": lang, "text": f"lang {lang} long {i}", "en": f"english doc {i}",
             "synopsis_en": f"syn {i}", "synopsis": f"{lang} syn {i}"} for i in range(start, start + n)]


def test_debian_xling_files_a_folder_and_a_pairs_file_with_a_language_column(tmp_path):
    folder = tmp_path / "xling"
    folder.mkdir()
    _xling_file(folder / "de.jsonl.gz", _debian("de", 5) + [{**_debian("de", 1, 9)[0], "synopsis": ""}])
    _xling_file(folder / "fr.jsonl.gz", _debian("fr", 3))
    (folder / "de").mkdir()  # debian-xling's query folders are not training files
    csv = tmp_path / "pairs.csv"
    csv.write_text("anchor,positive,lang\nhallo welt,hello world,de\nciao,hello,it\n")
    p = load_xling_pairs([folder, csv])
    assert p.counts() == {"de": 6, "fr": 3, "it": 1} and p.skipped == 1  # the empty synopsis is no pair
    assert p.queries[0] == "de syn 0" and p.documents[0] == "english doc 0" and p.keys == p.documents
    assert "hallo welt" in p.queries
    only = load_xling_pairs([folder], langs=["fr"])
    assert only.counts() == {"fr": 3}
    a, b = (load_xling_pairs([folder, csv], limit=2, seed=s) for s in (1, 1))
    assert a == b and a.counts() == {"de": 2, "fr": 2, "it": 1}  # per language, seeded
    others = [load_xling_pairs([folder], limit=2, seed=s).queries for s in range(2, 8)]
    assert any(q != a.queries[:4] for q in others)


@pytest.mark.parametrize(("name", "content", "message"), [
    ("de.jsonl", '{"id": "x", "en": "doc"}\n', r"de.jsonl:1: column 'synopsis' must be a non-empty string"),
    ("de.jsonl", '{"synopsis": "s", "en": "  "}\n', r"de.jsonl:1: column 'en' must be a non-empty string"),
    ("p.jsonl", '{"anchor": "a", "positive": "b", "lang": "de"}\n{"anchor": "a", "positive": "b"}\n',
     r"p.jsonl:2: column 'lang' \(the query's language\) must be a non-empty string"),
    ("p.jsonl", '{"anchor": "a", "positive": "b", "lang": "german!"}\n', r"p.jsonl:1: unknown language 'german!'"),
    ("p.jsonl", '{"query": "a", "doc": "b"}\n', r"p.jsonl:1: a cross-lingual pair needs 'synopsis' and 'en'"),
    ("p.jsonl", "\n", r"p.jsonl: no cross-lingual pairs"),
    ("p.txt", "a\tb\n", r"p.txt: a cross-lingual file is .jsonl\[.gz\] or .csv"),
])
def test_bad_cross_lingual_files_are_named_with_their_line(tmp_path, name, content, message):
    (tmp_path / name).write_text(content)
    with pytest.raises(MrlError, match=message):
        load_xling_pairs([tmp_path / name])


def test_a_language_with_no_pairs_and_missing_paths_are_named(tmp_path):
    path = _xling_file(tmp_path / "de.jsonl.gz", _debian("de", 3))
    with pytest.raises(MrlError, match=r"--xling-langs: no pairs in language 'ja' \(found: de\)"):
        load_xling_pairs([path], langs=["de", "ja"])
    with pytest.raises(MrlError, match="--xling: file not found"):
        load_xling_pairs([tmp_path / "nope.jsonl"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(MrlError, match="a folder with no <lang>.jsonl"):
        load_xling_pairs([tmp_path / "empty"])
    with pytest.raises(MrlError, match="--xling-limit must be >= 1"):
        load_xling_pairs([path], limit=0)


@pytest.fixture(scope="module")
def tiny_xling(tiny_beir, tmp_path_factory):
    """A 'translation' of each tiny train query (its words reversed) beside its English document."""
    from mrl.data.pairs import pairs_from_beir

    pairs = pairs_from_beir(tiny_beir, "train")
    folder = tmp_path_factory.mktemp("tiny-xling")
    rows = [{"anchor": " ".join(reversed(q.split())) + " xx", "positive": d, "lang": "xx"}
            for q, d in zip(pairs.anchors, pairs.positives)]
    with open(folder / "xx.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    return folder / "xx.jsonl"


def _cfg(tiny_model_dir, tiny_beir, xling, out, **kw):
    base = dict(model=str(tiny_model_dir), data=str(tiny_beir), output=str(out), dims=(16, 32, 64), batch_size=8,
                lr=1e-3, max_steps=24, max_seq_length=48, device="cpu", seed=3, xling=(str(xling),),
                xling_weight=0.5)
    base.update(kw)
    return TrainConfig(**base)


def test_each_stream_loss_falls_and_a_resumed_run_ends_where_the_whole_run_ends(tiny_model_dir, tiny_beir,
                                                                                  tiny_xling, tmp_path):
    from safetensors.torch import load_file

    whole = tmp_path / "whole"
    summary = train(_cfg(tiny_model_dir, tiny_beir, tiny_xling, whole), progress=False)
    assert summary["xling_records"] == {"xx": 96} and summary["pairs_per_step"] == 16
    log = [json.loads(line) for line in (whole / "train_log.jsonl").read_text().splitlines()]
    for term in ("infonce", "xling_infonce"):
        first = sum(sum(e["terms"][term].values()) for e in log[:4])
        last = sum(sum(e["terms"][term].values()) for e in log[-4:])
        assert last < 0.8 * first, (term, first, last)
    part = tmp_path / "part"
    train(_cfg(tiny_model_dir, tiny_beir, tiny_xling, part, max_steps=24, checkpoint_every=8,
               remove_checkpoints=False), progress=False)
    assert [int(p.stem.split("-")[-1]) for p in list_checkpoints(part)] == [8, 16]
    list_checkpoints(part)[-1].unlink()  # back to step 8: the batch plan of both streams must replay
    train(_cfg(tiny_model_dir, tiny_beir, tiny_xling, part, checkpoint_every=8, resume=True), progress=False)
    after, resumed = load_file(str(whole / "model.safetensors")), load_file(str(part / "model.safetensors"))
    for name in after:
        torch.testing.assert_close(resumed[name], after[name], atol=1e-5, rtol=1e-4, msg=name)


def test_resume_after_the_cross_lingual_data_changed_is_refused(tiny_model_dir, tiny_beir, tiny_xling, tmp_path):
    out, data = tmp_path / "o", tmp_path / "xx.jsonl"
    data.write_text(tiny_xling.read_text())
    train(_cfg(tiny_model_dir, tiny_beir, data, out, max_steps=4, checkpoint_every=2, remove_checkpoints=False),
          progress=False)
    data.write_text(tiny_xling.read_text().replace(' xx"', ' yy"'))
    with pytest.raises(MrlError, match="the training data changed"):
        train(_cfg(tiny_model_dir, tiny_beir, data, out, max_steps=4, checkpoint_every=2, resume=True),
              progress=False)


def test_the_cross_lingual_stream_reads_queries_as_queries_and_documents_as_documents(tiny_model_dir, tiny_beir,
                                                                                        tiny_xling, tmp_path):
    from mrl.data.pairs import load_training_data
    from mrl.training.objective import build_objective

    cfg = _cfg(tiny_model_dir, tiny_beir, tiny_xling, tmp_path / "o")
    xling = load_xling_pairs([tiny_xling])
    objective = build_objective(cfg, 64, load_training_data(cfg.data), None, lambda t: [len(x) for x in t],
                                xling=xling)
    pairs, cross = objective.streams
    assert (pairs.name, cross.name) == ("pairs", "xling") and cross.kinds == ("query", "document")
    assert cross.columns == (xling.queries, xling.documents) and cross.loss.terms[0].weight == 0.5
    assert list(objective.modules()) == ["pairs", "xling"]


def test_the_cli_names_bad_cross_lingual_input_before_any_step(tiny_model_dir, tiny_xling, tmp_path):
    from typer.testing import CliRunner

    from mrl.cli.main import app

    base = ["train", "--model", str(tiny_model_dir), "-o", str(tmp_path / "o"), "--device", "cpu", "--max-steps", "2"]
    for extra, message in ((["--xling", str(tmp_path / "none.jsonl")], "--xling: file not found"),
                           (["--xling", str(tiny_xling), "--xling-langs", "de"],
                            "--xling-langs: no pairs in language 'de' (found: xx)"),
                           (["--xling", str(tiny_xling), "--xling-limit", "0"], "--xling-limit")):
        result = CliRunner().invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
    assert not (tmp_path / "o" / "model.safetensors").exists()
