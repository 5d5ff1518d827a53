"""Pick the cheapest cascade that meets a recall target against exact full-dimension search."""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.cascade import Cascade, FirstStageSpec
from mrl.index.index import MrlIndex
from mrl.index.segment import normalize_rows

SHORTLIST_FACTORS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
IVF_SHORTLIST_FACTORS = (2, 5, 10, 20, 50)  # an inverted file's recall is set by its width (lists scanned)
IVF_WIDTHS = (8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024)


@dataclass(frozen=True)
class TuneRow:
    cascade: str
    recall: float  # recall@k against exact full-dimension search
    p50_ms: float  # single-query latency
    p99_ms: float
    batch_ms_per_query: float
    first_stage_bytes_per_vector: float


def sample_queries(index: MrlIndex, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """Corpus vectors plus Gaussian noise of relative norm ``noise``: queries near, not on, the data."""
    rng = np.random.default_rng(seed)
    live = np.flatnonzero(~index._dead)
    rows = np.sort(rng.choice(live, size=min(n, len(live)), replace=False))
    x = np.empty((len(rows), index.dim), np.float32)
    for seg, off in zip(index.segments, index._offsets[:-1]):
        sel = np.flatnonzero((rows >= off) & (rows < off + seg.n))
        x[sel] = seg.vectors[rows[sel] - off]
    g = normalize_rows(rng.standard_normal(x.shape).astype(np.float32))
    return normalize_rows(x) + noise * g


def candidate_cascades(index: MrlIndex, k: int) -> list[Cascade]:
    """First stage x shortlist, with and without a middle rerank at twice the first prefix;
    inverted-file first stages also try every width (lists scanned) up to their list count."""
    out: list[Cascade] = []
    d_full, count = index.dim, index.count
    for spec in index.specs:
        if spec.dim >= d_full:  # nothing to rerank with: a longer shortlist returns the same top k
            out.append(Cascade(spec.kind, ((spec.dim, k),)))
            continue
        nlist = _max_lists(index, spec)
        if nlist:
            for width in [w for w in IVF_WIDTHS if w < nlist] + ([nlist] if nlist <= IVF_WIDTHS[-1] else []):
                for f in IVF_SHORTLIST_FACTORS:
                    out.append(Cascade(spec.kind, ((spec.dim, min(k * f, count)), (d_full, k)), width))
            continue
        for f in SHORTLIST_FACTORS:
            n1 = min(k * f, count)
            out.append(Cascade(spec.kind, ((spec.dim, n1), (d_full, k))))
            mid = 2 * spec.dim
            if mid < d_full and n1 >= 4 * k:
                out.append(Cascade(spec.kind, ((spec.dim, n1), (mid, max(k, n1 // 4)), (d_full, k))))
            if n1 == count:
                break
    return list(dict.fromkeys(out))


def _max_lists(index: MrlIndex, spec: FirstStageSpec) -> int:
    """The largest inverted-file list count among the segments' ``spec`` structures (0: none)."""
    return max((getattr(seg.structure(spec), "nlist", 0) for seg in index.segments if seg.n), default=0)


def recall_at_k(found: np.ndarray, truth: np.ndarray) -> float:
    k = truth.shape[1]
    hits = [len(set(a[a >= 0].tolist()) & set(b.tolist())) for a, b in zip(found, truth)]
    return float(np.sum(hits) / (len(truth) * k))


def _latency(index: MrlIndex, xq: np.ndarray, k: int, cascade: Cascade, n_single: int) -> tuple[float, float, float]:
    index.search(xq[:1], k, cascade)  # warm: first-stage structures load on first use
    times = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        index.search(q[None], k, cascade)
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    index.search(xq, k, cascade)
    batch = (time.perf_counter() - t) / len(xq)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), batch * 1e3


def tune(
    index: MrlIndex,
    k: int = 10,
    target_recall: float = 0.99,
    queries: np.ndarray | None = None,
    n_queries: int = 200,
    noise: float = 1.0,
    n_single: int = 50,
    seed: int = 0,
    max_bytes_per_vector: float | None = None,
) -> tuple[TuneRow | None, list[TuneRow]]:
    """Measure every candidate cascade; returns (cheapest meeting the target or None, all rows).

    Latency is measured only for cascades on the recall/cost frontier of each first stage (the
    smallest shortlists that reach the target, and every cheaper one below it).
    """
    if not 0 < target_recall <= 1:
        raise MrlError(f"target recall must be in (0, 1], got {target_recall}")
    xq = queries if queries is not None else sample_queries(index, n_queries, noise, seed)
    xq = np.asarray(xq, dtype=np.float32)
    if xq.ndim != 2 or xq.shape[1] != index.dim:
        raise MrlError(f"queries: expected shape (n, {index.dim}), got {xq.shape}")
    _, truth = index.exact_search(xq, k)
    stats = index.stats()["first_stages"]
    rows: list[TuneRow] = []
    reached: dict[str, list[tuple[int, int]]] = {}  # family -> (width, shortlist) that met the target
    for cascade in candidate_cascades(index, k):
        family = f"{cascade.kind}@{cascade.first[0]}/{len(cascade.stages)}"
        width, n1 = cascade.width or 0, cascade.first[1]
        if any(w <= width and n <= n1 for w, n in reached.get(family, [])):
            continue  # searches at least as wide and keeps at least as many as one that met the target
        _, ids = index.search(xq, k, cascade)
        recall = recall_at_k(ids, truth)
        p50, p99, batch = _latency(index, xq, k, cascade, n_single)
        spec_key = f"{cascade.kind}@{cascade.first[0]}"
        rows.append(TuneRow(str(cascade), round(recall, 4), round(p50, 3), round(p99, 3), round(batch, 4),
                            stats.get(spec_key, {}).get("bytes_per_vector", 0.0)))
        if recall >= target_recall:
            reached.setdefault(family, []).append((width, n1))
    return pick(rows, target_recall, max_bytes_per_vector), rows


def pick(rows: list[TuneRow], target_recall: float, max_bytes_per_vector: float | None = None) -> TuneRow | None:
    """The fastest single-query row that meets the target (ties: the faster batched), optionally
    among first stages that keep at most ``max_bytes_per_vector`` resident."""
    meeting = [r for r in rows if r.recall >= target_recall and
               (max_bytes_per_vector is None or r.first_stage_bytes_per_vector <= max_bytes_per_vector)]
    return min(meeting, key=lambda r: (r.p50_ms, r.batch_ms_per_query)) if meeting else None


def pareto(rows: list[TuneRow]) -> list[TuneRow]:
    """Rows no other row beats on both recall and single-query latency."""
    return [r for r in rows if not any(o.recall >= r.recall and o.p50_ms < r.p50_ms for o in rows)]


def write_report(rows: list[TuneRow], best: TuneRow | None, target: float, k: int, out: Path) -> None:
    """``tune.json``, ``tune.md`` (the table, Pareto rows marked) and ``tune.png`` (latency vs recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    front = {r.cascade for r in pareto(rows)}
    (out / "tune.json").write_text(json.dumps(
        {"k": k, "target_recall": target, "best": asdict(best) if best else None,
         "rows": [asdict(r) | {"pareto": r.cascade in front} for r in rows]}, indent=2) + "\n")
    lines = [f"# Cascade tuning: recall@{k} target {target}", "",
             "| cascade | recall | p50 ms | p99 ms | batched ms/query | first stage B/vec | pareto |",
             "|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.p50_ms):
        mark = "best" if best and r.cascade == best.cascade else ("yes" if r.cascade in front else "")
        lines.append(f"| `{r.cascade}` | {r.recall:.4f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
                     f"{r.batch_ms_per_query:.4f} | {r.first_stage_bytes_per_vector:g} | {mark} |")
    (out / "tune.md").write_text("\n".join(lines) + "\n")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    families: dict[str, list[TuneRow]] = {}
    for r in rows:
        families.setdefault(r.cascade.split(":")[0], []).append(r)
    for name, rs in families.items():
        rs = sorted(rs, key=lambda r: r.p50_ms)
        ax.plot([r.recall for r in rs], [r.p50_ms for r in rs], "o-", label=name, markersize=4)
    if best:
        ax.plot([best.recall], [best.p50_ms], "k*", markersize=14, label=f"chosen: {best.cascade}")
    ax.axvline(target, color="grey", linestyle="--", linewidth=1)
    ax.set_xlabel(f"recall@{k} vs exact full-dimension search")
    ax.set_ylabel("single-query latency p50 (ms)")
    ax.set_yscale("log")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out / "tune.png", dpi=120)
    plt.close(fig)


def tuning_record(best: TuneRow, k: int, target: float, n_queries: int, source: str) -> dict[str, Any]:
    return {"k": k, "target_recall": target, "queries": n_queries, "query_source": source, **asdict(best)}
