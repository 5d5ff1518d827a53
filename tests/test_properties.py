"""Property-based tests (hypothesis): the cascade grammar, the data loaders, and the index's invariant
that any sequence of changes leaves search equal to exact search over the expected live set."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mrl.data.beir import load_beir
from mrl.data.pairs import load_pairs
from mrl.errors import MrlError
from mrl.index import MrlIndex, parse_cascade
from mrl.index.cascade import Cascade
from mrl.index.first_stages.kinds import NAMES as FIRST_STAGE_KINDS
from mrl.index.first_stages.kinds import WIDTH_KINDS

FAST = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@st.composite
def cascades(draw) -> Cascade:
    kind = draw(st.sampled_from((None, *FIRST_STAGE_KINDS)))
    n_stages = draw(st.integers(1, 4))
    dims = sorted(draw(st.lists(st.integers(1, 64), min_size=n_stages, max_size=n_stages, unique=True)))
    if kind == "binary":
        dims[0] = 8 * max(1, dims[0] // 8)
        dims = [dims[0]] + [d for d in dims[1:] if d > dims[0]]
    shortlists = sorted(draw(st.lists(st.integers(1, 10**6), min_size=len(dims), max_size=len(dims))), reverse=True)
    width = draw(st.none() | st.integers(1, 4096)) if kind in WIDTH_KINDS else None
    return Cascade(kind, tuple(zip(dims, shortlists)), width)


@FAST
@given(cascades())
def test_a_written_cascade_parses_back_to_itself(cascade):
    assert parse_cascade(str(cascade)) == cascade


@FAST
@given(st.text(alphabet=st.sampled_from("0123456789@:/,. -xintbhsrapqe8\u00e9\ud7ff"), max_size=40))
def test_any_text_is_a_cascade_or_a_clear_error(text):
    try:
        plan = parse_cascade(text, 64)
    except MrlError as e:
        assert str(e)  # named, never another exception type
        return
    dims = [d for d, _ in plan.stages]
    assert all(1 <= d <= 64 for d in dims) and dims == sorted(dims)
    assert all(a >= b for (_, a), (_, b) in zip(plan.stages, plan.stages[1:]))


_FIELDS = st.sampled_from(['"_id"', '"text"', '"title"', '"query-id"', '"corpus-id"', '"score"', '"anchor"',
                           '"positive"', '"negative"'])
_LINES = st.lists(st.one_of(
    st.builds(lambda k, v: "{" + f"{k}: {v}" + "}", _FIELDS, st.sampled_from(['"a"', "1", "null", '"d1"', "[]"])),
    st.builds(lambda a, b: json.dumps({"_id": a, "text": b}), st.text(max_size=5), st.text(max_size=20)),
    st.text(max_size=30),
    st.sampled_from(["q1\td1\t1", "q1\td1\tinf", "q1\td2\t-1", "query-id\tcorpus-id\tscore", "q2\td1", "\ufeff"]),
), max_size=6)


@FAST
@given(corpus=_LINES, queries=_LINES, qrels=_LINES, raw=st.binary(max_size=40))
def test_any_beir_folder_loads_or_gives_a_clear_error(corpus, queries, qrels, raw):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qrels").mkdir()
        (root / "corpus.jsonl").write_text("\n".join(corpus), encoding="utf-8", errors="surrogatepass")
        (root / "queries.jsonl").write_bytes("\n".join(queries).encode("utf-8", "surrogatepass") + raw)
        (root / "qrels" / "test.tsv").write_text("\n".join(qrels), encoding="utf-8", errors="surrogatepass")
        try:
            data = load_beir(root, "test")
        except MrlError as e:
            assert str(e)
            return
        assert set(data.qrels) <= set(data.queries)
        assert all(isinstance(g, int) for judged in data.qrels.values() for g in judged.values())


@FAST
@given(lines=_LINES, raw=st.binary(max_size=30))
def test_any_pairs_file_loads_or_gives_a_clear_error(lines, raw):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "pairs.jsonl"
        path.write_bytes("\n".join(lines).encode("utf-8", "surrogatepass") + raw)
        try:
            load_pairs(path)
        except MrlError as e:
            assert str(e)


D = 8
_OPS = st.lists(st.one_of(
    st.tuples(st.just("add"), st.lists(st.integers(0, 40), min_size=1, max_size=8, unique=True), st.integers(0, 99)),
    st.tuples(st.just("delete"), st.lists(st.integers(0, 40), min_size=1, max_size=4, unique=True), st.just(0)),
    st.tuples(st.just("compact"), st.just([]), st.just(0)),
), min_size=1, max_size=6)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=_OPS, kind=st.sampled_from(["int8", "hnsw", "binary"]))
def test_any_sequence_of_changes_keeps_search_equal_to_exact_search(ops, kind):
    """After adds (upserts), deletes and compactions, a whole-corpus cascade returns exactly the
    expected live set's exact ranking, whatever the history."""
    rng = np.random.default_rng(0)
    live = {i: rng.standard_normal(D).astype(np.float32) for i in range(20)}
    xq = rng.standard_normal((3, D)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        index = MrlIndex.build(Path(tmp) / "i", np.stack(list(live.values())), list(live),
                               first_stages=[f"{kind}@{D}"])
        for op, ids, seed in ops:
            if op == "add":
                x = np.random.default_rng(seed).standard_normal((len(ids), D)).astype(np.float32)
                index = index.add(x, ids)
                live.update(zip(ids, x))
            elif op == "delete":
                present = [i for i in ids if i in live]
                if not present or len(present) >= len(live):
                    with pytest.raises(MrlError):
                        index.delete(ids)
                    continue
                if len(present) < len(ids):  # an unknown id: nothing is deleted
                    with pytest.raises(MrlError, match="nothing was deleted"):
                        index.delete(ids)
                    continue
                index = index.delete(ids)
                for i in ids:
                    del live[i]
            else:
                index = index.compact()
            assert index.count == len(live)
        reopened = MrlIndex.open(Path(tmp) / "i")
        keys = np.array(list(live))
        xb = np.stack(list(live.values()))
        xb /= np.linalg.norm(xb, axis=1, keepdims=True)
        q = xq / np.linalg.norm(xq, axis=1, keepdims=True)
        k = min(5, len(live))
        want = np.sort(q @ xb.T, axis=1)[:, ::-1][:, :k]
        for idx in (index, reopened):
            scores, ids = idx.search(xq, k, f"{kind}@{D}:{len(live)},{D}:{k}")
            assert set(ids.ravel().tolist()) <= set(keys.tolist())
            np.testing.assert_allclose(scores, want, atol=2e-3)  # float16 storage
            assert idx.verify() == []
