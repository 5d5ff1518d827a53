"""mrl's exact search (float16 vectors on disk) against faiss's float32 flat scan, one thread.

    OMP_NUM_THREADS=1 python benchmarks/exact_scan.py --n 200000 --dim 768

Random unit vectors; single-query time (mean of --queries searches) and batched time per query
for both, and whether they return the same ids, at the full dimension and at a 64-dim prefix.
Prints mrl's time as a ratio of faiss's, measured in the same run.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import faiss
import numpy as np

from mrl.index import MrlIndex
from mrl.prefix import truncate, unit_rows


def single_ms(fn, xq: np.ndarray) -> float:
    fn(xq[:1])  # warm
    t = time.perf_counter()
    for q in xq:
        fn(q[None])
    return (time.perf_counter() - t) / len(xq) * 1e3


def batch_ms(fn, xq: np.ndarray) -> float:
    t = time.perf_counter()
    fn(xq)
    return (time.perf_counter() - t) / len(xq) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=200_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--queries", type=int, default=20)
    p.add_argument("--prefix", type=int, default=64)
    args = p.parse_args()
    faiss.omp_set_num_threads(1)
    rng = np.random.default_rng(0)
    xb = unit_rows(rng.standard_normal((args.n, args.dim)).astype(np.float32))
    xq = unit_rows(rng.standard_normal((args.queries, args.dim)).astype(np.float32))
    with tempfile.TemporaryDirectory() as tmp:
        index = MrlIndex.build(f"{tmp}/i", xb, first_stages=["int8@64"])  # stores float16 vectors
        for dim in (args.dim, args.prefix):
            flat = faiss.IndexFlatIP(dim)
            flat.add(truncate(xb, dim))
            q = truncate(xq, dim)
            mrl_fn = lambda x, d=dim: index.exact_search(x, 10, dim=d)  # noqa: E731
            faiss_fn = lambda x, f=flat: f.search(x, 10)  # noqa: E731
            same = (np.asarray(mrl_fn(xq).ids) == faiss_fn(q)[1]).mean()
            m1, f1 = single_ms(mrl_fn, xq), single_ms(faiss_fn, q)
            mb, fb = batch_ms(mrl_fn, xq), batch_ms(faiss_fn, q)
            print(f"{args.n} x {dim}: single mrl {m1:.1f} ms, faiss {f1:.1f} ms ({m1 / f1:.2f}x); batched mrl "
                  f"{mb:.2f} ms/q, faiss {fb:.2f} ms/q ({mb / fb:.2f}x); same ids {same:.3f}", flush=True)


if __name__ == "__main__":
    main()
