"""Load and memory test of `mrl serve` over loopback: many concurrent clients, a writer committing adds.

    python benchmarks/serve_load.py runs/embeddings/base-minilm --data ../shared/data/debian-pkgs \
        --out runs/serve-load --clients 64 --duration 120

Builds an index from precomputed embeddings (``benchmarks/embed_corpus.py``; ``corpus.npy``,
``corpus_ids.txt``, ``queries-dev.npy``), starts ``mrl serve`` on it as its own process, then:

1. memory: reads the server's idle RSS, resets its peak (``/proc/PID/clear_refs``), sends a search
   whose shortlist (10^7) exceeds the corpus and a batch that exceeds ``max_candidates``, and
   reports the peak RSS over idle (the target: under 2x);
2. load: ``--clients`` asyncio clients for ``--duration`` seconds, each looping over searches by
   vector (70%), searches by text (15%) and ``/v1/embeddings`` (15%), while another process adds
   ``--add-rows`` vectors every ``--add-every`` seconds; reports throughput, p50/p99 per route,
   every non-2xx or failed request, and the commits the service picked up.

Writes ``OUT/serve_load.json``. Linux only (RSS from /proc).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import random
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROUTES = ("search_vector", "search_text", "embeddings")


def rss_kib(pid: int, field: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/{pid}/status")


def reset_peak(pid: int) -> None:
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # resets VmHWM to the current RSS


def wait_ready(base: str, timeout: float = 300.0) -> None:
    import httpx

    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{base} did not become healthy within {timeout:.0f} s")


async def _client(http, base, queries, texts, dims, deadline, rng, log) -> None:
    while time.perf_counter() < deadline:
        r = rng.random()
        if r < 0.70:
            route, url = "search_vector", "/search"
            body = {"vector": queries[rng.randrange(len(queries))].tolist(), "k": 10}
        elif r < 0.85:
            route, url, body = "search_text", "/search", {"query": rng.choice(texts), "k": 10}
        else:
            route, url = "embeddings", "/v1/embeddings"
            body = {"input": rng.sample(texts, rng.randint(1, 4)), "dimensions": rng.choice(dims)}
        t0 = time.perf_counter()
        try:
            resp = await http.post(base + url, json=body)
            status = resp.status_code
        except Exception as e:  # a refused or dropped connection is an error of the run, not of the client
            status = f"{type(e).__name__}: {e}"
        log.append((route, time.perf_counter() - t0, status))


async def _hostile(http, base, queries, texts, deadline, rng, log) -> None:
    """A client that tries to buy CPU: a cascade amplifier (a stage per dimension, 32 queries) and
    abandoned 256-text embedding requests (the socket closed after 0.3 s), in turn."""
    from urllib.parse import urlsplit

    host, port = urlsplit(base).hostname, urlsplit(base).port
    amplifier = ",".join(f"{d}:4096" for d in range(1, queries.shape[1] + 1))
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        if rng.random() < 0.5:
            try:
                resp = await http.post(base + "/search", json={"vector": queries[:32].tolist(), "k": 10,
                                                               "cascade": amplifier})
                status: object = resp.status_code
            except Exception as e:
                status = f"{type(e).__name__}: {e}"
            log.append(("amplifier", time.perf_counter() - t0, status))
            continue
        body = json.dumps({"input": [rng.choice(texts) for _ in range(256)]}).encode()
        reader, writer = await asyncio.open_connection(host, port)
        writer.write(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        await writer.drain()
        await asyncio.sleep(0.3)
        writer.close()  # abandoned: nobody reads the answer
        log.append(("abandoned", time.perf_counter() - t0, "closed"))


async def load(base: str, queries: np.ndarray, texts: list[str], clients: int, duration: float,
               seed: int = 0, hostile: int = 0) -> dict:
    """Run ``clients`` concurrent loops (and ``hostile`` hostile ones) against ``base`` for ``duration`` s."""
    dims = sorted({min(d, queries.shape[1]) for d in (64, 128, queries.shape[1])})  # embeddings' dimensions=
    import httpx

    log: list[tuple[str, float, object]] = []
    bad: list[tuple[str, float, object]] = []
    limits = httpx.Limits(max_connections=clients + hostile, max_keepalive_connections=clients + hostile)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(limits=limits, timeout=120) as http:
        await asyncio.gather(*(_client(http, base, queries, texts, dims, t0 + duration, random.Random(seed + i), log)
                               for i in range(clients)),
                             *(_hostile(http, base, queries, texts, t0 + duration, random.Random(-1 - i), bad)
                               for i in range(hostile)))
    wall = time.perf_counter() - t0
    out = {"clients": clients, "duration_s": round(wall, 1), "requests": len(log),
           "throughput_rps": round(len(log) / wall, 1), "routes": {}}
    errors = [s for _, _, s in log if not (isinstance(s, int) and 200 <= s < 300)]
    out["errors"] = len(errors)
    out["error_examples"] = sorted({str(s) for s in errors})[:5]
    for route in ROUTES:
        lat = np.array([t for r, t, _ in log if r == route]) * 1e3
        if len(lat):
            out["routes"][route] = {"requests": len(lat), "p50_ms": round(float(np.percentile(lat, 50)), 1),
                                    "p99_ms": round(float(np.percentile(lat, 99)), 1)}
    if hostile:
        out["hostile"] = {kind: {"requests": sum(1 for k, _, _ in bad if k == kind),
                                 "statuses": sorted({str(s) for k, _, s in bad if k == kind}),
                                 "p50_ms": round(float(np.percentile([t for k, t, _ in bad if k == kind] or [0],
                                                                     50) * 1e3), 1)}
                          for kind in ("amplifier", "abandoned")}
    return out


def writer(index: str, vectors: np.ndarray, rows: int, every: float, stop_at: float, result) -> None:
    """Commit ``rows`` new vectors (perturbed copies) every ``every`` seconds until ``stop_at``."""
    from mrl.index import MrlIndex

    rng = np.random.default_rng(1)
    commits, step = 0, 0
    while time.time() < stop_at:
        time.sleep(every)
        x = vectors[rng.integers(len(vectors), size=rows)] + 0.05 * rng.standard_normal((rows, vectors.shape[1]))
        MrlIndex.open(index).add(x.astype(np.float32), [f"load-{step}-{i}" for i in range(rows)])
        commits, step = commits + 1, step + 1
    result.value = commits


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("embeddings", type=Path, help="folder with corpus.npy, corpus_ids.txt, queries-dev.npy")
    ap.add_argument("--data", type=Path, help="BEIR folder for query texts (default: synthetic texts)")
    ap.add_argument("--model", default="minilm")
    ap.add_argument("--out", type=Path, default=Path("runs/serve-load"))
    ap.add_argument("--clients", type=int, default=64)
    ap.add_argument("--duration", type=float, default=120.0)
    ap.add_argument("--add-every", type=float, default=5.0)
    ap.add_argument("--add-rows", type=int, default=200)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--runtime", default=None, help="the service's encoder runtime (mrl serve --runtime)")
    ap.add_argument("--hostile", type=int, default=0,
                    help="hostile clients beside the others: cascade amplifiers and abandoned embedding requests")
    args = ap.parse_args()

    from mrl.data.io import read_lines
    from mrl.index import MrlIndex

    args.out.mkdir(parents=True, exist_ok=True)
    xb = np.load(args.embeddings / "corpus.npy", mmap_mode="r")
    ids = list(read_lines(args.embeddings / "corpus_ids.txt"))
    xq = np.load(args.embeddings / "queries-dev.npy")
    index = args.out / "idx"
    t = time.perf_counter()
    MrlIndex.build(index, xb, ids, model=args.model, first_stages=[f"int8@{min(64, xb.shape[1])}"], overwrite=True)
    print(f"built {index} ({len(ids)} x {xb.shape[1]}) in {time.perf_counter() - t:.1f} s")
    if args.data:
        from mrl.data.beir import load_beir

        texts = list(load_beir(args.data, "dev").queries.values())[:5000]
    else:
        texts = [f"package number {i} for the test" for i in range(1000)]

    base = f"http://127.0.0.1:{args.port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    runtime = ["--runtime", args.runtime] if args.runtime else []
    server = subprocess.Popen([sys.executable, "-m", "mrl", "serve", str(index), "--port", str(args.port),
                               "--log-level", "warning", *runtime], env=env)
    report: dict = {"index": {"count": len(ids), "dim": int(xb.shape[1])}, "runtime": args.runtime or "auto",
                    "hostile": args.hostile}
    try:
        wait_ready(base)
        import httpx

        httpx.post(f"{base}/search", json={"query": "warm up", "k": 10}, timeout=120)
        time.sleep(2)
        idle = rss_kib(server.pid)
        reset_peak(server.pid)
        q = xq[0].tolist()
        huge = httpx.post(f"{base}/search", json={"vector": q, "k": 10, "cascade": "int8@64:10000000,384:10"},
                          timeout=300)
        batch = httpx.post(f"{base}/search", json={"vector": xq[:256].tolist(), "k": 10,
                                                   "cascade": "int8@64:10000000,384:10"}, timeout=300)
        ok_batch = httpx.post(f"{base}/search", json={"vector": xq[:256].tolist(), "k": 10,
                                                      "cascade": "int8@64:4000,384:10"}, timeout=300)
        peak = rss_kib(server.pid, "VmHWM")
        report["memory"] = {
            "idle_rss_mib": round(idle / 1024, 1), "peak_rss_mib": round(peak / 1024, 1),
            "peak_over_idle": round(peak / idle, 3),
            "huge_shortlist_status": huge.status_code, "huge_batch_status": batch.status_code,
            "huge_batch_message": batch.json().get("error", {}).get("message") if batch.status_code >= 400 else None,
            "batch_256x4000_status": ok_batch.status_code,
        }
        print("memory:", json.dumps(report["memory"], indent=1))

        ctx = mp.get_context("spawn")  # a forked child deadlocks in torch's thread pool
        commits = ctx.Value("i", 0)
        proc = ctx.Process(target=writer, args=(str(index), np.asarray(xb[:5000], np.float32), args.add_rows,
                                               args.add_every, time.time() + args.duration - args.add_every, commits))
        proc.start()
        gen0 = httpx.get(f"{base}/healthz").json()["generation"]
        reset_peak(server.pid)
        report["load"] = asyncio.run(load(base, xq, texts, args.clients, args.duration, hostile=args.hostile))
        proc.join()
        health = httpx.get(f"{base}/healthz").json()
        report["load"].update(commits=commits.value, generations_seen=health["generation"] - gen0,
                              health=health["status"], final_count=health["count"],
                              peak_rss_mib_under_load=round(rss_kib(server.pid, "VmHWM") / 1024, 1))
        print("load:", json.dumps(report["load"], indent=1))
    finally:
        server.terminate()
        server.wait(timeout=30)
    (args.out / "serve_load.json").write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out / 'serve_load.json'}")


if __name__ == "__main__":
    main()
