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
    "mrl": Backend(lambda p, xb, ids: build_index("mrl", str(p / "idx"), xb, ids, first_stages=FIRST_STAGES)),
    "qdrant-edge": Backend(lambda p, xb, ids: build_index("qdrant-edge", f"qdrant-edge://{p / 'idx'}", xb, ids,
                                                          first_stages=FIRST_STAGES), ("qdrant_edge",)),
    "qdrant-local": Backend(lambda p, xb, ids: build_index("qdrant", f"qdrant-local://{p / 'db'}/docs", xb, ids,
                                                           first_stages=FIRST_STAGES), ("qdrant_client",)),
    "postgres": Backend(lambda p, xb, ids, server: build_index(
        "postgres", f"{server.url}?table=c_{p.name}", xb, ids, first_stages=PG_FIRST_STAGES), server="postgres_server"),
    "fake": Backend(lambda p, xb, ids: NumpyIndex(xb, ids, f"exact@16:100,{D}:10")),
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

    def make(vectors: np.ndarray, ids: Any) -> Any:
        return spec.build(scratch(), vectors, ids, **extra)

    return Case(request.param, make(xb, keys), xb, xq, keys, make)


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
