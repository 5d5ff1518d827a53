"""The funnel index: cascade invariants, upserts and deletes, persistence, bad input."""

from __future__ import annotations

import json

import faiss
import numpy as np
import pytest

from mrl.errors import MrlError
from mrl.index import MrlIndex, parse_cascade, parse_first_stage
from mrl.index.first_stages import structures as first_stage
from mrl.index.tuning.recall import lower_bound, recall_at_k, tied_truth, true_neighbours
from mrl.index.tuning.report import write_report
from mrl.index.tuning.tune import pick, tune
from mrl.prefix import unit_rows

D = 64


def matryoshka_like(n: int, d: int = D, seed: int = 0, clusters: int = 20) -> np.ndarray:
    """Clustered vectors whose per-dimension variance decays, so short prefixes carry most of the signal."""
    rng = np.random.default_rng(seed)
    scale = (np.arange(d) + 1.0) ** -0.6  # (d,)
    centers = rng.standard_normal((clusters, d)) * scale
    x = centers[rng.integers(clusters, size=n)] + 0.5 * rng.standard_normal((n, d)) * scale
    return x.astype(np.float32)


def reference(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact cosine search in plain numpy."""
    xb = xb / np.linalg.norm(xb, axis=1, keepdims=True)
    xq = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    s = xq @ xb.T  # (nq, nb)
    ids = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(s, ids, 1), ids


def assert_same_ranking(scores, ids, ref_scores, ref_ids, atol=1e-5):
    """Equal up to the order of near-ties (as faiss's tests compare searches)."""
    np.testing.assert_allclose(scores, ref_scores, atol=atol)
    differ = ids != ref_ids
    assert not differ.any() or np.all(np.abs(ref_scores[differ] - scores[differ]) < atol)
    for row, ref_row, s in zip(ids, ref_ids, ref_scores):
        sure = s > s[-1] + atol  # ids above the last score's tie group must all be there
        assert set(ref_row[sure]) <= set(row)


@pytest.fixture(scope="module")
def data():
    return matryoshka_like(1500), matryoshka_like(25, seed=1)


@pytest.fixture(scope="module")
def index(data, tmp_path_factory):
    xb, _ = data
    path = tmp_path_factory.mktemp("idx") / "i"
    return MrlIndex.build(path, xb, first_stages=["exact@16", "int8@16", "binary@16", "hnsw@16"], dtype="float32")


@pytest.mark.parametrize("kind", ["exact", "int8", "binary", "hnsw"])
def test_whole_corpus_shortlists_equal_exact_full_dim_search(index, data, kind):
    xb, xq = data
    n = len(xb)
    ref_s, ref_i = reference(xb, xq, 10)
    for cascade in (f"{kind}@16:{n},{D}:{n}", f"{kind}@16:{n},32:{n},{D}:10"):
        scores, ids = index.search(xq, 10, cascade)
        assert scores.dtype == np.float32 and ids.dtype == np.int64 and ids.shape == (len(xq), 10)
        assert_same_ranking(scores, ids, ref_s, ref_i)


def test_shortlists_beyond_the_corpus_are_clamped_to_it(index, data):
    """A request cannot make a search do more work than the index holds (10^12 once ran out of memory)."""
    xb, xq = data
    want = index.search(xq, 10, f"int8@16:{len(xb)},{D}:10")
    for huge in (len(xb) + 1, 10**7, 10**12):
        got = index.search(xq, 10, f"int8@16:{huge},32:{huge},{D}:10")
        np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("kind", ["int8", "hnsw", "exact"])
def test_queries_in_blocks_give_what_one_block_gives(index, data, kind, monkeypatch):
    """Memory per search is bounded by running queries in blocks; blocking changes no result."""
    import mrl.index.local as module
    import mrl.index.segments as rows_module

    xb, xq = data
    cascade = f"{kind}@16:300,32:50,{D}:10"
    want = index.search(xq, 10, cascade), index.exact_search(xq, 10)
    monkeypatch.setattr(module, "CANDIDATE_BUDGET", 700)  # 2 queries per block at a 300 shortlist
    monkeypatch.setattr(rows_module, "SCAN_BUDGET", 3 * (rows_module.BLOCK + 300))
    got = index.search(xq, 10, cascade), index.exact_search(xq, 10)
    for (ws, wi), (gs, gi) in zip(want, got):  # equal up to float32 ties (BLAS sums blocks in another order)
        assert_same_ranking(gs, gi, ws, wi)


def test_float16_store_matches_exact_search_on_what_it_stores(data, tmp_path):
    xb, xq = data
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16"])  # float16 by default
    es, ei = index.exact_search(xq, 10)
    s, i = index.search(xq, 10, f"int8@16:{len(xb)},{D}:10")
    np.testing.assert_array_equal(i, ei)
    np.testing.assert_allclose(s, es, atol=1e-6)
    _, ref_i = reference(xb, xq, 10)
    assert recall_at_k(ei, ref_i) > 0.97  # float16 rounding may swap near-ties only
    assert (tmp_path / "i" / "segments").is_dir() and index.manifest.dtype == "float16"


def test_short_cascades_trade_recall_for_work(index, data):
    _, xq = data
    _, truth = index.exact_search(xq, 10)
    recalls = [recall_at_k(index.search(xq, 10, f"int8@16:{n},{D}:10")[1], truth) for n in (10, 50, 400)]
    assert recalls[0] <= recalls[1] <= recalls[2] and recalls[2] > 0.9
    scores, ids = index.search(xq, 10)  # the default cascade
    assert ids.shape == (len(xq), 10) and (np.diff(scores, axis=1) <= 1e-6).all()


def test_add_upserts_delete_and_compact_track_a_plain_model(data, tmp_path):
    xb, xq = data
    index = MrlIndex.build(tmp_path / "i", xb[:1000], first_stages=["int8@16"], dtype="float32")
    store = {i: xb[i] for i in range(1000)}
    new = matryoshka_like(300, seed=5)
    ids = np.r_[np.arange(900, 1000), np.arange(5000, 5200)]  # 100 replace, 200 new
    index = index.add(new, ids)
    store.update(zip(ids.tolist(), new))
    index = index.delete([0, 1, 5000])
    for i in (0, 1, 5000):
        del store[i]
    assert index.count == len(store) == 1197 and len(index.rows.segments) == 2

    def check(ix):
        keys = np.array(sorted(store))
        ref_s, ref = reference(np.stack([store[k] for k in keys]), xq, 10)
        got_s, got = ix.search(xq, 10, f"int8@16:{ix.count + 10},{D}:10")
        assert_same_ranking(got_s, got, ref_s, keys[ref])

    check(index)
    check(MrlIndex.open(tmp_path / "i"))  # persisted
    compacted = index.compact()
    assert len(compacted.rows.segments) == 1 and compacted.count == 1197 and compacted.verify() == []
    check(compacted)
    assert not list((tmp_path / "i" / "dead").iterdir())  # tombstones of dropped segments are gone


def test_string_ids_keep_their_int_id_on_upsert(data, tmp_path):
    xb, xq = data
    keys = [f"doc-{i}" for i in range(50)]
    index = MrlIndex.build(tmp_path / "s", xb[:50], keys)
    _, ids = index.search(xb[7:8], 1, f"int8@{D}:50")
    assert index.keys(ids) == [["doc-7"]]
    index = index.add(xb[60:62], ["doc-7", "doc-new"])
    _, ids = index.search(xb[60:62], 1, f"int8@{D}:60")
    assert index.keys(ids) == [["doc-7"], ["doc-new"]] and ids[0, 0] == 7
    with pytest.raises(MrlError, match="uses string ids"):
        index.add(xb[:1], [3])


def test_bad_inputs_are_rejected_and_nothing_stored_changes(data, tmp_path):
    xb, xq = data
    path = tmp_path / "i"
    index = MrlIndex.build(path, xb[:100], first_stages=["int8@16"])
    before = (path / "manifest.json").read_text()
    nan = xb[:3].copy()
    nan[1, 5] = np.nan
    cases = [
        (lambda: index.add(nan, [500, 501, 502]), "row 1 holds NaN"),
        (lambda: index.add(xb[:2, :32], [500, 501]), "dimension 32 does not match the index's dimension 64"),
        (lambda: index.add(xb[:2], [500, 500]), "appears 2 times"),
        (lambda: index.add(xb[:2], [500]), "1 ids for 2 vectors"),
        (lambda: index.delete([3, 99999]), "not in the index, e.g. 99999; nothing was deleted"),
        (lambda: index.search(xq, 101), r"k=101 exceeds the number of vectors in the index \(100\)"),
        (lambda: index.search(xq, 0), "k must be a positive integer"),
        (lambda: index.search(xq, 10, "16:100,32:50,32:10"), "dimensions must increase"),
        (lambda: index.search(xq, 10, f"16:100,{D + 1}:10"), "exceeds the vectors' dimension 64"),
        (lambda: index.search(xq, 10, "16:10,64:100"), "a shortlist cannot grow"),
        (lambda: index.search(xq, 20, "16:100,64:10"), "k=20 exceeds the last shortlist"),
        (lambda: index.search(xq, 10, "hnsw@16:100,64:10"), "no hnsw@16 first stage"),
        (lambda: index.search(xq[:, :10], 5), "dimension 10 does not match"),
        (lambda: MrlIndex.build(path, xb[:10]), "an index already exists there"),
        (lambda: MrlIndex.build(tmp_path / "e", xb[:0]), "the corpus is empty"),
        (lambda: index.add(np.zeros((2, D), np.float32), [500, 501]), "row 0 is all zeros"),
        (lambda: index.search(np.zeros((1, D), np.float32), 5), "row 0 is all zeros"),
        (lambda: MrlIndex.build(tmp_path / "c", xb[:10], first_stages=["int8@16"], default_cascade="hnsw@16:5,64:3"),
         "the build has no hnsw@16 first stage"),
    ]
    for fn, message in cases:
        with pytest.raises(MrlError, match=message):
            fn()
    assert (path / "manifest.json").read_text() == before
    assert MrlIndex.open(path).verify() == []


@pytest.mark.parametrize("text,message", [
    ("", "is empty"), ("64", "is not DIM:SHORTLIST"), ("a:10", "is not an integer"), ("0:10", "must be positive"),
    ("ivf@64:10", "unknown first-stage kind 'ivf'"), ("64:100,int8@128:10", "only the first stage names a kind"),
    ("binary@12:10", "divisible by 8"), ("binary@64:100/8,128:10", "a binary first stage has no search width"),
    ("rabitq@64:100,128:10/4", "only the first stage takes a search width"), ("hnsw@64:100/0", "must be positive"),
])
def test_cascade_syntax_errors_name_the_problem(text, message):
    with pytest.raises(MrlError, match=message):
        parse_cascade(text, 384)


def test_cascade_and_first_stage_round_trip():
    assert str(parse_cascade(" int8@64:1000, 128:100 ,384:10")) == "int8@64:1000,128:100,384:10"
    assert str(parse_cascade("rabitq@256:100/128,384:10")) == "rabitq@256:100/128,384:10"
    assert parse_cascade("rabitq@256:100/128,384:10").width == 128
    assert parse_cascade("rabitq@384:100/64,384:10").stages == ((384, 100), (384, 10))  # exact rescoring
    assert parse_first_stage("hnsw@32").kind == "hnsw"
    with pytest.raises(MrlError, match="exceeds the vectors' dimension 64"):
        parse_first_stage("int8@128", 64)


def test_recall_lower_bound_shrinks_with_more_queries():
    rng = np.random.default_rng(0)
    few, many = (rng.binomial(10, 0.95, n) / 10 for n in (50, 5000))
    assert lower_bound(few, 0.9) < lower_bound(many, 0.9) < many.mean()
    assert lower_bound(few, 0.5) == pytest.approx(few.mean())
    assert lower_bound(np.ones(20), 0.9) == 1.0  # no spread, no margin


def test_recall_counts_a_duplicate_of_a_true_neighbour_as_found(data, tmp_path):
    xb, _ = data
    twins = np.concatenate([xb[:300], xb[:1]])  # row 300 is row 0 again
    index = MrlIndex.build(tmp_path / "i", twins, first_stages=["int8@16"])
    q = twins[:1] + 1e-3 * np.random.default_rng(0).standard_normal((1, twins.shape[1])).astype(np.float32)
    truth = true_neighbours(index, q, 1)
    assert sorted(truth[0][truth[0] >= 0].tolist()) == [0, 300]  # the exact search ranks one, both are true
    assert recall_at_k(np.array([[300]]), truth) == recall_at_k(np.array([[0]]), truth) == 1.0
    assert recall_at_k(np.array([[1]]), truth) == 0.0
    scores = np.array([[0.9, 0.8, 0.8, 0.7]], np.float32)
    np.testing.assert_array_equal(tied_truth(scores, np.array([[5, 6, 7, 8]]), 2), [[5, 6, 7, -1]])


def test_open_reports_a_missing_or_damaged_index(data, tmp_path):
    with pytest.raises(MrlError, match="not an mrl index"):
        MrlIndex.open(tmp_path / "nothing")
    xb, _ = data
    index = MrlIndex.build(tmp_path / "i", xb[:50])
    seg = index.rows.segments[0].name
    ids_file = tmp_path / "i" / "segments" / seg / "ids.npy"
    ids_file.write_bytes(ids_file.read_bytes()[:-8] + b"\x01" * 8)
    assert any("ids.npy: checksum mismatch" in p for p in MrlIndex.open(tmp_path / "i").verify())
    (tmp_path / "i" / "manifest.json").write_text("{ broken")
    with pytest.raises(MrlError, match="manifest.json: not valid JSON"):
        MrlIndex.open(tmp_path / "i")


def test_tune_picks_the_cheapest_cascade_that_meets_the_target(data, tmp_path):
    xb, xq = data
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@16", "binary@32"])
    best, rows = tune(index, k=10, target_recall=0.95, queries=xq, n_single=5)
    assert best is not None and best.recall >= best.recall_low >= 0.95
    assert all(r.p50_ms >= best.p50_ms for r in rows if r.recall_low >= 0.95)
    turned_down = [r for r in rows if r.recall >= 0.97 > r.recall_low]  # a sample mean above, its bound below
    assert turned_down and pick(rows, 0.97) not in turned_down and pick(rows, 0.97).recall_low >= 0.97
    fastest_batch = pick(rows, 0.95, batched=True)
    assert all(r.batch_ms_per_query >= fastest_batch.batch_ms_per_query for r in rows if r.recall_low >= 0.95)
    small = pick(rows, 0.0, max_bytes_per_vector=8)  # binary@32 keeps 4 B/vector, int8@16 keeps 16
    assert small is not None and small.cascade.startswith("binary@32")
    _, truth = index.exact_search(xq, 10)
    assert recall_at_k(index.search(xq, 10, best.cascade)[1], truth) == pytest.approx(best.recall)
    write_report(rows, best, 0.95, 10, tmp_path / "report")
    report = json.loads((tmp_path / "report" / "tune.json").read_text())
    assert report["best"]["cascade"] == best.cascade and len(report["rows"]) == len(rows)
    assert (tmp_path / "report" / "tune.png").read_bytes()[:4] == b"\x89PNG"
    stored = index.set_default_cascade(best.cascade, {"recall": best.recall})
    assert MrlIndex.open(tmp_path / "i").manifest.default_cascade == best.cascade == str(stored.default_cascade)


@pytest.mark.parametrize("kind", ["ivf8", "ivfpq", "rabitq"])
def test_inverted_file_first_stages_train_on_large_segments_and_stay_exact_at_full_width(tmp_path, kind, monkeypatch):
    xb, xq = matryoshka_like(20_000, seed=3), matryoshka_like(20, seed=4)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=[f"{kind}@32", f"{kind}@{D}"], dtype="float32")
    spec = index.specs[0]
    structure = index.rows.segments[0].structure(spec)
    assert structure.nlist == 1024  # a trained inverted file, 8 sqrt(n) lists
    es, ei = index.exact_search(xq, 10)
    s, i = index.search(xq, 10, f"{kind}@32:{len(xb)}/1024,{D}:10")  # every list, every vector
    assert_same_ranking(s, i, es, ei)
    s, i = index.search(xq, 10, f"{kind}@{D}:{len(xb)}/1024,{D}:10")  # full-dim codes, rescored exactly
    assert_same_ranking(s, i, es, ei)
    quantizer = faiss.downcast_index(structure.quantizer)  # float16 centroids, from float32 k-means
    assert isinstance(quantizer, faiss.IndexScalarQuantizer) and quantizer.ntotal == 1024
    batch = unit_rows(matryoshka_like(first_stage.BLAS_COARSE_MIN_QUERIES + 6, seed=5)[:, :32])
    ours = first_stage.search(spec, structure, batch, 50, width=16)  # coarse step by BLAS for a batch
    theirs = structure.search(batch, 50, params=faiss.SearchParametersIVF(nprobe=16))
    assert_same_ranking(*ours, *theirs, atol=1e-4)
    monkeypatch.setattr(first_stage, "QUERY_BLOCK", 5)  # the same in blocks of 5 queries
    assert_same_ranking(*first_stage.search(spec, structure, batch, 50, width=16), *theirs, atol=1e-4)
    assert recall_at_k(index.search(xq, 10, f"{kind}@32:500,64:10")[1], ei) > 0.9
    narrow = recall_at_k(index.search(xq, 10, f"{kind}@32:100/1,64:10")[1], ei)
    wide = recall_at_k(index.search(xq, 10, f"{kind}@32:100/64,64:10")[1], ei)
    assert narrow < wide  # the width is the number of lists scanned
    best, rows = tune(index, k=10, target_recall=0.95, queries=xq, n_single=2)
    assert {parse_cascade(r.cascade).width for r in rows} >= {8, 64}  # tune searches widths too
    assert best is not None and parse_cascade(best.cascade).width is not None
    small = index.add(xb[:5] * -1, list(range(50_000, 50_005)))  # a tiny segment: flat int8 inside
    assert not hasattr(small.rows.segments[1].structure(spec), "nlist")
    assert recall_at_k(small.search(-xb[:5], 1, f"{kind}@32:50,64:1")[1], np.arange(50_000, 50_005)[:, None]) == 1
    for fn in (lambda: index.search(xq, 10, "16:100/4,64:10"), lambda: index.set_default_cascade("16:100/4,64:10")):
        with pytest.raises(MrlError, match="width applies to hnsw, ivf8, ivfpq, rabitq first stages, not to exact@16"):
            fn()
    assert MrlIndex.open(tmp_path / "i").manifest.default_cascade == index.manifest.default_cascade


def test_fast_scan_rabitq_from_earlier_versions_is_searched_in_lookup_table_blocks(monkeypatch):
    # rabitq folders built before the plain scan hold a fast-scan structure: still searched, in
    # query blocks small enough for faiss's 32-bit lookup-table offsets (here 5 queries each)
    xb = unit_rows(matryoshka_like(2_000, seed=6)[:, :32])
    structure = faiss.IndexIVFRaBitQFastScan(faiss.IndexFlatIP(32), 32, 16, faiss.METRIC_INNER_PRODUCT)
    structure.train(xb)
    structure.add(xb)
    batch = unit_rows(matryoshka_like(first_stage.BLAS_COARSE_MIN_QUERIES + 6, seed=7)[:, :32])
    theirs = structure.search(batch, 20, params=faiss.SearchParametersIVF(nprobe=4))
    monkeypatch.setattr(first_stage, "LUT_BYTES_MAX", 5 * 4 * structure.M2 * 16)
    spec = parse_first_stage("rabitq@32")
    assert_same_ranking(*first_stage.search(spec, structure, batch, 20, width=4), *theirs, atol=1e-4)


def test_huge_and_tiny_values_keep_their_direction(tmp_path):
    """Squares of 1e38 overflow float32 and of 1e-42 underflow: such rows were stored as zeros."""
    rng = np.random.default_rng(5)
    xb = rng.standard_normal((50, 16)).astype(np.float32)
    xb[3] *= 1e37  # values up to ~4e37
    xb[7] *= 1e-41
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["int8@8"], dtype="float32")
    stored = index.rows.segments[0].vectors
    np.testing.assert_allclose(np.linalg.norm(stored, axis=1), 1.0, atol=1e-3)
    for row in (3, 7):
        np.testing.assert_allclose(stored[row], xb[row].astype(np.float64) / np.linalg.norm(xb[row].astype(np.float64)),
                                   atol=1e-3 if row == 7 else 1e-6)  # denormals carry few bits
        assert index.search(xb[row : row + 1], 1, "int8@8:50,16:1")[1][0, 0] == row


def test_tune_widens_a_first_stage_past_its_grid_until_the_target_or_the_budget(tmp_path):
    xb, xq = matryoshka_like(5_000, seed=8), matryoshka_like(40, seed=9)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["binary@8"], dtype="float32")
    outcomes: dict = {}
    best, rows = tune(index, k=1, target_recall=0.99, queries=xq, n_single=3, outcomes=outcomes)
    from mrl.index.tuning.tune import candidate_cascades

    grid_top = max(c.first[1] for c in candidate_cascades(index, 1))
    widened = [r for r in rows if parse_cascade(r.cascade).first[1] > 1000]  # past the grid's 1000 x k
    assert grid_top <= 1000 and widened, [r.cascade for r in rows]
    outcome = outcomes["binary@8/2"]
    statuses = ("met", "slower than exact", "next slower than exact", "no gain")
    assert outcome["status"] in statuses and outcomes["exact"]["p50_ms"] > 0
    family = [r for r in rows if r.cascade.startswith("binary@8:") and len(parse_cascade(r.cascade).stages) == 2]
    if outcome["status"] == "met":
        assert best is not None and best.recall_low >= 0.99
    elif outcome["status"] == "slower than exact":  # stopped by the budget, not at an arbitrary grid end
        assert outcome["p50_ms"] > outcomes["exact"]["p50_ms"]
    elif outcome["status"] == "next slower than exact":  # the last doubling's added time, doubled, passes exact
        p, before = family[-1].p50_ms, family[-2].p50_ms
        assert p + 2 * (p - before) > outcomes["exact"]["p50_ms"]
    else:  # stopped because two doublings added (almost) no recall
        assert family[-1].recall - family[-3].recall < 0.002


def test_tune_stops_widening_a_first_stage_whose_recall_no_longer_rises(tmp_path, monkeypatch):
    import mrl.index.tuning.tune as tune_module

    xb, xq = matryoshka_like(5_000, seed=10), matryoshka_like(20, seed=11)
    index = MrlIndex.build(tmp_path / "i", xb, first_stages=["binary@8"], dtype="float32")
    monkeypatch.setattr(tune_module, "per_query_recall", lambda found, truth: np.full(len(found), 0.5))
    monkeypatch.setattr(tune_module, "_exact_latency", lambda *a, **kw: 1e9)  # the budget never stops it
    outcomes: dict = {}
    best, rows = tune(index, k=1, target_recall=0.99, queries=xq, n_single=2, outcomes=outcomes)
    grid_top = max(c.first[1] for c in tune_module.candidate_cascades(index, 1))
    plans = [parse_cascade(r.cascade) for r in rows]
    widened = [c for c in plans if c.first[1] > grid_top and len(c.stages) == 2]
    assert best is None and outcomes["binary@8/2"]["status"] == "no gain"
    assert len(widened) == 2  # recall flat over two doublings: stopped, not widened to the whole corpus


def test_prefix_cosines_on_a_float16_memmap_match_numpy(tmp_path):
    """The exact scan's block scorer: cast in SCAN_ROWS pieces (a partial last one), a zero prefix scores 0."""
    from mrl.index.segment import SCAN_ROWS, prefix_cosines

    x = matryoshka_like(SCAN_ROWS + 37, seed=9).astype(np.float16)
    x[5, :16] = 0  # a zero 16-dim prefix
    np.save(tmp_path / "x.npy", x)
    stored = np.load(tmp_path / "x.npy", mmap_mode="r")  # read-only, as an index opens its vectors
    q = unit_rows(matryoshka_like(3, seed=10)[:, :16])
    got = prefix_cosines(stored, q)
    xb = x[:, :16].astype(np.float64)
    norms = np.linalg.norm(xb, axis=1)
    want = (q.astype(np.float64) @ xb.T) / np.where(norms > 0, norms, 1.0)
    assert got.shape == (3, SCAN_ROWS + 37) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert (got[:, 5] == 0).all()
