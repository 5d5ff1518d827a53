from __future__ import annotations

import json

import pytest
from conftest import SHARED, write_beir

from mrl.data import load_beir, load_pairs, pairs_from_beir
from mrl.errors import MrlError


@pytest.fixture
def small(tmp_path):
    return write_beir(tmp_path / "b", {"d1": "alpha", "d2": "beta"}, {"q1": "a?", "q2": "b?"},
                      {"test": {"q1": {"d1": 1}, "q2": {"d2": 1}}})


def test_load_beir(small):
    ds = load_beir(small, "test")
    assert ds.corpus == {"d1": "alpha", "d2": "beta"} and ds.qrels["q2"] == {"d2": 1}
    assert pairs_from_beir(small, "test").anchors == ["a?", "b?"]


def test_missing_split_names_the_file_and_the_splits_found(small):
    with pytest.raises(MrlError, match=r"qrels/dev.tsv \(splits found: test\)"):
        load_beir(small, "dev")


def test_missing_corpus(small):
    (small / "corpus.jsonl.gz").unlink()
    with pytest.raises(MrlError, match="missing file: .*corpus.jsonl"):
        load_beir(small, "test")


def test_malformed_json_names_file_and_line(small):
    (small / "queries.jsonl").write_text('{"_id": "q1", "text": "a?"}\n{"_id": "q2", \n')
    with pytest.raises(MrlError, match=r"queries.jsonl:2: not valid JSON"):
        load_beir(small, "test")


def test_record_without_text(small):
    (small / "queries.jsonl").write_text('{"_id": "q1"}\n')
    with pytest.raises(MrlError, match=r'queries.jsonl:1: a query record needs string "_id" and "text"'):
        load_beir(small, "test")


def test_qrels_with_unknown_ids(small):
    (small / "qrels" / "test.tsv").write_text("q1\td1\t1\nq2\td7\t1\n")
    with pytest.raises(MrlError, match=r"1 document id\(s\) not in corpus.jsonl, e.g. 'd7'"):
        load_beir(small, "test")
    (small / "qrels" / "test.tsv").write_text("q9\td1\t1\n")
    with pytest.raises(MrlError, match=r"query id\(s\) not in queries.jsonl, e.g. 'q9'"):
        load_beir(small, "test")


def test_malformed_and_empty_qrels(small):
    (small / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1 d1 1\n")
    with pytest.raises(MrlError, match=r"test.tsv:2: expected 3 tab-separated columns, found 1"):
        load_beir(small, "test")
    (small / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n")
    with pytest.raises(MrlError, match="split 'test' is empty"):
        load_beir(small, "test")


@pytest.mark.parametrize("body,message", [
    ("q1\td1\tinf\n", r"test.tsv:1: relevance score 'inf' is not an integer grade"),
    ("q1\td1\t0.5\n", r"test.tsv:1: relevance score '0.5' is not an integer grade"),
    ("q1\td1\tx\n", r"test.tsv:1: relevance score 'x' is not a number"),
    ("q1\td1\t1\nq1\td1\t2\n", r"test.tsv:2: query 'q1' judges document 'd1' twice"),
])
def test_qrels_grades_are_integers_and_judged_once(small, body, message):
    (small / "qrels" / "test.tsv").write_text(body)
    with pytest.raises(MrlError, match=message):
        load_beir(small, "test")


def test_qrels_that_are_not_utf8_name_the_line(small):
    (small / "qrels" / "test.tsv").write_bytes("q1\td1\t1\nq\u00e9\td2\t1\n".encode("latin-1"))
    with pytest.raises(MrlError, match=r"test.tsv:2: not UTF-8 text"):
        load_beir(small, "test")


def test_a_repeated_corpus_id_is_an_error_not_a_silent_overwrite(tmp_path):
    folder = write_beir(tmp_path / "b", {"d1": "alpha"}, {"q1": "a?"}, {"test": {"q1": {"d1": 1}}})
    import gzip

    with gzip.open(folder / "corpus.jsonl.gz", "wt") as f:
        f.write(json.dumps({"_id": "d1", "text": "alpha"}) + "\n" + json.dumps({"_id": "d1", "text": "beta"}) + "\n")
    with pytest.raises(MrlError, match=r"corpus.jsonl.gz:2: corpus id 'd1' already appears on line 1"):
        load_beir(folder, "test")


def test_pairs_from_jsonl_csv_parquet(tmp_path):
    rows = [{"anchor": "a1", "positive": "p1", "negative": "n1"}, {"anchor": "a2", "positive": "p2", "negative": "n2"}]
    (tmp_path / "t.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (tmp_path / "t.csv").write_text("anchor,positive,negative\na1,p1,n1\na2,p2,n2\n")
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "t.parquet")
    for name in ("t.jsonl", "t.csv", "t.parquet"):
        p = load_pairs(tmp_path / name)
        assert p.anchors == ["a1", "a2"] and p.positives == ["p1", "p2"] and p.negatives == (["n1", "n2"],)


def test_pairs_file_errors(tmp_path):
    (tmp_path / "bad.csv").write_text("query,positive\nx,y\n")
    with pytest.raises(MrlError, match="missing column 'anchor'"):
        load_pairs(tmp_path / "bad.csv")
    (tmp_path / "empty.csv").write_text("anchor,positive\nx,\n")
    with pytest.raises(MrlError, match=r"empty.csv:2: column 'positive' must be a non-empty string"):
        load_pairs(tmp_path / "empty.csv")
    with pytest.raises(MrlError, match="pairs file not found"):
        load_pairs(tmp_path / "nope.jsonl")
    (tmp_path / "x.txt").write_text("hi")
    with pytest.raises(MrlError, match="unknown pairs format"):
        load_pairs(tmp_path / "x.txt")


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared data not present")
def test_debian_pkgs_splits_load_with_documented_sizes():
    ds = load_beir(SHARED, "dev")
    assert len(ds.corpus) == 50001 and len(ds.queries) == 1447


def test_csv_files_that_would_mislead_are_named(tmp_path):
    from mrl.data.pairs import load_pairs

    (tmp_path / "bom.csv").write_bytes("\ufeffanchor,positive\nq1,d1\nq2,d2\n".encode())
    assert load_pairs(tmp_path / "bom.csv").anchors == ["q1", "q2"]  # the BOM is not part of the header
    (tmp_path / "twice.csv").write_text("anchor,positive,positive\nq1,d1,d2\n")
    with pytest.raises(MrlError, match="twice.csv:1: column 'positive' appears twice"):
        load_pairs(tmp_path / "twice.csv")
    (tmp_path / "latin1.csv").write_bytes("anchor,positive\ncaf\xe9,d1\n".encode("latin-1"))
    with pytest.raises(MrlError, match="latin1.csv: not UTF-8 text"):
        load_pairs(tmp_path / "latin1.csv")


def test_duplicated_pairs_are_named_when_they_make_no_batch():
    from mrl.training.streams import BatchPlan

    with pytest.raises(MrlError, match="only 2 distinct positives"):
        BatchPlan(["d1", "d2"] * 20, [5] * 40, 8, 0, 1, None, True, "pairs.jsonl")
