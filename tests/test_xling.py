"""Cross-lingual evaluation (debian-xling layout): every language per prefix, against the same queries in English."""

from __future__ import annotations

import gzip
import json

import pytest
from typer.testing import CliRunner

from mrl.cli.main import app
from mrl.data.beir import load_beir
from mrl.errors import MrlError


def _write_lang(folder, lang, queries, qrels):
    (folder / lang / "qrels").mkdir(parents=True)
    with gzip.open(folder / lang / "queries-test.jsonl.gz", "wt") as f:
        for q, t in queries.items():
            f.write(json.dumps({"_id": q, "text": t}) + "\n")
    with open(folder / lang / "qrels" / "test.tsv", "w") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for q in queries:
            for d, s in qrels[q].items():
                f.write(f"{q}\t{d}\t{s}\n")


@pytest.fixture()
def xling(tiny_beir, tmp_path):
    ds = load_beir(tiny_beir, "test")
    qids = sorted(ds.queries)
    folder = tmp_path / "xling"
    # "same": the English text itself (its share must be exactly 1); "rev": words reversed in order and spelling
    _write_lang(folder, "same", {q: ds.queries[q] for q in qids[:12]}, ds.qrels)
    _write_lang(folder, "rev", {q: " ".join(w[::-1] for w in ds.queries[q].split()[::-1]) for q in qids[4:20]},
                ds.qrels)
    return folder


def test_every_language_per_dim_with_its_share_of_english(tiny_model_dir, tiny_beir, xling, tmp_path):
    out = tmp_path / "report.json"
    result = CliRunner().invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(tiny_beir),
                                      "--xling", str(xling), "--dims", "16,32", "--json", str(out), "--device", "cpu"])
    assert result.exit_code == 0, result.output
    assert "cross-lingual nDCG@10" in result.output and "rev" in result.output
    doc = json.loads(out.read_text())
    xl = doc["cross_lingual"]
    assert xl["dims"] == [16, 32, 64] and set(xl["languages"]) == {"rev", "same"}
    assert xl["languages"]["same"]["n_queries"] == 12 and xl["languages"]["rev"]["n_queries"] == 16
    for d in ("16", "32", "64"):
        same = xl["languages"]["same"][d]
        assert same["share"] == pytest.approx(1.0) and same["ndcg@10"] == pytest.approx(same["en_ndcg@10"])
        rev = xl["languages"]["rev"][d]
        assert rev["share"] == pytest.approx(rev["ndcg@10"] / rev["en_ndcg@10"])
        # the English of all test queries is the ordinary report's score
        assert xl["english_ndcg@10"][d] == pytest.approx(doc["dims"][d]["ndcg@10"])


def test_bad_cross_lingual_input_is_named(tiny_model_dir, tiny_beir, xling, tmp_path):
    runner = CliRunner()
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "--device", "cpu"]
    cases = [
        (["--xling", str(tmp_path / "none")], "cross-lingual folder not found"),
        (["--xling", str(xling), "--langs", "de"], "no language 'de' (found: rev, same)"),
        (["--langs", "de"], "--langs needs --xling"),
    ]
    with open(xling / "rev" / "qrels" / "test.tsv", "a") as f:
        f.write("q124\tnot-a-doc\t1\n")
    cases.append((["--xling", str(xling), "--langs", "rev"], "1 document id(s) not in the English corpus"))
    for extra, message in cases:
        result = runner.invoke(app, [*base, *extra])
        assert result.exit_code != 0 and message in " ".join(result.output.split()), result.output
    from mrl.data.xling import languages

    with pytest.raises(MrlError, match="no <lang>/queries-dev.jsonl"):
        languages(xling, "dev")


def test_a_saved_corpus_gives_the_same_report_and_a_per_language_plot(tiny_model_dir, tiny_beir, xling, tmp_path):
    import shutil

    runner = CliRunner()
    vectors = tmp_path / "corpus-vectors"
    result = runner.invoke(app, ["encode", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "--out",
                                 str(vectors), "--shard-size", "64", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    base = ["eval", "--model", str(tiny_model_dir), "--data", str(tiny_beir), "--xling", str(xling), "--device",
            "cpu", "--dims", "16,32"]
    assert runner.invoke(app, [*base, "--json", str(tmp_path / "a.json")]).exit_code == 0
    result = runner.invoke(app, [*base, "--corpus-embeddings", str(vectors), "--json", str(tmp_path / "b.json"),
                                 "--plot", str(tmp_path / "p.png")])
    assert result.exit_code == 0, result.output
    a, b = (json.loads((tmp_path / f"{n}.json").read_text()) for n in "ab")
    for d in ("16", "32", "64"):
        assert b["dims"][d]["ndcg@10"] == pytest.approx(a["dims"][d]["ndcg@10"], abs=1e-6)
        for lang in ("rev", "same"):
            assert b["cross_lingual"]["languages"][lang][d]["ndcg@10"] == pytest.approx(
                a["cross_lingual"]["languages"][lang][d]["ndcg@10"], abs=1e-6)
    assert (tmp_path / "p.png").stat().st_size > 1000 and (tmp_path / "p-xling.png").stat().st_size > 1000
    # vectors of another model (another file in its folder) or of another corpus are refused
    other = tmp_path / "other-model"
    shutil.copytree(tiny_model_dir, other)
    (other / "README.md").write_text("changed\n")
    result = runner.invoke(app, [*base[:2], str(other), *base[3:], "--corpus-embeddings", str(vectors)])
    assert result.exit_code != 0 and "encoded by another model" in " ".join(result.output.split()), result.output
    small = tmp_path / "small-beir"
    shutil.copytree(tiny_beir, small)
    with gzip.open(small / "corpus.jsonl.gz", "at") as f:
        f.write(json.dumps({"_id": "extra-doc", "title": "", "text": "one more"}) + "\n")
    result = runner.invoke(app, ["eval", "--model", str(tiny_model_dir), "--data", str(small), "--device", "cpu",
                                 "--corpus-embeddings", str(vectors)])
    assert result.exit_code != 0 and "1 document(s) of the corpus are not in it, e.g. 'extra-doc'" in " ".join(
        result.output.split()), result.output
