"""Funnel search vs its peers, single thread: recall@k against exact search, latency, memory, build time.

Recall@k counts a returned vector as a true neighbour when it is in the exact top-k or ties the
k-th's score (within 1e-6: a duplicate document), for every method alike (mrl.index.tuning.recall.tied_truth).

Peers, all on the same unit-normalised vectors:
  exact        faiss IndexFlatIP on the full D (the reference and the ground truth)
  refine@d     faiss IndexRefineFlat over IndexPreTransform(RemapDimensionsTransform(D, d, uniform=False),
               IndexFlatIP(d)): FAISS's own prefix-then-rerank funnel, full vectors in RAM
  hnswlib      hnswlib HNSW on the full vectors (M=16)
  mrl          MrlIndex (full vectors float16 on disk, memory-mapped), cascades picked by `tune` on
               separate tuning queries, then measured on the evaluation queries

Data sets:
  --data real --embeddings DIR     corpus.npy / queries-test.npy / queries-dev.npy from embed_corpus.py
  --data clusters --n 1000000 --dim 768 --spread 1
                                   Gaussian clusters under a decaying spectrum, diffuse (spread 1)
                                   or tight (spread 0.25); see clusters()
  --data synthetic --n 1000000 --dim 768 --fit DIR
                                   a two-level cluster generator with full covariances fitted to the
                                   real embeddings in DIR, its spectrum stretched to --dim
                                   (see fit_generator; --check-generator compares it with the real data)

    OMP_NUM_THREADS=1 python benchmarks/funnel_vs_peers.py --data synthetic --n 1000000 --dim 768 \
        --fit runs/embeddings/debian-mrl --out runs/bench-funnel/syn-1m-768

The process sets OPENBLAS_CORETYPE=SkylakeX (override with MRL_BENCH_OPENBLAS_CORETYPE; faiss-cpu's
bundled OpenBLAS otherwise runs a slower kernel here) and reports the BLAS kernels threadpoolctl sees;
tests and CI never set it.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
# this machine's environment sets OPENBLAS_CORETYPE=Haswell; SkylakeX runs faiss's BLAS ~1.8x faster here
os.environ["OPENBLAS_CORETYPE"] = os.environ.get("MRL_BENCH_OPENBLAS_CORETYPE", "SkylakeX")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import faiss  # noqa: E402
import numpy as np  # noqa: E402

from mrl.errors import MrlError  # noqa: E402
from mrl.index import MrlIndex  # noqa: E402
from mrl.index.cascade import parse_cascade  # noqa: E402
from mrl.index.tuning.adaptive import tune_adaptive  # noqa: E402
from mrl.index.tuning.recall import TIE_EXTRA, recall_at_k, tied_truth  # noqa: E402
from mrl.index.tuning.report import describe_outcomes  # noqa: E402
from mrl.index.tuning.tune import pick, tune  # noqa: E402
from mrl.index.work import Work  # noqa: E402
from mrl.prefix import unit_rows  # noqa: E402

K_FACTORS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
EF_SEARCH = (10, 16, 32, 64, 128, 256, 512, 1024, 2048)
BUILD_THREADS = 1  # set by --build-threads; every search runs on one thread
MAX_FIRST_STAGE_BYTES = 128.0  # the memory budget for mrl's first stage (--max-bytes)


# ---------------------------------------------------------------------------- data
def fit_generator(x: np.ndarray, coarse: int = 256, fine: int = 4096, seed: int = 0) -> dict:
    """A two-level cluster model of real embeddings with full covariances at every level.

    x = mean + coarse centre + fine offset + residual, each level Gaussian with the covariance
    measured on ``x`` (k-means with ``coarse`` then ``fine`` centroids). Full covariances keep the
    correlations between coordinates, which decide how well a prefix predicts the full-length
    similarity; a per-dimension (diagonal) model loses them and makes every prefix look useless.
    """
    x = unit_rows(x)
    n, d = x.shape

    def kmeans(k: int) -> tuple[np.ndarray, np.ndarray]:
        km = faiss.Kmeans(d, k, niter=20, seed=seed)
        km.train(x)
        return km.centroids, km.index.search(x, 1)[1][:, 0]

    c1, l1 = kmeans(coarse)
    c2, l2 = kmeans(fine)
    mu = x.mean(0)
    return {
        "mean": mu,
        "cov_coarse": np.cov((c1[l1] - mu).T),
        "cov_fine": np.cov((c2[l2] - c1[l1]).T),
        "cov_residual": np.cov((x - c2[l2]).T),
        "per_coarse": n / coarse, "per_fine": n / fine,
    }


def generate(n: int, dim: int, fit: dict, seed: int, n_queries: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xb, xq_eval, xq_tune)`` from the fitted model, stretched to ``dim`` dims.

    Stretching maps output coordinate j to fitted coordinate floor(j * d0 / dim) (plus 10% fresh
    noise), so the per-dimension spectrum keeps its shape and the first 2m of 768 dims carry what
    the first m of 384 carry. Cluster sizes match the real data's.
    """
    rng = np.random.default_rng(seed)
    d0 = len(fit["mean"])
    src = (np.arange(dim) * d0) // dim
    chol = {k: np.linalg.cholesky(fit[k] + 1e-9 * np.eye(d0)).astype(np.float32)
            for k in ("cov_coarse", "cov_fine", "cov_residual")}
    n_coarse = max(8, int(n / fit["per_coarse"]))
    n_fine = max(16, int(n / fit["per_fine"]))
    coarse = rng.standard_normal((n_coarse, d0), dtype=np.float32) @ chol["cov_coarse"].T
    fine = coarse[rng.integers(n_coarse, size=n_fine)]
    fine += rng.standard_normal((n_fine, d0), dtype=np.float32) @ chol["cov_fine"].T
    fine += fit["mean"].astype(np.float32)
    jitter = 0.1 * np.sqrt(np.diag(fit["cov_residual"]))[src].astype(np.float32) if dim != d0 else None

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for a in range(0, m, 50_000):
            b = min(a + 50_000, m)
            x0 = fine[rng.integers(n_fine, size=b - a)]
            x0 = x0 + rng.standard_normal((b - a, d0), dtype=np.float32) @ chol["cov_residual"].T
            block = x0[:, src]
            if jitter is not None:
                block += rng.standard_normal(block.shape, dtype=np.float32) * jitter
            out[a:b] = unit_rows(block)
        return out

    return draw(n), draw(n_queries), draw(n_queries)


def clusters(n: int, dim: int, n_queries: int, spread: float, per_cluster: int = 100, decay: float = 0.5,
             seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(xb, xq_eval, xq_tune)``: Gaussian clusters under a decaying per-dimension spectrum.

    Coordinate j has scale ``(1 + j) ** -decay`` (so a prefix holds most of the energy, as in a
    Matryoshka embedding); cluster centres are drawn with that scale and every point is its
    centre plus ``spread`` times a draw of the same scale: ``spread`` 1 is the diffuse set of
    issue 14 (within-cluster spread as large as the spread of the centres), 0.25 a tight one.
    Queries are new points of the same clusters.
    """
    rng = np.random.default_rng(seed)
    scale = ((1.0 + np.arange(dim)) ** -decay).astype(np.float32)
    n_clusters = max(1, n // per_cluster)
    centres = rng.standard_normal((n_clusters, dim), dtype=np.float32) * scale

    def draw(m: int) -> np.ndarray:
        out = np.empty((m, dim), np.float32)
        for a in range(0, m, 100_000):
            b = min(a + 100_000, m)
            x = centres[rng.integers(n_clusters, size=b - a)]
            out[a:b] = unit_rows(x + spread * rng.standard_normal((b - a, dim), dtype=np.float32) * scale)
        return out

    return draw(n), draw(n_queries), draw(n_queries)


def prefix_recall_curve(xb: np.ndarray, xq: np.ndarray, k: int = 10) -> dict[str, float]:
    """Recall@k of faiss refine@d (d = D/12, D/6, D/3) at k_factor 10/50/200: how much the prefix knows."""
    D = xb.shape[1]
    _, truth = _flat_truth(xb, xq, k)
    out = {}
    for d in (D // 12, D // 6, D // 3):
        index = faiss.IndexRefineFlat(faiss.IndexPreTransform(faiss.RemapDimensionsTransform(D, d, False),
                                                              faiss.IndexFlatIP(d)))
        index.add(xb)
        for f in (10, 50, 200):
            ids = index.search(xq, k, params=faiss.IndexRefineSearchParameters(k_factor=float(f)))[1]
            out[f"{d}d x{f}"] = round(recall_at_k(ids, truth), 3)
    return out


def _flat_truth(xb: np.ndarray, xq: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    flat = faiss.IndexFlatIP(xb.shape[1])
    flat.add(xb)
    return flat.search(xq, k)


def check_generator(args: argparse.Namespace) -> None:
    """Prefix-recall curves of the real embeddings and of the generator at the same size and dim."""
    real = np.load(Path(args.fit) / "corpus.npy")
    xb = unit_rows(real)
    xq = unit_rows(np.load(Path(args.fit) / "queries-dev.npy"))[:500]
    print("real     ", prefix_recall_curve(xb, xq))
    fit = fit_generator(real)
    sb, sq, _ = generate(len(real), real.shape[1], fit, args.seed, 500)
    print("synthetic", prefix_recall_curve(sb, sq))


def load_data(args: argparse.Namespace) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
    if args.data == "real":
        src = Path(args.embeddings)
        xb = unit_rows(np.load(src / "corpus.npy"))
        xq = unit_rows(np.load(src / "queries-test.npy"))[: args.nq]
        xt = unit_rows(np.load(src / "queries-dev.npy"))[: args.nq]
        return xb, xq, xt, f"real embeddings {src} ({len(xb)} x {xb.shape[1]}; test queries, dev for tuning)"
    if args.data == "clusters":
        xb, xq, xt = clusters(args.n, args.dim, args.nq, args.spread, args.per_cluster, args.decay, args.seed)
        return xb, xq, xt, (f"clusters {args.n} x {args.dim}, spread {args.spread:g}, {args.per_cluster} per cluster, "
                            f"spectrum (1 + j)^-{args.decay:g}")
    fit = fit_generator(np.load(Path(args.fit) / "corpus.npy"))
    xb, xq, xt = generate(args.n, args.dim, fit, args.seed, args.nq)
    return xb, xq, xt, f"synthetic {args.n} x {args.dim} fitted to {args.fit}"


# ---------------------------------------------------------------------------- timing
def time_search(fn, xq: np.ndarray, n_single: int) -> dict[str, float]:
    fn(xq[:1])  # warm
    lat = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        fn(q[None])
        lat.append(time.perf_counter() - t)
    t = time.perf_counter()
    fn(xq)
    batch = (time.perf_counter() - t) / len(xq)
    return {"p50_ms": float(np.percentile(lat, 50) * 1e3), "p99_ms": float(np.percentile(lat, 99) * 1e3),
            "batch_ms_per_query": batch * 1e3}


def measure(name: str, fn, xq: np.ndarray, truth: np.ndarray, k: int, n_single: int, **extra) -> dict:
    ids = fn(xq)
    row = {"method": name, "recall": round(recall_at_k(ids, truth), 4), **time_search(fn, xq, n_single), **extra}
    print(f"  {name:42s} recall {row['recall']:.4f}  p50 {row['p50_ms']:8.3f} ms  "
          f"batch {row['batch_ms_per_query']:8.4f} ms/q", flush=True)
    return row


def sweep_until(rows: list[dict], targets: list[float]) -> bool:
    return bool(rows) and rows[-1]["recall"] >= max(targets)


# ---------------------------------------------------------------------------- peers
def run_exact(xb, xq, k, n_single):
    t = time.perf_counter()
    index = faiss.IndexFlatIP(xb.shape[1])
    index.add(xb)
    build = time.perf_counter() - t
    scores, ids = index.search(xq, min(k + TIE_EXTRA, len(xb)))
    truth = tied_truth(scores, ids, k)  # a duplicate of the k-th true neighbour is as true (mrl's tune: the same)
    row = measure("exact IndexFlatIP full D", lambda q, ix=index: ix.search(q, k)[1], xq, truth, k, n_single,
                  build_s=build, bytes_per_vector=xb.shape[1] * 4, family="exact", n=len(xb))
    del index
    return truth, row


def run_refine(xb, xq, truth, k, d, n_single, targets):
    D = xb.shape[1]
    t = time.perf_counter()
    base = faiss.IndexPreTransform(faiss.RemapDimensionsTransform(D, d, False), faiss.IndexFlatIP(d))
    index = faiss.IndexRefineFlat(base)
    index.add(xb)
    build = time.perf_counter() - t
    rows = []
    for f in K_FACTORS:
        params = faiss.IndexRefineSearchParameters(k_factor=float(f))
        search = lambda q, ix=index, sp=params: ix.search(q, k, params=sp)[1]  # noqa: E731
        rows.append(measure(f"faiss refine@{d} k_factor={f}", search, xq, truth, k, n_single, build_s=build,
                            bytes_per_vector=d * 4, total_ram_bytes_per_vector=(d + D) * 4, family=f"refine@{d}",
                            bytes_read_per_query=4.0 * (d * len(xb) + f * k * D)))
        if sweep_until(rows, targets):
            break
    del index
    return rows


def run_hnswlib(xb, xq, truth, k, n_single, targets, m=16, ef_construction=100):
    try:
        import hnswlib
    except ImportError:
        print("  hnswlib not installed: skipped (pip install -e '.[bench]')")
        return []
    t = time.perf_counter()
    index = hnswlib.Index(space="ip", dim=xb.shape[1])
    index.init_index(max_elements=len(xb), ef_construction=ef_construction, M=m)
    index.set_num_threads(BUILD_THREADS)
    index.add_items(xb, np.arange(len(xb)))
    build = time.perf_counter() - t
    index.set_num_threads(1)
    rows = []
    for ef in EF_SEARCH:
        if ef < k:
            continue
        index.set_ef(ef)
        rows.append(measure(f"hnswlib M={m} ef={ef}", lambda q, ix=index: ix.knn_query(q, k)[0].astype(np.int64),
                            xq, truth, k, n_single, build_s=build, build_threads=BUILD_THREADS,
                            bytes_per_vector=xb.shape[1] * 4 + m * 2 * 4 + 8, family="hnswlib"))
        if sweep_until(rows, targets):
            break
    del index
    return rows


def _rss_bytes() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _panorama_levels(d: int) -> int:
    return next(n for n in (16, 12, 8, 6, 4, 2, 1) if d % n == 0)


def _panorama_bytes(fn, xq: np.ndarray, vectors_visited: float, d: int) -> float:
    """Mean bytes of float32 vectors Panorama read per query: the vectors it visits (all of them
    flat; for the inverted file about nprobe / nlist of them) times faiss's share of their
    dimensions it scanned before pruning (``indexPanorama_stats.ratio_dims_scanned``)."""
    stats = faiss.cvar.indexPanorama_stats
    stats.reset()
    fn(xq)
    return 4.0 * d * vectors_visited * stats.ratio_dims_scanned


def run_panorama_flat(xb, xq, truth, k, n_single):
    """faiss IndexFlatIPPanorama: exact search that stops scoring a vector once its bound on the
    remaining levels' inner product cannot reach the current top-k."""
    d = xb.shape[1]
    t = time.perf_counter()
    index = faiss.IndexFlatIPPanorama(d, _panorama_levels(d), 128)
    index.add(xb)
    build = time.perf_counter() - t
    fn = lambda q, ix=index: ix.search(q, k)[1]  # noqa: E731
    row = measure(f"faiss IndexFlatIPPanorama ({_panorama_levels(d)} levels)", fn, xq, truth, k, n_single,
                  build_s=build, bytes_per_vector=4 * d, family="panorama-flat",
                  bytes_read_per_query=_panorama_bytes(fn, xq, len(xb), d))
    del index
    return [row]


def run_panorama_ivf(xb, xq, truth, k, n_single, targets, seed=0):
    """faiss IndexIVFFlatPanorama: an inverted file of float32 vectors, each list pruned level by level."""
    d, n = xb.shape[1], len(xb)
    # faiss 1.15 stores each list in level-major batches of 1,024 vectors, padded: with the usual
    # 4 sqrt(n) lists (~250 vectors each at 1M) that is ~13 KB per vector; lists of ~1,024 keep it
    # near the 4 d bytes of the vectors
    nlist = max(8, 1 << int(np.round(np.log2(n / 1024))))
    rss0 = _rss_bytes()
    t = time.perf_counter()
    index = faiss.IndexIVFFlatPanorama(faiss.IndexFlatIP(d), d, nlist, _panorama_levels(d), faiss.METRIC_INNER_PRODUCT)
    faiss.omp_set_num_threads(BUILD_THREADS)
    rng = np.random.default_rng(seed)
    index.train(xb if n <= 40 * nlist else xb[rng.choice(n, 40 * nlist, replace=False)])
    index.add(xb)
    faiss.omp_set_num_threads(1)
    build = time.perf_counter() - t
    ram = (_rss_bytes() - rss0) / n  # what the structure holds, measured
    print(f"  IndexIVFFlatPanorama: {nlist} lists, {ram:.0f} B/vector resident", flush=True)
    rows = []
    for nprobe in (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024):
        if nprobe > nlist:
            break
        params = faiss.SearchParametersIVF(nprobe=nprobe)
        fn = lambda q, ix=index, sp=params: ix.search(q, k, params=sp)[1]  # noqa: E731
        rows.append(measure(f"faiss IndexIVFFlatPanorama nlist={nlist} nprobe={nprobe}", fn, xq, truth, k, n_single,
                            build_s=build, bytes_per_vector=round(ram, 1), family="panorama-ivf",
                            bytes_read_per_query=_panorama_bytes(fn, xq, nprobe * n / nlist, d)))
        if sweep_until(rows, targets):
            break
    del index
    return rows


def _mrl_bytes(index, cascade: str, xq: np.ndarray, k: int) -> tuple[float, float]:
    """Mean (bytes read, candidates rescored) per query, from mrl's own work accounting."""
    work = Work()
    index.search(xq, k, cascade, work=work)
    d = work.to_dict(per_query=False)
    return d["mean_bytes_read"], d["mean_candidates_rescored"]


def run_mrl(xb, xq, xt, truth, k, n_single, targets, stages, out, hnsw_m, tune_queries, budgets, adaptive,
            label="mrl"):
    """Build with ``stages`` (``auto``: the default build), tune on ``xt``, measure the picks on ``xq``.

    For every target, the fastest cascade within each first-stage RAM budget (and without one),
    single-query and batched; with ``adaptive``, also the gated cascade fitted on the tuning
    queries over each budget's single-query pick (``mrl index tune --adaptive``).
    """
    path = out / f"{label}-index"
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    faiss.omp_set_num_threads(BUILD_THREADS)
    index = MrlIndex.build(path, xb, first_stages=stages, hnsw_m=hnsw_m)
    faiss.omp_set_num_threads(1)
    build = time.perf_counter() - t
    built = index.manifest["first_stages"]
    print(f"  {label} build {build:.1f} s ({', '.join(built)}, hnsw M={hnsw_m})", flush=True)
    stats = index.stats()
    rows = []
    t = time.perf_counter()
    outcomes: dict = {}
    _, table = tune(index, k, max(targets), queries=xt[:tune_queries], n_single=min(n_single, 50), outcomes=outcomes)
    print(f"  {label} tune {time.perf_counter() - t:.0f} s, {len(table)} cascades measured", flush=True)
    for line in describe_outcomes(outcomes):
        print(f"    {line}", flush=True)
    (out / f"{label}-tuning.json").write_text(json.dumps({"outcomes": outcomes, "rows": [r.__dict__ for r in table]},
                                                         indent=1))
    measured: dict[str, dict] = {}

    def run(cascade: str, extra: dict) -> dict:
        if cascade not in measured:
            plan = parse_cascade(cascade, index.dim)
            fs = f"{plan.kind}@{plan.first[0]}"
            read, rescored = _mrl_bytes(index, cascade, xq, k)
            measured[cascade] = measure(
                f"{label} {cascade}", lambda q, c=cascade: index.search(q, k, c)[1], xq, truth, k, n_single,
                build_s=build, bytes_per_vector=stats["first_stages"][fs]["bytes_per_vector"],
                disk_bytes_per_vector=round(stats["disk_bytes"] / len(xb), 1), family=label,
                bytes_read_per_query=read, candidates_rescored=rescored, first_stages=built, **extra)
        return measured[cascade]

    for target in targets:
        # The single-query and the batched optimum can differ, and so can the pick within each
        # first-stage RAM budget and without one: report each (a search names its cascade).
        picks: dict[str, list[str]] = {}
        single_by_budget: dict[float | None, str] = {}  # None: no budget
        for budget in (*budgets, None):
            for batched in (False, True):
                best = pick(table, target, budget, batched=batched)
                if best is not None:
                    label_b = f"{'batched' if batched else 'single'}, {f'<= {budget:g} B' if budget else 'any B'}"
                    picks.setdefault(best.cascade, []).append(label_b)
                    if not batched:
                        single_by_budget[budget] = best.cascade
        if not picks:
            print(f"  {label}: no cascade reached {target} on the tuning queries")
        for cascade, labels in picks.items():
            budget = min((b for b, c in single_by_budget.items() if c == cascade and b is not None), default=None)
            rows.append(run(cascade, {}) | {"method": f"{label} {cascade} (tuned for {target}: {'; '.join(labels)})",
                                            "tuned_for": target, "budget": budget})
        if not adaptive:
            continue
        gated_budgets: dict[str, list[float | None]] = {}  # each single-query pick, gated once
        for budget, fixed in single_by_budget.items():
            gated_budgets.setdefault(fixed, []).append(budget)
        for fixed, fixed_budgets in gated_budgets.items():
            sized = sorted(b for b in fixed_budgets if b is not None)
            budget = sized[0] if sized else None
            within = f"<= {'/'.join(f'{b:g}' for b in sized)} B" if sized else "any B"
            t = time.perf_counter()
            try:
                result = tune_adaptive(index, fixed, xt[:tune_queries], k, target)
            except MrlError as e:  # e.g. the pick meets the target on all tuning queries, not on the calibration half
                print(f"  {label} gate for {target} on {fixed}: not fitted: {e}", flush=True)
                continue
            index.gate = result.gate  # as `mrl index tune --adaptive` stores it
            gated = str(result.cascade)
            measured.pop(gated, None)  # a gate fitted for another target: measure again
            c = result.gate.calibration
            print(f"  {label} gate for {target} on {fixed} ({time.perf_counter() - t:.0f} s): calibration recall "
                  f"{c['recall']:.4f} (low {c['recall_low']:.4f}), mean level {c['mean_level']:.0f}", flush=True)
            rows.append(run(gated, {"gate_calibration": c}) | {
                "method": f"{label} {gated} (gated, over the pick {fixed}, {within}, for {target})",
                "tuned_for": target, "budget": budget, "gated_over": fixed, "family": f"{label}-gated"})
            measured.pop(gated, None)
    return rows


# ---------------------------------------------------------------------------- report
def cheapest(rows: list[dict], family_prefix: str, target: float, key: str) -> dict | None:
    ok = [r for r in rows if r["family"].startswith(family_prefix) and r["recall"] >= target]
    return min(ok, key=lambda r: r[key]) if ok else None


def summarize(rows: list[dict], exact: dict, targets: list[float]) -> list[str]:
    lines = ["| target | method | recall | p50 ms | p99 ms | batch ms/q | single x exact | batch x exact | "
             "RAM B/vec (first stage) | MB read/query | build s |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def line(target, r):
        read = r.get("bytes_read_per_query")
        return (f"| {target} | {r['method']} | {r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['batch_ms_per_query']:.4f} | {exact['p50_ms'] / r['p50_ms']:.1f}x | "
                f"{exact['batch_ms_per_query'] / r['batch_ms_per_query']:.1f}x | {r['bytes_per_vector']:g} | "
                f"{read / 1e6:.2f} | {r['build_s']:.1f} |" if read is not None else
                f"| {target} | {r['method']} | {r['recall']:.4f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
                f"{r['batch_ms_per_query']:.4f} | {exact['p50_ms'] / r['p50_ms']:.1f}x | "
                f"{exact['batch_ms_per_query'] / r['batch_ms_per_query']:.1f}x | {r['bytes_per_vector']:g} | - | "
                f"{r['build_s']:.1f} |")

    mrl_families = sorted({r["family"] for r in rows if r["family"].startswith(("mrl", "auto"))})
    for target in targets:
        for fam in (*mrl_families, "refine", "hnswlib", "panorama-ivf"):
            found = ([r for r in rows if r["family"] == fam and r.get("tuned_for") == target] if fam in mrl_families
                     else [r for r in [cheapest(rows, fam, target, "p50_ms")] if r])
            if not found:
                lines.append(f"| {target} | {fam}: none reached | | | | | | | | | |")
            lines += [line(target, r) for r in found]
    lines += [line("-", r) for r in rows if r["family"] == "panorama-flat"]
    lines.append(line("-", exact | {"bytes_read_per_query": exact["bytes_per_vector"] * exact.get("n", 0)}))
    return lines


def blas_report() -> list[dict]:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return [{k: i.get(k) for k in ("internal_api", "architecture", "num_threads", "filepath")}
            for i in threadpool_info()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", choices=["real", "synthetic", "clusters"], default="synthetic")
    p.add_argument("--spread", type=float, default=1.0, help="clusters: within-cluster / centre spread")
    p.add_argument("--per-cluster", type=int, default=100, help="clusters: points per cluster")
    p.add_argument("--decay", type=float, default=0.5, help="clusters: spectrum (1 + j)^-decay")
    p.add_argument("--embeddings", default="runs/embeddings/debian-mrl")
    p.add_argument("--fit", default="runs/embeddings/debian-mrl")
    p.add_argument("--n", type=int, default=1_000_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--nq", type=int, default=1000)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--targets", default="0.95,0.99")
    p.add_argument("--n-single", type=int, default=100, help="queries timed one at a time")
    p.add_argument("--refine-dims", default="64,128")
    p.add_argument("--mrl-stages", default="hnsw@32,hnsw@64,int8@64")
    p.add_argument("--hnsw-m", type=int, default=8, help="mrl's HNSW degree (memory: about 8 M bytes/vector)")
    p.add_argument("--skip", default="", help="comma list of refine,hnswlib,panorama,mrl to skip")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tune-queries", type=int, default=300,
                   help="tuning queries (separate from the evaluation ones); more = less sampling noise in the pick")
    p.add_argument("--check-generator", action="store_true", help="compare the generator with --fit and exit")
    p.add_argument("--max-bytes", type=float, default=128.0, help="mrl first-stage bytes/vector budget")
    p.add_argument("--build-threads", type=int, default=2, help="threads for building HNSW graphs only")
    p.add_argument("--budgets", default="128", help="first-stage RAM budgets (B/vector) to pick within")
    p.add_argument("--adaptive", action="store_true", help="also fit and measure a gated cascade per budget")
    p.add_argument("--auto", action="store_true", help="also the default build (--first-stage auto) + tune")
    p.add_argument("--out", default="runs/bench-funnel/run")
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    global BUILD_THREADS, MAX_FIRST_STAGE_BYTES
    BUILD_THREADS, MAX_FIRST_STAGE_BYTES = args.build_threads, args.max_bytes
    faiss.omp_set_num_threads(1)
    try:  # mrl converts float16 through torch when it is installed
        import torch

        torch.set_num_threads(1)
    except ImportError:
        pass
    if args.check_generator:
        check_generator(args)
        return
    targets = [float(t) for t in args.targets.split(",")]
    skip = set(filter(None, args.skip.split(",")))
    t = time.perf_counter()
    xb, xq, xt, desc = load_data(args)
    print(f"data: {desc}; {len(xq)} queries ({time.perf_counter() - t:.0f} s)", flush=True)
    blas = blas_report()
    print("BLAS:", blas, flush=True)
    rows = []
    truth, exact = run_exact(xb, xq, args.k, min(args.n_single, 50))
    rows.append(exact)
    if "refine" not in skip:
        for d in map(int, args.refine_dims.split(",")):
            rows += run_refine(xb, xq, truth, args.k, d, args.n_single, targets)
    if "hnswlib" not in skip:
        rows += run_hnswlib(xb, xq, truth, args.k, args.n_single, targets)
    if "panorama" not in skip:
        rows += run_panorama_flat(xb, xq, truth, args.k, min(args.n_single, 50))
        rows += run_panorama_ivf(xb, xq, truth, args.k, args.n_single, targets, args.seed)
    budgets = [float(b) for b in args.budgets.split(",")]
    if "mrl" not in skip:
        rows += run_mrl(xb, xq, xt, truth, args.k, args.n_single, targets, args.mrl_stages.split(","), out,
                        args.hnsw_m, args.tune_queries, budgets, args.adaptive)
    if args.auto:
        rows += run_mrl(xb, xq, xt, truth, args.k, args.n_single, targets, None, out, args.hnsw_m,
                        args.tune_queries, [], args.adaptive, label="auto")
    lines = [f"data: {desc}", f"k={args.k}, {len(xq)} queries, single-thread search, builds on "
             f"{args.build_threads} threads; BLAS: "
             + "; ".join(f"{b['internal_api']} {b['architecture']} x{b['num_threads']}" for b in blas), ""]
    lines += summarize(rows, exact, targets)
    (out / "summary.md").write_text("\n".join(lines) + "\n")
    (out / "results.json").write_text(json.dumps({"args": vars(args), "data": desc, "blas": blas, "rows": rows},
                                                 indent=1))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
