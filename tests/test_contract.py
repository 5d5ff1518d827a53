"""The backend contract: every backend in :data:`BACKENDS` passes the same checks of reads
(:class:`~mrl.index.Searcher`), writes (:class:`~mrl.index.Writer`), ``tune``
(:class:`~mrl.index.Tunable`) and the invariant that a cascade whose first shortlist is the whole
corpus is exact search. A new backend adds one entry to :data:`BACKENDS`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fakes import NumpyIndex

from mrl.errors import MrlError
from mrl.index import Searcher, SearchResult, Tunable, Writer, build_index, parse_cascade
from mrl.index.tuning.tune import tune, tuning_record

D = 64  # dimension of every test corpus
N = 1000  # rows of the shared read-only corpus (qdrant-client's local mode scans in Python: keep it small)
N_WRITE = 200  # rows of the fresh index each write test builds
N_TUNE = 500  # rows of the fresh index the tune test builds
FIRST_STAGES = ["int8@16", "hnsw@16"]  # what the real backends build (each is checked by the exact invariant)
PG_FIRST_STAGES = ["binary@16", "hnsw@16"]  # pgvector has no int8 index


@dataclass(frozen=True)
class Backend:
    """How the tests make one backend: ``build(folder, vectors, ids)`` -> a new index in ``folder``;
    ``needs``: modules it imports (missing: its cases are skipped); ``server``: the fixture of the server
    it builds on (one that cannot start fails its cases)."""

    build: Callable[..., Any]
    needs: tuple[str, ...] = ()
    server: str | None = None  # a session fixture whose value build takes as ``server=`` (postgres)


#: Every backend the contract runs on; the next backend adds itself here.
BACKENDS: dict[str, Backend] = {
    "mrl": Backend(lambda p, xb, ids, **kw: build_index("mrl", str(p / "idx"), xb, ids, first_stages=FIRST_STAGES,
                                                        **kw)),
    "qdrant-edge": Backend(lambda p, xb, ids, **kw: build_index("qdrant-edge", f"qdrant-edge://{p / 'idx'}", xb, ids,
                                                                first_stages=FIRST_STAGES, **kw), ("qdrant_edge",)),
    "qdrant-local": Backend(lambda p, xb, ids, **kw: build_index("qdrant", f"qdrant-local://{p / 'db'}/docs", xb, ids,
                                                                 first_stages=FIRST_STAGES, **kw), ("qdrant_client",)),
    "postgres": Backend(lambda p, xb, ids, server, **kw: build_index(
        "postgres", f"{server.url}?table=c_{p.name}", xb, ids, first_stages=PG_FIRST_STAGES, **kw),
        server="postgres_server"),
    "fake": Backend(lambda p, xb, ids, **kw: NumpyIndex(xb, ids, f"exact@16:100,{D}:10", **kw)),
}

pytestmark = pytest.mark.filterwarnings("ignore:Local mode performs exact:UserWarning")  # qdrant-local

#: Contract cases a backend fails because of a known defect in src/: ``(backend, test) -> reason``.
KNOWN_DEFECTS: dict[tuple[str, str], str] = {}


def matryoshka_like(n: int, d: int = D, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Clustered vectors whose per-dimension variance decays, so short prefixes carry most of the signal."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(d) + 1.0) ** -0.6
    centers = rng.standard_normal((clusters, d)) * scale
    return (centers[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, d)) * scale).astype(np.float32)


def assert_same_ranking(got: SearchResult, want: SearchResult, atol: float = 1e-5) -> None:
    """Equal up to the order of near-ties (as faiss's tests compare searches)."""
    np.testing.assert_allclose(got.scores, want.scores, atol=atol)
    differ = got.ids != want.ids
    assert not differ.any() or np.all(np.abs(want.scores[differ] - got.scores[differ]) < atol)
    for row, ref_row, s in zip(got.ids, want.ids, want.scores):
        sure = s > s[-1] + atol  # ids above the last score's tie group must all be there
        assert set(ref_row[sure]) <= set(row)


@dataclass
class Case:
    """One backend under test: its name, a built index, the corpus and queries, and a way to build more."""

    name: str
    index: Any
    xb: np.ndarray
    xq: np.ndarray
    keys: list[str]
    make: Callable[[np.ndarray, Any], Any]

    def known_defect(self, test: str) -> None:
        reason = KNOWN_DEFECTS.get((self.name, test))
        if reason:
            pytest.xfail(reason)


@pytest.fixture(scope="session")
def scratch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[[], Path]]:
    """New empty folders, in memory where the machine has /dev/shm: qdrant-client's local mode commits
    every point to SQLite, about 20 ms per point on a disk."""
    shm = Path("/dev/shm")
    in_memory = os.access(shm, os.W_OK)
    base = Path(tempfile.mkdtemp(prefix="mrl-contract-", dir=shm)) if in_memory else tmp_path_factory.mktemp("c")
    yield lambda: Path(tempfile.mkdtemp(dir=base))
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def corpus() -> tuple[np.ndarray, np.ndarray, list[str]]:
    return matryoshka_like(N), matryoshka_like(20, seed=1), [f"doc-{i}" for i in range(N)]


@pytest.fixture(scope="module", params=list(BACKENDS))
def backend(request: pytest.FixtureRequest, corpus: tuple[np.ndarray, np.ndarray, list[str]],
            scratch: Callable[[], Path]) -> Case:
    """A seeded ``N x D`` index with string ids on each backend (read-only: tests that change an index
    build their own with ``make``)."""
    spec = BACKENDS[request.param]
    for module in spec.needs:
        pytest.importorskip(module)
    xb, xq, keys = corpus
    extra = {"server": request.getfixturevalue(spec.server)} if spec.server else {}

    def make(vectors: np.ndarray, ids: Any, **options: Any) -> Any:
        return spec.build(scratch(), vectors, ids, **extra, **options)

    return Case(request.param, make(xb, keys, payloads=corpus_payloads(N)), xb, xq, keys, make)


def corpus_payloads(n: int) -> list[dict[str, Any] | None]:
    """Every row's payload: a group (10%), a year, a name, tags, and 1% / 0.1% markers; a few rows have none."""
    out: list[dict[str, Any] | None] = []
    for i in range(n):
        out.append(None if i % 97 == 13 and i % 100 != 7 else {
            "group": i % 10, "year": 2000 + i % 25, "name": f"n{i}", "tags": ["even" if i % 2 else "odd", f"t{i % 3}"],
            "meta": {"lang": "en" if i % 4 else "de"}, "rare": "yes" if i % 100 == 7 else "no",
            "rarest": i % 1000 == 500})
    return out


# ---------------------------------------------------------------------------------------------- reads
def test_every_backend_implements_the_protocols(backend: Case) -> None:
    index = backend.index
    assert isinstance(index, Searcher) and isinstance(index, Writer) and isinstance(index, Tunable)
    assert index.dim == D and index.count == N and isinstance(index.generation, int)
    assert index.first_stages and index.default_cascade == parse_cascade(str(index.default_cascade), D)
    assert isinstance(index.refresh(), Searcher) and index.refresh().count == N
    index.check_adaptor(None)


def test_search_returns_float32_int64_best_first(backend: Case) -> None:
    index, xq = backend.index, backend.xq
    for result in (index.search(xq, 10), index.exact_search(xq, 10)):
        assert isinstance(result, SearchResult)
        assert result.scores.dtype == np.float32 and result.ids.dtype == np.int64
        assert result.scores.shape == result.ids.shape == (len(xq), 10)
        assert (np.diff(result.scores, axis=1) <= 1e-6).all(), "scores are not best first"
        assert (result.ids >= 0).all() and all(len(set(row)) == 10 for row in result.ids.tolist())
    one = index.search(xq[0], 5)  # a single 1-D query is one row
    assert one.ids.shape == (1, 5) and one.scores.shape == (1, 5)
    assert index.prepare_queries(xq).shape == (len(xq), D)


def test_k_beyond_the_live_count_is_refused(backend: Case) -> None:
    index, xq = backend.index, backend.xq
    for k in (N + 1, 0):
        with pytest.raises(MrlError):
            index.search(xq, k)
        with pytest.raises(MrlError):
            index.exact_search(xq, k)
        with pytest.raises(MrlError):
            index.search(xq, k, f"{index.first_stages[0]}:{10 * N},{D}:{10 * N}")


def test_keys_map_ids_back(backend: Case) -> None:
    index, xb = backend.index, backend.xb
    rows = [3, 500, N - 1]
    found = index.exact_search(xb[rows], 1)  # a stored vector's nearest neighbour is itself
    assert index.keys(found.ids) == [[backend.keys[r]] for r in rows]
    assert index.keys(np.array([[-1]], np.int64)) == [[None]]
    assert index.keys(found.ids[:, 0]) == [[backend.keys[r] for r in rows]]  # a 1-D array is one row


def test_plan_clamps_shortlists_to_the_count(backend: Case) -> None:
    index = backend.index
    for spec in index.first_stages:
        plan = index.plan(f"{spec}:{10**9},32:{10**8},{D}:10", 10)
        assert plan.stages == ((spec.dim, N), (32, N), (D, 10)) and plan.kind == spec.kind
    default = index.plan(None, 10)
    assert [d for d, _ in default.stages] == [d for d, _ in index.default_cascade.stages]
    assert all(10 <= n <= N for _, n in default.stages)
    with pytest.raises(MrlError):
        index.plan(f"{index.first_stages[0]}:100,{D + 1}:10", 10)  # beyond the vectors' dimension


def test_stats_have_the_documented_keys(backend: Case) -> None:
    index = backend.index
    stats = index.stats()
    documented = {"count", "dim", "model", "id_kind", "generation", "default_cascade", "segments", "deleted_rows",
                  "first_stages"}
    assert documented <= set(stats), f"missing: {documented - set(stats)}"
    assert (stats["count"], stats["dim"], stats["id_kind"], stats["generation"]) == (N, D, "str", index.generation)
    assert parse_cascade(stats["default_cascade"], D) == index.default_cascade
    assert set(stats["first_stages"]) == {str(s) for s in index.first_stages}
    assert all(float(v["bytes_per_vector"]) > 0 for v in stats["first_stages"].values())
    assert stats["segments"] >= 1 and stats["deleted_rows"] >= 0


# ---------------------------------------------------------------------------------------------- the invariant
def test_a_whole_corpus_shortlist_is_exact_search(backend: Case) -> None:
    index, xq = backend.index, backend.xq
    want, everything = index.exact_search(xq, 10), index.exact_search(xq[:2], N)
    assert all(sorted(row) == sorted(everything.ids[0].tolist()) for row in everything.ids.tolist())
    for spec in index.first_stages:
        for cascade in (f"{spec}:{N},{D}:10", f"{spec}:{N},32:{N},{D}:10"):
            assert_same_ranking(index.search(xq, 10, cascade), want)
        whole = index.search(xq[:2], N, f"{spec}:{N},{D}:{N}")  # every live row, none missing (-1)
        assert_same_ranking(whole, everything)


# ---------------------------------------------------------------------------------------------- writes
@pytest.fixture(params=["int", "str"])
def fresh(request: pytest.FixtureRequest, backend: Case) -> tuple[Any, list[Any], Any]:
    """A new ``N_WRITE``-row index on the backend, its ids (ints not equal to rows, or strings), and a new id."""
    if request.param == "int":
        ids: list[Any] = [10 + 3 * i for i in range(N_WRITE)]
        new: Any = 10**6
    else:
        ids, new = [f"w-{i}" for i in range(N_WRITE)], "w-new"
    index = backend.make(backend.xb[:N_WRITE], ids)
    assert index.verify() == [] and index.count == N_WRITE
    return index, ids, new


def _key(index: Any, xq: np.ndarray, k: int = 1) -> list[list[str | None]]:
    return index.keys(index.exact_search(xq, k).ids)


def test_a_failing_write_changes_nothing(backend: Case, fresh: tuple[Any, list[Any], Any]) -> None:
    backend.known_defect("failing-write")
    index, ids, new = fresh
    xq = backend.xq
    before, generation = index.exact_search(xq, 5), index.generation
    nan = backend.xb[:3].copy()
    nan[1, 5] = np.nan
    for vectors in (backend.xb[:2, :32], nan):  # a wrong dimension, a NaN row (after a good one)
        with pytest.raises(MrlError):
            index.add(vectors, [ids[0], new, ids[1]][: len(vectors)])
    wrong_kind = "w-0" if isinstance(ids[0], int) else 0
    for vectors, bad_ids in ((backend.xb[:2], [ids[0], ids[0]]),  # an id twice
                             (backend.xb[:1], [wrong_kind]),  # a string id in an int index, or the reverse
                             (backend.xb[:1], [-1 if isinstance(ids[0], int) else ""]),  # negative or empty
                             (backend.xb[:2], [new]),  # fewer ids than vectors
                             (backend.xb[:0], [])):  # nothing to add
        with pytest.raises(MrlError):
            index.add(vectors, bad_ids)
    now = index.refresh()
    assert now.count == N_WRITE and now.generation == generation
    after = now.exact_search(xq, 5)
    np.testing.assert_array_equal(after.ids, before.ids)
    np.testing.assert_allclose(after.scores, before.scores, atol=1e-6)
    assert now.verify() == []


def test_add_is_an_upsert(backend: Case, fresh: tuple[Any, list[Any], Any]) -> None:
    backend.known_defect("add")
    index, ids, new = fresh
    names = [str(i) for i in (ids[0], ids[1], new)]
    vectors = matryoshka_like(3, seed=7)
    added = index.add(vectors, [ids[0], ids[1], new])  # two replaced, one new
    assert added.count == N_WRITE + 1 and added.generation > index.generation
    assert added.refresh().count == index.refresh().count == N_WRITE + 1  # the old handle's refresh sees it
    assert _key(added, vectors) == [[n] for n in names]  # each new vector is found by itself
    assert added.keys(added.search(vectors, 1).ids) == [[n] for n in names]
    everything = [k for row in _key(added, vectors[:1], added.count) for k in row]
    assert len(everything) == len(set(everything)) == added.count  # replaced, not duplicated
    assert _key(added, backend.xb[:1]) != [[names[0]]]  # the old vector of a replaced id is gone


def test_delete_removes_and_an_unknown_id_changes_nothing(backend: Case, fresh: tuple[Any, list[Any], Any]) -> None:
    backend.known_defect("delete")
    index, ids, new = fresh
    xb = backend.xb
    deleted = index.delete([ids[5]])
    assert deleted.count == N_WRITE - 1 and deleted.refresh().count == N_WRITE - 1
    assert str(ids[5]) not in _key(deleted, xb[5:6], deleted.count)[0]
    generation = deleted.generation
    with pytest.raises(MrlError):
        deleted.delete([ids[6], new])  # one known, one unknown: nothing is deleted
    with pytest.raises(MrlError):
        deleted.delete([ids[5]])  # already gone
    with pytest.raises(MrlError, match="appears 2 times"):
        deleted.delete([ids[6], ids[6]])  # an id named twice: refused on every backend
    now = deleted.refresh()
    assert now.count == N_WRITE - 1 and now.generation == generation
    assert _key(now, xb[6:7]) == [[str(ids[6])]]


def test_compact_keeps_every_result(backend: Case, fresh: tuple[Any, list[Any], Any]) -> None:
    backend.known_defect("compact")
    index, ids, new = fresh
    xq = backend.xq
    index = index.delete(ids[:20]).add(matryoshka_like(10, seed=9), [*ids[20:29], new])
    whole = f"{index.first_stages[0]}:{index.count},{D}:10"
    before = index.exact_search(xq, 10), index.search(xq, 10, whole)
    assert_same_ranking(before[1], before[0])  # the invariant holds with deleted and replaced rows too
    compacted = index.compact()
    assert compacted.count == N_WRITE - 20 + 1 and compacted.verify() == []
    assert_same_ranking(compacted.exact_search(xq, 10), before[0])
    assert_same_ranking(compacted.search(xq, 10, whole), before[1])


# ---------------------------------------------------------------------------------------------- tune
def test_tune_meets_the_target_and_stores_it(backend: Case) -> None:
    backend.known_defect("tune")
    index = backend.make(backend.xb[:N_TUNE], backend.keys[:N_TUNE])  # its own: the shared one keeps its default
    best, rows = tune(index, k=10, target_recall=0.9, n_queries=50, n_single=5)
    assert best is not None and best.recall_low >= 0.9 and best in rows
    kinds = {s.kind for s in index.first_stages}
    assert all(parse_cascade(r.cascade, D).kind in kinds for r in rows)
    stored = index.set_default_cascade(best.cascade, tuning_record(best, 10, 0.9, 50, "sampled"))
    assert stored.generation > index.generation
    for snapshot in (stored, stored.refresh()):
        assert snapshot.default_cascade == parse_cascade(best.cascade, D)
        assert parse_cascade(snapshot.stats()["default_cascade"], D) == parse_cascade(best.cascade, D)
    assert stored.search(backend.xq, 10).ids.shape == (len(backend.xq), 10)


# ---------------------------------------------------------------------------------------------- writes over HTTP
def test_writes_over_http_are_all_or_nothing_and_seen_by_the_next_search(backend: Case,
                                                                          fresh: tuple[Any, list[Any], Any]) -> None:
    from fastapi.testclient import TestClient

    from mrl.serve import ServeSettings, create_app

    index, ids, new = fresh
    client = TestClient(create_app(ServeSettings(f"contract:{backend.name}"), searcher=index))
    x = matryoshka_like(2, seed=11)
    whole = f"{index.first_stages[0]}:{N_WRITE + 1},{D}:1"
    r = client.post("/upsert", json={"ids": [ids[0], new], "vectors": x.tolist()})
    assert r.status_code == 200 and r.json()["count"] == N_WRITE + 1 and r.json()["changed"] == 2, r.text
    found = client.post("/search", json={"vector": x.tolist(), "k": 1, "cascade": whole}).json()["results"]
    assert [row[0]["id"] for row in found] == [str(ids[0]), str(new)]  # replaced, not duplicated, and added
    generation = r.json()["generation"]
    for body, status in (({"ids": [ids[1]], "vectors": [[0.5] * (D - 1)]}, 400),  # another dimension
                         ({"ids": [ids[1], ids[2]], "vectors": [[0.5] * D]}, 422),  # counts differ
                         ({"ids": [ids[1]], "vectors": [[float("nan")] * D]}, 400),
                         ({"ids": [ids[1]]}, 422)):  # neither vectors nor texts
        bad = client.post("/upsert", content=json.dumps(body), headers={"content-type": "application/json"})
        assert bad.status_code == status and "error" in bad.json(), (body, bad.text)
    after = client.get("/healthz").json()
    assert after["count"] == N_WRITE + 1 and after["generation"] == generation  # nothing changed
    assert client.post("/delete", json={"ids": [new]}).json()["count"] == N_WRITE
    refused = client.post("/delete", json={"ids": [ids[3], new]})  # one unknown: nothing is deleted
    assert refused.status_code == 400 and client.get("/healthz").json()["count"] == N_WRITE


# ---------------------------------------------------------------------------------------------- filters
FILTERS = {  # name -> (filter, the rows it lets through as a function of the row number)
    "group": ({"must": [{"key": "group", "match": {"any": [3, 4]}}]}, lambda i: i % 10 in (3, 4)),
    "range": ({"must": [{"key": "year", "range": {"gte": 2010, "lt": 2015}}],
               "must_not": [{"key": "meta.lang", "match": {"value": "de"}}]},
              lambda i: 10 <= i % 25 < 15 and i % 4 != 0),
    "should": ({"should": [{"key": "tags", "match": {"value": "t1"}}, {"key": "name", "match": {"value": "n5"}}]},
               lambda i: i % 3 == 1 or i == 5),
    "rare": ({"must": [{"key": "rare", "match": {"value": "yes"}}]}, lambda i: i % 100 == 7),  # 1%
    "rarest": ({"must": [{"key": "rarest", "match": {"value": True}}]}, lambda i: i % 1000 == 500),  # 0.1%
}


def _filtered_truth(backend: Case, name: str, k: int) -> tuple[np.ndarray, list[set[str]], set[str]]:
    """Exact top-``k`` scores over the rows ``name`` lets through, each query's sure keys, and the allowed keys."""
    test = FILTERS[name][1]
    rows = [i for i in range(N) if (i % 97 != 13 or i % 100 == 7) and test(i)]
    xb = backend.xb[rows] / np.linalg.norm(backend.xb[rows], axis=1, keepdims=True)
    q = backend.xq / np.linalg.norm(backend.xq, axis=1, keepdims=True)
    s = q @ xb.T  # (nq, len(rows))
    order = np.argsort(-s, axis=1)[:, :k]
    scores = np.take_along_axis(s, order, 1)
    sure = [{backend.keys[rows[j]] for j, v in zip(o, sc) if v > sc[-1] + 2e-3} for o, sc in zip(order, scores)]
    return scores, sure, {backend.keys[r] for r in rows}


@pytest.mark.parametrize("name", list(FILTERS))
def test_a_filtered_whole_shortlist_is_exact_search_over_the_filtered_set(backend: Case, name: str) -> None:
    index, xq = backend.index, backend.xq
    k = 10 if name not in ("rarest",) else 1
    want, sure, allowed = _filtered_truth(backend, name, k)
    for spec in index.first_stages:
        for cascade in (f"{spec}:{N},{D}:{k}", f"{spec}:{N},32:{N},{D}:{k}"):
            got = index.search(xq, k, cascade, filter=FILTERS[name][0])
            np.testing.assert_allclose(got.scores, want, atol=2e-3, err_msg=f"{cascade}")
            keys = index.keys(got.ids)
            assert all(set(row) <= allowed for row in keys) and all(s <= set(row) for s, row in zip(sure, keys))


@pytest.mark.parametrize("name", ["rare", "rarest"])
def test_a_selective_filter_still_returns_k(backend: Case, name: str) -> None:
    """1% (10 rows) and 0.1% (1 row) of the corpus: every cascade, the default one included, fills k."""
    index, xq = backend.index, backend.xq
    k = 10 if name == "rare" else 1
    _, _, allowed = _filtered_truth(backend, name, k)
    for cascade in (None, *(f"{spec}:50,{D}:{k}" for spec in index.first_stages)):
        got = index.search(xq, k, cascade, filter=FILTERS[name][0])
        assert (got.ids >= 0).all(), f"{cascade}: fewer than {k} hits"
        assert all(set(row) <= allowed for row in index.keys(got.ids))
    more = index.search(xq[:2], 12, None, filter=FILTERS["rare"][0])  # more asked than exist: padded with -1
    assert ((more.ids >= 0).sum(axis=1) == 10).all() and (more.ids[:, 10:] == -1).all()


def test_an_empty_filter_is_no_filter(backend: Case) -> None:
    index, xq = backend.index, backend.xq
    assert_same_ranking(index.search(xq, 10, filter={}), index.search(xq, 10))


@pytest.mark.parametrize("bad, message", [
    ({"must": [{"key": "year", "rnge": {"gte": 1}}]}, "unknown operator 'rnge'"),
    ({"must": [{"key": "year", "range": {"gtt": 1}}]}, "unknown operator 'gtt'"),
    ({"must": [{"key": "year"}]}, "needs exactly one of match or range"),
    ({"must": {"key": "year", "range": {"gte": "x"}}}, "a range bound is a finite number"),
    ({"must": [{"key": "name", "range": {"gte": 1}}]}, "key 'name': range"),  # a range on a string field
    ({"must": [{"key": "group", "match": {"value": "3"}}]}, "key 'group': match \"3\""),  # a string on numbers
    ("[1, 2]", "filter: expected an object"),
])
def test_a_bad_filter_is_refused_naming_the_problem(backend: Case, bad: Any, message: str) -> None:
    with pytest.raises(MrlError) as e:
        backend.index.search(backend.xq, 5, filter=bad)
    assert message in str(e.value)


def test_sql_metacharacters_in_keys_and_values_are_data(backend: Case) -> None:
    keys = ["x'; DROP TABLE t; --", "$x ? (@ == 1)", "%s %(x)s {}", "é ü"]
    values = ['a"b\\c', "$.x ? (@ == 1)", "'); DELETE FROM mrl_indexes; --", "%s %(x)s {}"]
    payloads = [dict(zip(keys, values)) if i % 2 else {keys[0]: "other"} for i in range(N_WRITE)]
    index = backend.make(backend.xb[:N_WRITE], [f"m{i}" for i in range(N_WRITE)], payloads=payloads)
    for key, value in zip(keys, values):
        got = index.search(backend.xq[:2], 5, f"{index.first_stages[0]}:{N_WRITE},{D}:5",
                           filter={"must": [{"key": key, "match": {"value": value}}]})
        assert all(int(k[1:]) % 2 == 1 for row in index.keys(got.ids) for k in row), (key, value)
        assert (got.ids >= 0).all()
    assert index.refresh().count == N_WRITE and index.verify() == []


def test_payloads_are_upserted_with_their_rows_and_bad_ones_change_nothing(backend: Case,
                                                                          fresh: tuple[Any, list[Any], Any]) -> None:
    index, ids, new = fresh
    f = {"must": [{"key": "colour", "match": {"value": "red"}}]}
    with pytest.raises(MrlError, match="stores no payloads"):
        index.search(backend.xq, 1, filter=f)
    generation = index.refresh().generation
    for payloads, message in (([{"colour": "red"}, "red"], r"payloads\[1\]: a payload is a JSON object"),
                              ([{"colour": "red"}], "1 payloads for 2 ids")):
        with pytest.raises(MrlError, match=message):
            index.add(backend.xb[:2], [ids[0], new], payloads)
    assert index.refresh().generation == generation and index.refresh().count == N_WRITE  # nothing changed
    added = index.add(backend.xb[:2], [ids[0], new], [{"colour": "red"}, {"colour": "blue"}])
    whole = f"{added.first_stages[0]}:{N_WRITE + 1},{D}:2"
    red = added.search(backend.xq[:1], 2, whole, filter=f)
    assert added.keys(red.ids) == [[str(ids[0]), None]]
    again = added.add(backend.xb[:1], [ids[0]], [{"colour": "blue"}])  # the payload goes with the row it replaces
    assert (again.search(backend.xq[:1], 1, whole.replace(":2", ":1"), filter=f).ids == -1).all()


def test_filters_and_payloads_over_http(backend: Case, fresh: tuple[Any, list[Any], Any]) -> None:
    from fastapi.testclient import TestClient

    from mrl.serve import ServeSettings, create_app

    index, ids, new = fresh
    client = TestClient(create_app(ServeSettings(f"contract:{backend.name}"), searcher=index))
    x = matryoshka_like(2, seed=12)
    r = client.post("/upsert", json={"ids": [ids[0], new], "vectors": x.tolist(),
                                     "payloads": [{"colour": "red"}, {"colour": "blue"}]})
    assert r.status_code == 200, r.text
    generation = r.json()["generation"]
    whole = f"{index.first_stages[0]}:{N_WRITE + 1},{D}:1"
    found = client.post("/search", json={"vector": x.tolist(), "k": 1, "cascade": whole,
                                         "filter": {"must": [{"key": "colour", "match": {"value": "blue"}}]}})
    assert found.status_code == 200, found.text
    assert [row[0]["id"] for row in found.json()["results"]] == [str(new), str(new)]
    for body in ({"vector": x[0].tolist(), "k": 1, "filter": {"must": [{"key": "colour", "like": "x"}]}},
                 {"vector": x[0].tolist(), "k": 1, "filter": {"must": [{"key": "colour", "range": {"gt": 1}}]}},
                 {"vector": x[0].tolist(), "k": 1, "filter": [1]}):
        bad = client.post("/search", json=body)
        assert 400 <= bad.status_code < 500 and "error" in bad.json(), bad.text
    for payloads in ([{"colour": "red"}, 5], [{"colour": "red"}]):
        bad = client.post("/upsert", json={"ids": [ids[1], ids[2]], "vectors": x.tolist(), "payloads": payloads})
        assert 400 <= bad.status_code < 500 and "error" in bad.json(), bad.text
    assert client.get("/healthz").json()["generation"] == generation  # nothing changed
