"""The qdrant-edge backend: the same cascade contract as MrlIndex, run by the Qdrant engine in-process."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from fastapi.testclient import TestClient

from mrl.errors import MrlError
from mrl.index import MrlIndex, Searcher, open_index
from mrl.index.tuning.tune import tune
from mrl.serve import ServeSettings, create_app

pytest.importorskip("qdrant_edge")
pytest.importorskip("qdrant_client")
from mrl.index.qdrant import QdrantIndex, build_qdrant, close_edge, open_qdrant  # noqa: E402


class QdrantEdgeIndex:
    """The tests' shorthand for the in-process engine over a folder."""

    @staticmethod
    def build(path, vectors, ids=None, **options):
        return build_qdrant(f"qdrant-edge://{path}", vectors, ids, **options)

    @staticmethod
    def open(path):
        return open_qdrant(f"qdrant-edge://{path}")

D = 32


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    scale = (np.arange(D) + 1.0) ** -0.5
    xb = (rng.standard_normal((1500, D)) * scale).astype(np.float32)
    xq = (xb[:20] + 0.3 * rng.standard_normal((20, D)) * scale).astype(np.float32)
    return xb, xq


@pytest.fixture(scope="module")
def built(data, tmp_path_factory):
    xb, _ = data
    root = tmp_path_factory.mktemp("qe") / "idx"
    keys = [f"d{i}" for i in range(len(xb))]
    index = QdrantEdgeIndex.build(root, xb, keys, first_stages=["int8@8", "hnsw@8", "binary@16", "exact@8"])
    reference = MrlIndex.build(root.parent / "ref", xb, keys, first_stages=["int8@8"], dtype="float32")
    return index, reference


def _recall(a, b):
    return np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)])


@pytest.mark.parametrize("stage", ["int8@8", "hnsw@8", "binary@16", "exact@8"])
def test_a_whole_corpus_shortlist_is_exact_search(built, data, stage):
    index, reference = built
    xb, xq = data
    want = reference.exact_search(xq, 10)
    got = index.search(xq, 10, f"{stage}:{len(xb)},{D}:10")
    assert got.ids.shape == (len(xq), 10) and got.ids.dtype == np.int64 and got.scores.dtype == np.float32
    assert index.keys(got.ids) == reference.keys(want.ids)
    np.testing.assert_allclose(got.scores, want.scores, atol=1e-5)
    huge = index.search(xq, 10, f"{stage}:{10**9},{D}:10")  # clamped to the corpus, like MrlIndex
    np.testing.assert_array_equal(huge.ids, got.ids)


def test_the_same_cascade_reaches_the_recall_of_mrls_own_index(built, data):
    index, reference = built
    _, xq = data
    truth = reference.exact_search(xq, 10).ids
    for cascade in ("int8@8:200,16:50,32:10", "int8@8:100,32:10"):
        ours = _recall(reference.keys(reference.search(xq, 10, cascade).ids), reference.keys(truth))
        theirs = _recall(index.keys(index.search(xq, 10, cascade).ids), reference.keys(truth))
        assert theirs >= ours - 0.02, (cascade, theirs, ours)


def test_work_of_a_qdrant_search_is_the_plans_and_says_so(built, data):
    from mrl.index.work import Work

    index, _ = built
    work = Work()
    index.search(data[1], 10, "int8@8:200,16:50,32:10", work=work)
    doc = work.to_dict()
    assert [(s["stage"], s["mean_candidates"], s["counted"]) for s in doc["per_stage"]] == [
        ("int8@8", 200, False), ("rescore@16", 200, False), ("rescore@32", 50, False)]
    assert doc["mean_candidates_rescored"] == 250 and doc["mean_bytes_read"] == 200 * 8 + 200 * 16 * 4 + 50 * 32 * 4


def test_upserts_deletes_and_string_ids(data, tmp_path):
    xb, _ = data
    index = QdrantEdgeIndex.build(tmp_path / "i", xb[:100], [f"d{i}" for i in range(100)], first_stages=["int8@8"])
    assert isinstance(index, Searcher) and isinstance(open_index(tmp_path / "i"), QdrantIndex)
    index = index.add(-xb[:3], ["d0", "d1", "new"])  # two replaced, one new
    assert index.count == 101 and index.generation == 2
    assert index.keys(index.search(-xb[:1], 1, f"int8@8:101,{D}:1").ids) == [["d0"]]
    with pytest.raises(MrlError, match="not in the index, e.g. 'nope'; nothing was deleted"):
        index.delete(["d5", "nope"])
    index = index.delete(["d5", "new"])
    assert index.count == 99
    assert "d5" not in index.keys(index.search(xb[5:6], 5, f"int8@8:99,{D}:5").ids)[0]
    assert open_index(f"qdrant-edge://{tmp_path / 'i'}").count == 99  # the same live shard


@pytest.mark.parametrize("call,message", [
    (lambda p, x: QdrantEdgeIndex.build(p, x, first_stages=["rabitq@16"]), "build exact, int8, binary, hnsw"),
    (lambda p, x: QdrantEdgeIndex.build(p, x, first_stages=["int8@8"], default_cascade="int8@8:50,24:10"),
     "rescores on [16, 32] dims, not 24"),
    (lambda p, x: build_qdrant(f"qdrant-edge://{p}", x, shards=2), "a qdrant-edge index is one local shard"),
    (lambda p, x: QdrantEdgeIndex.build(p, x, ["a"] * len(x)), "'a' appears"),
    (lambda p, x: QdrantEdgeIndex.build(p, np.zeros((3, D), np.float32)), "row 0 is all zeros"),
])
def test_bad_builds_are_named_and_write_nothing(data, tmp_path, call, message):
    with pytest.raises(MrlError, match=message.replace("[", r"\[").replace("]", r"\]")):
        call(tmp_path / "bad", data[0][:50])
    assert not (tmp_path / "bad").exists()


def test_another_process_gets_a_clear_error_while_one_holds_the_index(data, tmp_path):
    QdrantEdgeIndex.build(tmp_path / "i", data[0][:50], first_stages=["int8@8"])  # held open by this process
    code = f"from mrl.index import open_index; open_index({str(tmp_path / 'i')!r})"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "another process has this qdrant-edge index open" in r.stderr, r.stderr[-500:]


def test_service_and_tune_run_on_qdrant_edge_unchanged(built, data):
    index, reference = built
    xb, xq = data
    client = TestClient(create_app(ServeSettings(index.engine.where()), searcher=index))
    r = client.post("/search", json={"vector": xq[0].tolist(), "k": 5, "cascade": f"int8@8:{len(xb)},{D}:5"})
    assert r.status_code == 200, r.text
    assert [h["id"] for h in r.json()["results"][0]] == reference.keys(reference.exact_search(xq[:1], 5).ids)[0]
    assert client.get("/healthz").json()["status"] == "ok"
    best, rows = tune(index, k=10, target_recall=0.9, queries=xq, n_single=2)
    assert best is not None and best.recall_low >= 0.9 and rows


def test_the_cli_drives_a_qdrant_edge_index(data, tmp_path):
    import json

    from typer.testing import CliRunner

    from mrl.cli.main import app

    runner = CliRunner()
    xb, xq = data
    np.save(tmp_path / "x.npy", xb[:300])
    np.save(tmp_path / "q.npy", xq[:4])
    (tmp_path / "ids.txt").write_text("".join(f"doc{i}\n" for i in range(300)))
    idx = tmp_path / "idx"

    def run(*args):
        result = runner.invoke(app, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    run("index", "build", "--backend", "qdrant-edge", "--vectors", tmp_path / "x.npy", "--ids", tmp_path / "ids.txt",
        "--out", idx, "--first-stage", "int8@8")
    found = json.loads(run("search", idx, "--vectors", tmp_path / "q.npy", "-k", "3", "--json").stdout)
    assert [r["hits"][0]["id"] for r in found["results"]] == ["doc0", "doc1", "doc2", "doc3"]
    np.save(tmp_path / "y.npy", -xb[:1])
    (tmp_path / "y.txt").write_text("fresh\n")
    run("index", "add", idx, "--vectors", tmp_path / "y.npy", "--ids", tmp_path / "y.txt")
    run("index", "delete", idx, "doc7")
    tuned = json.loads(run("index", "tune", idx, "--target-recall", "0.9", "--n-queries", "20", "--json").stdout)
    stats = json.loads(run("index", "stats", idx, "--json").stdout)
    assert stats["backend"] == "qdrant-edge" and stats["count"] == 300 and stats["default_cascade"] == tuned["best"][
        "cascade"]
    assert "the index opens and counts" in run("index", "verify", idx).output


def test_a_missing_extra_gets_the_install_hint(data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from mrl.cli.main import app

    monkeypatch.setitem(sys.modules, "qdrant_edge", None)  # import qdrant_edge now raises ImportError
    np.save(tmp_path / "x.npy", data[0][:20])
    result = CliRunner().invoke(app, ["index", "build", "--backend", "qdrant-edge", "--vectors",
                                      str(tmp_path / "x.npy"), "--out", str(tmp_path / "i")])
    assert result.exit_code == 2 and "pip install 'mrl[qdrant]'" in result.output
    assert not (tmp_path / "i").exists()


_ROUND = 64 * 300  # points per add() call: whole WAL entries of 64, so any kill leaves a multiple of 64

_ADD = """
import sys, numpy as np
from mrl.index.qdrant import funnel, open_qdrant
funnel.BATCH = 64  # many WAL entries, so the kill lands between them
index = open_qdrant("qdrant-edge://" + sys.argv[1])
print("open", flush=True)
n = int(sys.argv[2])
for r in range(1_000):  # adds until killed, however fast the machine
    x = np.random.default_rng(r).standard_normal((n, 32)).astype(np.float32)
    index.add(x, [f"k{r * n + i}" for i in range(n)])
    print("round", r, flush=True)
"""


@pytest.mark.skipif(not hasattr(__import__("signal"), "SIGKILL"), reason="POSIX only")
def test_an_add_killed_half_way_leaves_every_written_point_findable(data, tmp_path):
    import os
    import signal
    import time

    xb, _ = data
    QdrantEdgeIndex.build(tmp_path / "i", xb[:200], [f"d{i}" for i in range(200)], first_stages=["int8@8"])
    close_edge(tmp_path / "i")  # let the child process open it
    command = [sys.executable, "-c", _ADD, str(tmp_path / "i"), str(_ROUND)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "open"
    assert proc.stdout.readline().strip() == "round 0"  # one add() is whole; the kill lands inside a later one
    time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    index = QdrantEdgeIndex.open(tmp_path / "i")
    written = index.count - 200
    assert written >= _ROUND and written % 64 == 0  # whole WAL entries only
    probe = np.linspace(0, written - 1, 20).astype(int)  # the points the WAL holds are whole and searchable
    rows = {r: np.random.default_rng(r).standard_normal((_ROUND, 32)).astype(np.float32) for r in set(probe // _ROUND)}
    x = np.stack([rows[i // _ROUND][i % _ROUND] for i in probe])
    got = index.keys(index.search(x, 1, f"int8@8:{index.count},{D}:1").ids)
    assert [g[0] for g in got] == [f"k{i}" for i in probe]
    assert index.keys(index.search(xb[:3], 1, f"int8@8:{index.count},{D}:1").ids) == [["d0"], ["d1"], ["d2"]]


def test_qdrant_client_local_mode_runs_the_same_funnel(built, data, tmp_path):
    """qdrant-client (what talks to a server or cluster), here in its local mode: the same layout and queries."""
    _, reference = built
    xb, xq = data
    keys = [f"d{i}" for i in range(len(xb))]
    uri = f"qdrant-local://{tmp_path / 'q'}/docs"
    index = build_qdrant(uri, xb, keys, first_stages=["int8@8", "binary@16"])
    assert open_index(uri).count == len(xb) and index.stats()["backend"] == "qdrant"
    want = reference.exact_search(xq, 10)
    for stage in ("int8@8", "binary@16"):
        got = index.search(xq, 10, f"{stage}:{len(xb)},{D}:10")
        assert index.keys(got.ids) == reference.keys(want.ids)
    index = index.add(-xb[:2], ["d0", "fresh"]).delete(["d1"])
    assert index.count == len(xb) and index.generation == 3
    with pytest.raises(MrlError, match="collection 'docs' already exists"):
        build_qdrant(uri, xb, keys)
    with pytest.raises(MrlError, match="collection 'nope' does not exist"):
        open_index(f"qdrant-local://{tmp_path / 'q'}/nope")


def test_an_unreachable_server_is_named(data):
    with pytest.raises(MrlError, match=r"qdrant://127.0.0.1:9/docs: qdrant .* failed .*(refused|connect)"):
        build_qdrant("qdrant://127.0.0.1:9/docs", data[0][:10])


def test_one_index_kind_per_folder(data, tmp_path):
    from mrl.index import build_index

    xb = data[0]
    build_index("mrl", str(tmp_path / "a"), xb[:50], first_stages=["int8@16"])
    with pytest.raises(MrlError, match="holds a mrl index; one index kind per folder"):
        build_index("qdrant-edge", f"qdrant-edge://{tmp_path / 'a'}", xb[:50], first_stages=["int8@16"])
    build_index("qdrant-edge", f"qdrant-edge://{tmp_path / 'b'}", xb[:50], first_stages=["int8@16"])
    with pytest.raises(MrlError, match="holds a qdrant-edge index"):
        build_index("mrl", str(tmp_path / "b"), xb[:50], first_stages=["int8@16"], overwrite=True)
    assert MrlIndex.open(tmp_path / "a").count == 50


_HOLD = r"""
import sys, time
from mrl.index.qdrant import open_qdrant
open_qdrant("qdrant-edge://" + sys.argv[1]).count
print("open", flush=True)
time.sleep(60)
"""


def test_a_rebuild_respects_the_lock_and_a_failed_one_keeps_the_old_index(data, tmp_path, monkeypatch):
    from mrl.index.qdrant import edge

    xb, _ = data
    root = tmp_path / "i"
    QdrantEdgeIndex.build(root, xb[:300], [f"d{i}" for i in range(300)], first_stages=["int8@8"])
    close_edge(root)
    holder = subprocess.Popen([sys.executable, "-c", _HOLD, str(root)], stdout=subprocess.PIPE, text=True)
    try:  # a running service holds the shard: a rebuild is refused, not done under it
        assert holder.stdout.readline().strip() == "open"
        with pytest.raises(MrlError, match="another process has this qdrant-edge index open"):
            QdrantEdgeIndex.build(root, xb[:50], first_stages=["int8@8"], overwrite=True)
    finally:
        holder.kill()
        holder.wait()
    calls = []

    def failing(self, points):  # the rebuild dies after its first batch
        calls.append(len(points))
        if len(calls) > 1:
            raise RuntimeError("disk full")
        return real(self, points)

    real = edge.EdgeEngine.upsert
    monkeypatch.setattr(edge.EdgeEngine, "upsert", failing)
    with pytest.raises(MrlError, match="disk full"):
        QdrantEdgeIndex.build(root, xb, first_stages=["int8@8"], overwrite=True)
    monkeypatch.undo()
    index = QdrantEdgeIndex.open(root)
    assert index.count == 300 and index.keys(index.search(xb[:2], 1, f"int8@8:300,{D}:1").ids) == [["d0"], ["d1"]]
    assert len([p for p in root.iterdir() if p.name.startswith("shard")]) == 1  # the half-built shard is gone
    rebuilt = QdrantEdgeIndex.build(root, xb[:100], first_stages=["int8@8"], overwrite=True)
    assert rebuilt.count == 100 and len([p for p in root.iterdir() if p.name.startswith("shard")]) == 1


def test_a_qdrant_client_rebuild_is_built_beside_and_swapped(data, tmp_path, monkeypatch):
    """--overwrite on a Qdrant collection: the new one is built under its own name and the name (an
    alias) moves to it at the commit; a rebuild that fails leaves the old collection serving."""
    from mrl.index.qdrant import client as client_engine

    xb, _ = data
    uri = f"qdrant-local://{tmp_path / 'q'}/docs"
    build_qdrant(uri, xb[:300], [f"d{i}" for i in range(300)], first_stages=["int8@8"])

    def failing(self, points):
        raise RuntimeError("server went away")

    monkeypatch.setattr(client_engine.ClientEngine, "upsert", failing)
    with pytest.raises(MrlError, match="server went away"):
        build_qdrant(uri, xb[:100], first_stages=["int8@8"], overwrite=True)
    monkeypatch.undo()
    index = open_qdrant(uri)
    assert index.count == 300 and index.keys(index.search(xb[:1], 1, f"int8@8:300,{D}:1").ids) == [["d0"]]
    for n in (100, 50):  # the first rebuild replaces a plain collection, the second an alias
        rebuilt = build_qdrant(uri, xb[:n], first_stages=["int8@8"], overwrite=True)
        assert rebuilt.count == n and open_qdrant(uri).count == n
    client = open_qdrant(uri).engine.client
    names = sorted(c.name for c in client.get_collections().collections)
    assert len(names) == 1 and names[0].startswith("docs-mrl-")  # nothing left behind


def test_payload_fields_get_the_index_of_their_kind_and_a_kind_that_changes_gets_a_new_one(data, tmp_path):
    from mrl.index.qdrant.payload_filter import field_indexes, field_kinds, index_changes

    xb, _ = data
    payloads = [{"section": f"s{i % 5}", "year": 2000 + i % 30, "score": i / 7, "meta": {"lang": "de"},
                 "tags": ["a", "b"], "ok": i % 2 == 0, "mixed": i if i % 2 else "x", "odd key": "v"}
                for i in range(200)]
    kinds = field_kinds(payloads)
    assert kinds["mixed"] == ["integer", "keyword"] and kinds["meta.lang"] == ["keyword"]
    want = {"p.section": "keyword", "p.year": "integer", "p.score": "float", "p.meta.lang": "keyword",
            "p.tags": "keyword", "pb.ok": "keyword"}  # mixed kinds and keys Qdrant must quote: no index
    assert field_indexes(kinds) == want
    index = QdrantEdgeIndex.build(tmp_path / "q", xb[:200], [f"d{i}" for i in range(200)], first_stages=["int8@8"],
                                  payloads=payloads)
    assert {k: str(v.data_type).lower() for k, v in index.engine.shard.info().payload_schema.items()} == {
        k: f"payloadschematype.{v}" for k, v in want.items()}
    # a float arrives in the integer field: its index becomes a float one, and the filter still finds both
    index = index.add(xb[200:202], ["n0", "n1"], [{"year": 2003.5}, {"year": 1999}])
    assert index_changes(want, {**want, "p.year": "float"}) == ({"p.year": "float"}, ["p.year"])
    assert str(index.engine.shard.info().payload_schema["p.year"].data_type).lower() == "payloadschematype.float"
    got = index.search(xb[200:201], 3, "int8@8:300,32:3", filter={"must": [{"key": "year", "range": {"lt": 2000}}]})
    assert "n1" in index.keys(got.ids)[0]
    got = index.search(xb[200:201], 1, "int8@8:300,32:1", filter={"must": [{"key": "year", "range": {"gt": 2003.2,
                                                                                                 "lt": 2003.9}}]})
    assert index.keys(got.ids) == [["n0"]]
    close_edge(tmp_path / "q")


def test_the_graph_parameters_reach_qdrant_and_bad_ones_are_refused(data, tmp_path):
    xb, _ = data
    uri = f"qdrant-local://{tmp_path / 'q'}/docs"
    index = build_qdrant(uri, xb[:100], first_stages=["hnsw@8"], hnsw_m=8, ef_construction=33)
    config = index.engine.client.get_collection("docs").config.params.vectors
    graph = [v.hnsw_config for name, v in config.items() if v.hnsw_config and v.hnsw_config.m]
    assert [(g.m, g.ef_construct) for g in graph] == [(8, 33)]
    for m, ef in ((1, 80), (16, 0)):
        with pytest.raises(MrlError, match="M must be >= 2 and efConstruction >= 1"):
            QdrantEdgeIndex.build(tmp_path / f"bad-{m}", xb[:50], first_stages=["hnsw@8"], hnsw_m=m,
                                  ef_construction=ef)
