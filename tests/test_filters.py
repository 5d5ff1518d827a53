"""The filter grammar (:mod:`mrl.index.filters`) and the mrl backend's payload store.

Every backend's filtered search is checked by the contract suite (tests/test_contract.py);
here: parsing, evaluation, type checks, payload files, and the mrl store's files and upserts.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from mrl.errors import MrlError
from mrl.index import MrlIndex
from mrl.index.filters import Filter, Match, Range, Table, check_types, evaluate, parse_filter, payload_types
from mrl.index.payloads import check_payloads, read_payload_file
from mrl.index.segment import PAYLOADS

PAYLOADS_ = [{"section": "utils", "year": 2021, "tags": ["a", "b"], "meta": {"lang": "en"}},
             {"section": "net", "year": 2019, "tags": ["b"], "meta": {"lang": "de"}},
             {"section": "utils", "year": 2018.5, "flag": True},
             None,
             {"section": "docs"}]


def test_the_grammar_parses_into_frozen_dataclasses() -> None:
    f = parse_filter({"must": [{"key": "section", "match": {"value": "utils"}},
                               {"key": "year", "range": {"gte": 2020, "lt": 2030}}],
                      "must_not": [{"key": "tags", "match": {"any": ["x", "y"]}}],
                      "should": [{"must": [{"key": "meta.lang", "match": {"value": "en"}}]}]})
    assert f == Filter(must=(Match("section", ("utils",)), Range("year", gte=2020.0, lt=2030.0)),
                       must_not=(Match("tags", ("x", "y"), any=True),),
                       should=(Filter(must=(Match("meta.lang", ("en",)),)),))
    assert parse_filter(json.dumps(f.to_dict())) == f  # JSON text too, and the round trip
    assert parse_filter(None) is None and parse_filter({}) is None and parse_filter({"must": []}) is None
    with pytest.raises(AttributeError):
        f.must = ()  # type: ignore[misc]


@pytest.mark.parametrize("bad, message", [
    ([], "filter: expected an object"),
    ({"mus": []}, "unknown clause 'mus'"),
    ({"must": "x"}, "filter.must: expected a list"),
    ({"must": [{"key": "a", "match": {"value": 1}, "range": {"gt": 1}}]}, "needs exactly one of match or range"),
    ({"must": [{"key": "a", "like": "x"}]}, "unknown operator 'like'"),
    ({"must": [{"key": "a", "range": {"gtx": 1}}]}, "filter.must[0].range (key 'a'): unknown operator 'gtx'"),
    ({"must": [{"key": "a", "match": {"val": 1}}]}, "unknown operator 'val'"),
    ({"must": [{"key": "a", "range": {"gt": "2020"}}]}, "range bound is a finite number, got \"2020\""),
    ({"must": [{"key": "a", "match": {"value": 1.5}}]}, "a match value is a string, an integer or a boolean"),
    ({"must": [{"key": "a", "match": {"any": []}}]}, "expected a non-empty list"),
    ({"should": [{"key": "", "match": {"value": 1}}]}, "filter.should[0].key: expected a non-empty string"),
    ({"must": [{"key": "a..b", "match": {"value": 1}}]}, "field names joined by dots"),
    ({"must": [{"key": 'a"b', "match": {"value": 1}}]}, "no empty part, no brackets, quotes or backslashes"),
    ({"must": [{"match": {"value": 1}}]}, "a condition is"),
    ("{not json", "filter: not valid JSON"),
])
def test_a_malformed_filter_is_refused_naming_the_part(bad: object, message: str) -> None:
    with pytest.raises(MrlError) as e:
        parse_filter(bad)
    assert message in str(e.value)


def test_evaluation_follows_qdrant() -> None:
    def rows(obj: dict) -> list[int]:
        f = parse_filter(obj)
        assert f is not None
        return np.flatnonzero(evaluate(f, PAYLOADS_)).tolist()

    assert rows({"must": [{"key": "section", "match": {"value": "utils"}}]}) == [0, 2]
    assert rows({"must": [{"key": "year", "range": {"gte": 2019}}]}) == [0, 1]
    assert rows({"must": [{"key": "year", "range": {"gt": 2018, "lt": 2019}}]}) == [2]
    assert rows({"must": [{"key": "tags", "match": {"value": "b"}}]}) == [0, 1]  # any element of a list
    assert rows({"must": [{"key": "meta.lang", "match": {"any": ["de", "fr"]}}]}) == [1]  # a dotted path
    assert rows({"must_not": [{"key": "section", "match": {"value": "utils"}}]}) == [1, 3, 4]  # missing passes
    assert rows({"should": [{"key": "flag", "match": {"value": True}},
                            {"key": "section", "match": {"value": "docs"}}]}) == [2, 4]
    assert rows({"must": [{"key": "year", "match": {"value": 2021}}]}) == [0]
    assert rows({"must": [{"key": "flag", "match": {"value": 1}}]}) == []  # a boolean is not the integer 1


def test_the_columnar_evaluation_equals_the_row_by_row_one() -> None:
    rng = np.random.default_rng(0)
    pool: list = ["a", "b", 1, 2, 2.5, True, False, None, ["a", 1], [True], {"x": 1}]
    payloads = [None if rng.random() < 0.1 else {k: pool[rng.integers(len(pool))] for k in ("f", "g")}
                for _ in range(500)]
    table = Table(payloads)
    values: list = ["a", 1, 2, True, False]
    for _ in range(200):
        def cond() -> dict:
            key = str(rng.choice(["f", "g", "f.x", "h"]))
            if rng.random() < 0.4:
                return {"key": key, "range": {str(rng.choice(["gt", "gte", "lt", "lte"])): float(rng.integers(0, 3))}}
            picked = [values[i] for i in rng.choice(len(values), rng.integers(1, 3), replace=False)]
            return {"key": key, "match": {"any": picked}}
        obj = {name: [cond() for _ in range(rng.integers(0, 3))] for name in ("must", "must_not", "should")}
        f = parse_filter(obj)
        if f is not None:
            np.testing.assert_array_equal(evaluate(f, payloads, table), evaluate(f, payloads), err_msg=str(obj))


def test_a_type_mismatch_names_the_key_and_a_value() -> None:
    types = payload_types(PAYLOADS_)
    assert set(types["section"]) == {"string"} and set(types["year"]) == {"number"}
    with pytest.raises(MrlError, match=r"key 'section': range \{'gte': 1.0\}.*string values there \(e.g. \"utils\"\)"):
        check_types(parse_filter({"must": [{"key": "section", "range": {"gte": 1}}]}), types)
    with pytest.raises(MrlError, match="key 'year': match \"2021\""):
        check_types(parse_filter({"must": [{"key": "year", "match": {"value": "2021"}}]}), types)
    check_types(parse_filter({"must": [{"key": "nowhere", "range": {"gte": 1}}]}), types)  # unknown key: no match
    with pytest.raises(MrlError, match="stores no payloads"):
        check_types(parse_filter({"must": [{"key": "a", "match": {"value": 1}}]}), {})


def test_payload_inputs_are_checked_by_line(tmp_path: Path) -> None:
    assert check_payloads(None, 2) == [None, None]
    with pytest.raises(MrlError, match=r"payloads\[1\]: a payload is a JSON object, got \[1\]"):
        check_payloads([{}, [1]], 2)
    with pytest.raises(MrlError, match="2 payloads for 3 ids"):
        check_payloads([{}, {}], 3)
    path = tmp_path / "p.jsonl"
    path.write_text('{"id": "b", "x": 1}\n\n{"id": "a", "x": 2}\n')
    assert read_payload_file(path, ["a", "b", "c"]) == [{"x": 2}, {"x": 1}, None]
    for text, message in (('{"id": "z"}\n', "p.jsonl:1: id 'z' is not among the ids given"),
                          ('{"id": "a"}\n[1]\n', "p.jsonl:2: a payload line is a JSON object"),
                          ('{"x": 1}\n', "with an \"id\" key"),
                          ('{"id": "a"}\n{"id": "a"}\n', "p.jsonl:2: id 'a' has a payload on an earlier line"),
                          ("{oops\n", "p.jsonl:1: not valid JSON")):
        path.write_text(text)
        with pytest.raises(MrlError) as e:
            read_payload_file(path, ["a", "b"])
        assert message in str(e.value)


# ---------------------------------------------------------------------------------------------- the mrl store
def _corpus(n: int, d: int = 32, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((n, d)).astype(np.float32)


def test_payloads_are_stored_checksummed_and_upserted_with_their_row(tmp_path: Path) -> None:
    xb = _corpus(300)
    payloads = [{"g": i % 3, "name": f"n{i}"} for i in range(300)]
    index = MrlIndex.build(tmp_path / "idx", xb, [f"d{i}" for i in range(300)], first_stages=["int8@16"],
                           payloads=payloads)
    files = index.manifest.segments[0].files
    assert PAYLOADS in files and index.verify() == [] and index.stats()["payloads"] is True
    g0 = {"must": [{"key": "g", "match": {"value": 0}}]}
    found = MrlIndex.open(tmp_path / "idx").search(xb[:5], 10, filter=g0)
    assert all(int(k[1:]) % 3 == 0 for row in index.keys(found.ids) for k in row if k)
    # an upsert replaces the payload with the row: d0 (g=0) now has g=1, d1 has no payload
    added = index.add(xb[:2], ["d0", "d1"], [{"g": 1}, None])
    assert "d0" not in added.keys(added.search(xb[:1], 100, filter=g0).ids)[0]
    g1 = added.search(xb[:1], 1, filter={"must": [{"key": "g", "match": {"value": 1}}]})
    assert added.keys(g1.ids) == [["d0"]]
    compacted = added.compact()  # payloads survive compaction, row for row
    assert compacted.rows.payloads(np.arange(compacted.count)) is not None
    assert_same(compacted.search(xb[:5], 10, filter=g0), added.search(xb[:5], 10, filter=g0))
    (tmp_path / "idx" / "segments" / compacted.manifest.segments[0].name / PAYLOADS).write_text("[]\n")
    assert any("payload.jsonl: checksum mismatch" in p for p in compacted.verify())


def assert_same(a: object, b: object) -> None:
    np.testing.assert_array_equal(a[1], b[1])  # type: ignore[index]
    np.testing.assert_allclose(a[0], b[0], atol=1e-5)  # type: ignore[index]


def test_an_index_without_payloads_searches_as_before_and_refuses_a_filter(tmp_path: Path) -> None:
    xb = _corpus(200)
    index = MrlIndex.build(tmp_path / "idx", xb, first_stages=["hnsw@16"])
    assert not any(PAYLOADS in s.files for s in index.manifest.segments)
    assert_same(index.search(xb[:3], 5, filter={}), index.search(xb[:3], 5))
    with pytest.raises(MrlError, match="stores no payloads"):
        index.search(xb[:3], 5, filter={"must": [{"key": "g", "match": {"value": 0}}]})
    before = index.generation
    with pytest.raises(MrlError, match=r"payloads\[0\]: a payload is a JSON object"):
        index.add(xb[:1], [5], ["not an object"])
    assert MrlIndex.open(tmp_path / "idx").generation == before  # nothing changed


@pytest.mark.parametrize("stage", ["hnsw@16", "int8@16", "ivf8@16", "binary@32"])
@pytest.mark.parametrize("share", [0.5, 0.05, 0.01, 0.001])
def test_filtered_search_fills_k_and_a_whole_shortlist_is_exact(tmp_path: Path, stage: str, share: float) -> None:
    n, d, k = 30_000 if stage.startswith("ivf") else 6_000, 32, 5
    xb = _corpus(n, d)
    rng = np.random.default_rng(1)
    chosen = rng.choice(n, max(k, int(n * share)), replace=False)
    payloads = [{"hit": False} for _ in range(n)]
    for r in chosen:
        payloads[r] = {"hit": True}
    index = MrlIndex.build(tmp_path / "idx", xb, first_stages=[stage], payloads=payloads)
    f = {"must": [{"key": "hit", "match": {"value": True}}]}
    xq = _corpus(8, d, seed=2)
    got = index.search(xq, k, f"{stage}:100,{d}:{k}", filter=f)
    assert (got.ids >= 0).all() and np.isin(got.ids, chosen).all()
    rows = np.sort(chosen)
    q = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    xs = xb[rows] / np.linalg.norm(xb[rows], axis=1, keepdims=True)
    want = np.sort(q @ xs.T, axis=1)[:, ::-1][:, :k]  # exact over the filtered set
    whole = index.search(xq, k, f"{stage}:{len(rows)},{d}:{k}", filter=f)
    np.testing.assert_allclose(whole.scores, want, atol=2e-3)  # float16 storage


# ---------------------------------------------------------------------------------------------- the CLI
def test_cli_payload_on_build_and_add_and_filter_on_search(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from mrl.cli.main import app

    runner = CliRunner()

    def run(*args: object, ok: bool = True) -> str:
        result = runner.invoke(app, [str(a) for a in args])
        assert (result.exit_code == 0) == ok, result.output
        return result.output

    xb = _corpus(50)
    np.save(tmp_path / "x.npy", xb)
    (tmp_path / "ids.txt").write_text("".join(f"d{i}\n" for i in range(50)))
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"id": f"d{i}", "g": i % 5}) + "\n" for i in range(50)))
    idx = tmp_path / "idx"
    run("index", "build", "--out", idx, "--vectors", tmp_path / "x.npy", "--ids", tmp_path / "ids.txt",
        "--payload", tmp_path / "p.jsonl", "--first-stage", "int8@16")
    where = json.dumps({"must": [{"key": "g", "match": {"value": 2}}]})
    np.save(tmp_path / "q.npy", xb[:1])
    out = json.loads(run("search", idx, "--vectors", tmp_path / "q.npy", "-k", "10", "--json", "--filter", where))
    assert sorted(h["id"] for h in out["results"][0]["hits"]) == sorted(f"d{i}" for i in range(2, 50, 5))
    np.save(tmp_path / "one.npy", xb[:1])
    (tmp_path / "one.txt").write_text("d0\n")
    (tmp_path / "one.jsonl").write_text('{"id": "d0", "g": 2}\n')
    run("index", "add", idx, "--vectors", tmp_path / "one.npy", "--ids", tmp_path / "one.txt",
        "--payload", tmp_path / "one.jsonl")
    out = json.loads(run("search", idx, "--vectors", tmp_path / "q.npy", "-k", "1", "--json", "--filter", where))
    assert out["results"][0]["hits"][0]["id"] == "d0"  # its payload replaced with the row
    generation = MrlIndex.open(idx).generation
    (tmp_path / "bad.jsonl").write_text('{"id": "zz", "g": 1}\n')
    assert "bad.jsonl:1: id 'zz' is not among the ids given" in run(
        "index", "add", idx, "--vectors", tmp_path / "one.npy", "--ids", tmp_path / "one.txt",
        "--payload", tmp_path / "bad.jsonl", ok=False)
    assert "--filter: unknown clause 'mst'" in run("search", idx, "--vectors", tmp_path / "q.npy", "--filter",
                                                   '{"mst": []}', ok=False)
    assert "key 'g': range" not in run("search", idx, "--vectors", tmp_path / "q.npy", "--filter",
                                       '{"must": [{"key": "g", "range": {"lt": 3}}]}')
    assert MrlIndex.open(idx).generation == generation  # nothing changed
