"""The faiss structures of the first stages on the mrl backend (kinds: :mod:`.kinds`).

rabitq is faiss's plain RaBitQ scan, not its SIMD fast-scan variant: on 1M x 768 the plain scan
with 4-bit queries (faiss's default ``qb``) was 15-35% faster at the same recall and needs no
padding of the lists to blocks of 32 (124.6 against 137.8 bytes per vector at d = 768).

Both inverted files keep their centroids in float16 (2 d bytes per list, ~6-13 bytes per
vector at 1M vectors and d = 384-768): ranking them is a memory-bound scan, so half the bytes
is about half the time.

An ivf8, ivfpq or rabitq segment smaller than ``IVF_MIN`` vectors stores a flat int8 structure
instead: too few vectors to train on, and a flat scan of so few costs nothing.

The inverted-file kinds scan ``width`` lists per query (faiss's ``nprobe``); without a width,
enough lists to hold about ``PROBE_FACTOR`` times the shortlist (at least ``MIN_PROBE``).
For hnsw the width is ``efSearch`` (default: the shortlist, at least 40: :func:`~.kinds.ef_search`).

Every structure returns ``(scores, rows)``: rows are positions in its segment, scores grow
with similarity (for binary codes ``d - 2 * hamming``, the dot product of the sign vectors).
"""

from __future__ import annotations

import threading
from contextlib import nullcontext
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M, FirstStageSpec, ef_search, kind, nlist

TRAIN_SAMPLE = 100_000  # vectors used to fit the int8 ranges (inverted files: at least 25 per list)
IVF_MIN = 20_000  # smallest segment that gets a trained inverted file (ivfpq, rabitq)
PROBE_FACTOR, MIN_PROBE = 8, 32  # an IVF search reads about PROBE_FACTOR x shortlist codes, >= MIN_PROBE lists
BLAS_COARSE_MIN_QUERIES = 64  # from this many queries, inverted files rank centroids with one BLAS product
QUERY_BLOCK = 256  # queries per block of that product (256 x 8,192 lists x 4 B = 8 MB)
LUT_BYTES_MAX = 1 << 30  # fast-scan lookup tables per query block (faiss indexes them with int32)


def _faiss() -> Any:
    import faiss

    return faiss


def file_name(spec: FirstStageSpec) -> str:
    return f"{spec.kind}-{spec.dim}.faiss"


def build(spec: FirstStageSpec, xb: np.ndarray, hnsw_m: int = HNSW_M, ef_construction: int = EF_CONSTRUCTION,
          seed: int = 0) -> Any:
    """Build the structure for ``spec`` over ``xb``, the normalised ``spec.dim``-prefixes ``(nb, d)``."""
    faiss = _faiss()
    xb = np.ascontiguousarray(xb, dtype=np.float32)
    d = xb.shape[1]
    if spec.kind == "binary":
        index = _counting(faiss.IndexBinaryFlat(d))
        if len(xb):
            index.add(np.packbits(xb > 0, axis=1))
        return index
    index = _make(faiss, spec.kind, d, len(xb), hnsw_m, ef_construction)
    if not index.is_trained:
        if len(xb):
            rng = np.random.default_rng(seed)
            m = max(TRAIN_SAMPLE, 25 * getattr(index, "nlist", 0))  # k-means wants tens of points per list
            sample = xb if len(xb) <= m else xb[rng.choice(len(xb), m, replace=False)]
            index.train(sample)
        else:  # an empty segment still needs a valid (trained) structure
            index.train(np.concatenate([np.eye(d, dtype=np.float32), -np.eye(d, dtype=np.float32)]))
    if len(xb):
        index.add(xb)  # inverted files assign with float32 centroids (BLAS): fast
    if hasattr(index, "nlist"):
        _fp16_coarse_quantizer(index)
    return index


def _make(faiss: Any, name: str, d: int, n: int, hnsw_m: int, ef_construction: int) -> Any:
    """An empty faiss structure of kind ``name``; an inverted file below ``IVF_MIN`` vectors is a flat int8 one."""
    ip, qt8 = faiss.METRIC_INNER_PRODUCT, faiss.ScalarQuantizer.QT_8bit
    if kind(name).inverted and n >= IVF_MIN:
        coarse = faiss.IndexFlatIP(d)
        if name == "ivf8":  # the codes of the whole vector, as int8 stores them
            return faiss.IndexIVFScalarQuantizer(coarse, d, nlist(n), qt8, ip, False)
        if name == "ivfpq":
            m = next(m for m in range(max(1, d // 8), 0, -1) if d % m == 0)  # ~1 byte per 8 dims
            return faiss.IndexIVFPQ(coarse, d, nlist(n), m, 8, ip)
        return faiss.IndexIVFRaBitQ(coarse, d, nlist(n), ip)
    if name == "exact":
        return faiss.IndexFlatIP(d)
    if name == "hnsw":
        index = faiss.IndexHNSWSQ(d, qt8, hnsw_m, ip)
        index.hnsw.efConstruction = ef_construction
        return index
    return faiss.IndexScalarQuantizer(d, qt8, ip)  # int8, and inverted files too small to train


def _fp16_coarse_quantizer(index: Any) -> None:
    """Swap a built inverted file's float32 centroids for float16 ones.

    Ranking the centroids is a scan of all of them per query, bound by memory: 8,192 x 768
    float32 centroids (25 MB, 25 bytes per vector at 1M) take ~0.6 ms on one thread here, the
    same in float16 ~0.23 ms, with the same lists chosen for 99.96% of probes. k-means and the
    assignment of the vectors run before, in float32 with BLAS (faiss's float16 scan is no
    BLAS: assigning 1M vectors through it added ~60 s per structure). Codes hold residuals to
    the float32 centroids; decoding against the rounded ones moves a vector by ~5e-4 of a
    centroid's norm, far below the codes' own error (RaBitQ's ~1/sqrt(d)).
    """
    faiss = _faiss()
    centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, index.nlist)  # (nlist, d)
    quantizer = faiss.IndexScalarQuantizer(index.d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT)
    quantizer.add(centroids)
    quantizer.this.disown()  # the inverted file owns and frees it
    index.quantizer = quantizer
    index.own_fields = True


def save(index: Any, path: Path) -> None:
    faiss = _faiss()
    if isinstance(index, faiss.IndexBinary):
        faiss.write_index_binary(index, str(path))
    else:
        faiss.write_index(index, str(path))


def load(spec: FirstStageSpec, source: Path | BinaryIO) -> Any:
    """Read a structure from a path or from an open binary file (streamed, no second copy in memory)."""
    faiss = _faiss()
    where = str(source) if isinstance(source, (str, Path)) else faiss.PyCallbackIOReader(source.read)
    if spec.kind == "binary":
        return _counting(faiss.read_index_binary(where))
    return faiss.read_index(where)


def _counting(index: Any) -> Any:
    """Select a binary scan's top-n by counting Hamming distances, not with a heap.

    Distances are small integers (0 .. d), so faiss's counting selection costs about the same for
    any n while a heap grows with it: a 500-candidate shortlist from 50,001 x 256 bits takes
    0.20 ms against 0.29 (2,000: 0.19 against 0.82), the same distances; equal at n = 10.
    A runtime flag, not stored in the file: set on every build and load.
    """
    index.use_heap = False
    return index


def search(
    spec: FirstStageSpec, index: Any, xq: np.ndarray, n: int, width: int | None = None, skip: int = 0,
    sel: Any = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Top-``n`` of ``xq`` (normalised prefixes ``(nq, d)``): ``(scores, rows)``, rows -1 when short.

    ``width``: lists to scan (inverted files) or ``efSearch`` (hnsw); ignored by flat structures.
    ``skip`` (inverted files): leave out each query's ``skip`` best-ranked lists, which a narrower
    scan already read; the top-``n`` of both scans together is that of one scan at ``width``.
    """
    if skip and not hasattr(index, "nlist"):
        raise ValueError(f"{spec}: only inverted files can skip lists a narrower scan read")
    xq = np.ascontiguousarray(xq, dtype=np.float32)
    n = max(1, min(n, index.ntotal)) if index.ntotal else 0
    if n == 0:
        return np.zeros((len(xq), 0), np.float32), np.zeros((len(xq), 0), np.int64)
    faiss = _faiss()
    selected = {"sel": sel} if sel is not None else {}
    if spec.kind == "binary":
        dist, rows = index.search(np.packbits(xq > 0, axis=1), n,
                                  params=faiss.SearchParameters(sel=sel) if sel is not None else None)
        scores = spec.dim - 2 * dist.astype(np.float32)
        return scores, rows.astype(np.int64)
    params = faiss.SearchParameters(sel=sel) if sel is not None else None
    if kind(spec.kind).graph:  # per call, so concurrent searches do not share a setting
        params = faiss.SearchParametersHNSW(efSearch=ef_search(n, width), **selected)
    elif hasattr(index, "nlist"):  # by default probe enough lists to read ~PROBE_FACTOR x n codes
        nprobe = width or max(MIN_PROBE, int(np.ceil(PROBE_FACTOR * n * index.nlist / index.ntotal)))
        return _ivf_search(index, xq, n, min(index.nlist, nprobe), skip, sel)
    scores, rows = index.search(xq, n, params=params)
    return scores.astype(np.float32), rows.astype(np.int64)


_COUNTER_LOCK = threading.Lock()  # faiss's distance counters are process-wide: one counted search at a time


def counted_search(
    spec: FirstStageSpec, index: Any, xq: np.ndarray, n: int, width: int | None = None, skip: int = 0,
    sel: Any = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """:func:`search`, plus the codes each query scanned ``(nq,)`` and the bytes of one code.

    Flat structures scan every code. hnsw and inverted files report faiss's own distance
    counters (``hnsw_stats`` / ``indexIVF_stats``) for the whole block, spread evenly over its
    queries; counted searches hold a lock so that concurrent ones do not mix their counts.
    """
    faiss = _faiss()
    counters = faiss.cvar.hnsw_stats if spec.kind == "hnsw" else \
        faiss.cvar.indexIVF_stats if hasattr(index, "nlist") else None
    with _COUNTER_LOCK if counters is not None else nullcontext():
        if counters is not None:
            counters.reset()
        scores, rows = search(spec, index, xq, n, width, skip, sel)
        per_query = counters.ndis / max(len(xq), 1) if counters is not None else float(index.ntotal)
    return scores, rows, np.full(len(xq), per_query), code_bytes(index)


def code_bytes(index: Any) -> float:
    """Bytes of one stored code: what a scan reads per vector (a graph's links not counted)."""
    storage = getattr(index, "storage", None)  # hnsw: the codes live in its storage
    target = _faiss().downcast_index(storage) if storage is not None else index
    size = getattr(target, "code_size", None)
    return float(size if size is not None else target.sa_code_size())


def _ivf_search(index: Any, xq: np.ndarray, n: int, nprobe: int, skip: int = 0,
                sel: Any = None) -> tuple[np.ndarray, np.ndarray]:
    """faiss's inverted-file search, in query blocks, the coarse step of big blocks done by BLAS.

    Blocks: faiss 1.15's multi-query fast-scan kernel indexes its per-(query, list) lookup
    tables (queries x nprobe x M2 x 16 bytes) with 32-bit integers; past 2 GB it reads out of
    bounds (1,000 queries x 1,024 lists on a fast-scan rabitq@768 crashed the benchmark), so for
    fast-scan structures (rabitq folders built before mrl used the plain scan) a block stays
    under 1 GB of tables. Coarse step: faiss ranks float16 centroids one query at a time (a
    scan of all of them, ~0.2 ms for 8,192 x 768); for a block of queries, decoding them to
    float32 once and multiplying costs microseconds per query. The chosen lists then go to
    faiss's ``search_preassigned``, so the scan and its results are faiss's own. With ``skip``,
    faiss's quantizer ranks the lists (best first) and the ``skip`` best are left out.
    """
    faiss = _faiss()
    block = QUERY_BLOCK
    if isinstance(index, faiss.IndexIVFFastScan):
        block = max(1, min(block, LUT_BYTES_MAX // (nprobe * index.M2 * 16)))
    selected = {"sel": sel} if sel is not None else {}
    params = faiss.SearchParametersIVF(nprobe=nprobe, **selected)
    if skip >= nprobe:
        return np.full((len(xq), n), -np.inf, np.float32), np.full((len(xq), n), -1, np.int64)
    if not skip and len(xq) <= block and len(xq) < BLAS_COARSE_MIN_QUERIES:
        scores, rows = index.search(xq, n, params=params)
        return scores.astype(np.float32), rows.astype(np.int64)
    if skip:
        params = faiss.SearchParametersIVF(nprobe=nprobe - skip, **selected)
    else:
        centroids = faiss.downcast_index(index.quantizer).reconstruct_n(0, index.nlist)  # (nlist, d) float32
    scores = np.empty((len(xq), n), np.float32)
    rows = np.empty((len(xq), n), np.int64)
    for a in range(0, len(xq), block):
        q = xq[a : a + block]  # (b, d)
        if skip:
            ranked_sims, ranked = index.quantizer.search(q, nprobe)  # best first
            lists = np.ascontiguousarray(ranked[:, skip:], dtype=np.int64)  # (b, nprobe - skip)
            coarse = np.ascontiguousarray(ranked_sims[:, skip:], dtype=np.float32)
        else:
            sims = q @ centroids.T  # (b, nlist)
            lists = np.argpartition(-sims, nprobe - 1, axis=1)[:, :nprobe] if nprobe < index.nlist else \
                np.broadcast_to(np.arange(index.nlist), sims.shape)
            lists = np.ascontiguousarray(lists, dtype=np.int64)  # (b, nprobe)
            coarse = np.ascontiguousarray(np.take_along_axis(sims, lists, axis=1), dtype=np.float32)
        s, r = scores[a : a + len(q)], rows[a : a + len(q)]
        index.search_preassigned_c(len(q), faiss.swig_ptr(q), n, faiss.swig_ptr(lists), faiss.swig_ptr(coarse),
                                   faiss.swig_ptr(s), faiss.swig_ptr(r), False, params, None)
    return scores, rows
