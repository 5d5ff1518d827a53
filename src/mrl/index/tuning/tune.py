"""Pick the cheapest cascade that meets a recall target against exact full-dimension search."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index.base import Tunable
from mrl.index.cascade import Cascade, parse_cascade
from mrl.index.tuning.recall import lower_bound, per_query_recall, true_neighbours
from mrl.prefix import unit_rows
from mrl.vectors import check_vectors

SHORTLIST_FACTORS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)
IVF_SHORTLIST_FACTORS = (2, 5, 10, 20, 50)  # an inverted file's recall is set by its width (lists scanned)
IVF_WIDTHS = (8, 16, 32, 64, 96, 128, 192, 256, 384, 512, 1024)
NO_GAIN = 0.002  # widening stops when two doublings in a row add less recall than this


@dataclass(frozen=True)
class TuneRow:
    cascade: str
    recall: float  # recall@k against exact full-dimension search, mean over the sample queries
    recall_low: float  # one-sided lower confidence bound of that mean (what ``pick`` compares)
    p50_ms: float  # single-query latency
    p99_ms: float
    batch_ms_per_query: float
    first_stage_bytes_per_vector: float


def sample_queries(index: Tunable, n: int, noise: float, seed: int = 0) -> np.ndarray:
    """Corpus vectors plus Gaussian noise of relative norm ``noise``: queries near, not on, the data."""
    x = index.sample(n, seed)  # (m, D): rows drawn by default_rng(seed).choice over the live rows
    rng = np.random.default_rng(seed)
    rng.choice(index.count, size=len(x), replace=False)  # the same draw, so the noise below continues that stream
    g = unit_rows(rng.standard_normal(x.shape).astype(np.float32))
    return unit_rows(x) + noise * g


def tuning_queries(index: Tunable, queries: np.ndarray | None, n_queries: int, noise: float,
                   seed: int = 0) -> np.ndarray:
    """The given queries (checked, through the index's adaptor) or sampled ones, in the stored space."""
    if queries is None:
        return sample_queries(index, n_queries, noise, seed)
    xq = check_vectors(queries, index.dim, "queries", owner="the index's", scan=True)
    if len(xq) < 2:
        raise MrlError(f"queries: {len(xq)} query vector(s); tuning needs at least 2")
    return index.prepare_queries(np.asarray(xq, dtype=np.float32))


def candidate_cascades(index: Tunable, k: int) -> list[Cascade]:
    """First stage x shortlist, with and without a middle rerank at twice the first prefix, then
    a rerank at the full dimension (also after an approximate first stage on all dims);
    inverted-file first stages also try every width (lists scanned) up to their list count."""
    out: list[Cascade] = []
    d_full, count = index.dim, index.count
    for spec in index.first_stages:
        if spec.kind == "exact" and spec.dim >= d_full:  # exact already: a rerank would change nothing
            out.append(Cascade(spec.kind, ((spec.dim, k),)))
            continue  # (approximate stages at the full dim are rescored exactly on the same dims)
        nlist = index.max_width(spec)
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


def latency(search: Callable[[np.ndarray], object], xq: np.ndarray, n_single: int) -> tuple[float, float, float]:
    """``(p50, p99, batched per query)`` in ms of ``search`` over single queries and the whole batch."""
    search(xq[:1])  # warm: first-stage structures load on first use
    times = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        search(q[None])
        times.append(time.perf_counter() - t)
    t = time.perf_counter()
    search(xq)
    batch = (time.perf_counter() - t) / len(xq)
    return float(np.percentile(times, 50) * 1e3), float(np.percentile(times, 99) * 1e3), batch * 1e3


def _latency(index: Tunable, xq: np.ndarray, k: int, cascade: Cascade, n_single: int) -> tuple[float, float, float]:
    return latency(lambda q: index.search(q, k, cascade, adapted=True), xq, n_single)


def tune(
    index: Tunable,
    k: int = 10,
    target_recall: float = 0.99,
    queries: np.ndarray | None = None,
    n_queries: int = 200,
    noise: float = 1.0,
    n_single: int = 50,
    seed: int = 0,
    max_bytes_per_vector: float | None = None,
    confidence: float = 0.9,
    progress: bool = False,
    outcomes: dict[str, dict[str, Any]] | None = None,
) -> tuple[TuneRow | None, list[TuneRow]]:
    """Measure every candidate cascade; returns (cheapest meeting the target or None, all rows).

    A cascade meets the target when the lower ``confidence`` bound of its recall over the
    sample queries does (0.5: the sample mean itself). Latency is measured only for cascades on
    the recall/cost frontier of each first stage (the smallest shortlists and widths that reach
    the target, and every cheaper one below it). ``progress``: a bar (stderr) over the candidates.

    A first stage that misses the target on the whole grid is widened further (shortlist, or
    lists scanned, doubled each time) until it meets the target, or until the budget rules it
    out: its single-query latency passes exact full-dimension search's, or nothing is left to
    widen (the whole corpus shortlisted, every list scanned). ``outcomes`` (if given) gets one
    entry per first stage: ``{"status": "met" | "slower than exact" | "plateau", "cascade",
    "recall", "recall_low", "p50_ms"}``, and ``"exact"``: exact search's p50.
    """
    if not 0 < target_recall <= 1:
        raise MrlError(f"target recall must be in (0, 1], got {target_recall}")
    if not 0 < confidence < 1:
        raise MrlError(f"confidence must be in (0, 1), got {confidence}")
    xq = tuning_queries(index, queries, n_queries, noise, seed)
    truth = true_neighbours(index, xq, k)
    stats = index.stats()["first_stages"]
    measure = _Measure(index, xq, truth, k, confidence, n_single, stats)
    rows, reached = _measure_grid(measure, candidate_cascades(index, k), target_recall, progress)
    _widen(index, xq, truth, k, target_recall, confidence, n_single, rows, reached, stats, outcomes)
    return pick(rows, target_recall, max_bytes_per_vector), rows


def _measure_grid(measure: _Measure, candidates: list[Cascade], target: float, progress: bool
                  ) -> tuple[list[TuneRow], dict[str, list[tuple[int, int]]]]:
    """Rows of the candidate cascades, skipping those at least as wide as one that met the target;
    and per family, the (width, shortlist) of those that met it."""
    from tqdm.auto import tqdm

    rows: list[TuneRow] = []
    reached: dict[str, list[tuple[int, int]]] = {}
    for cascade in tqdm(candidates, desc="tune: measuring cascades", unit="cascade", disable=not progress):
        family = _family(cascade)
        width, n1 = _reach(cascade)
        if any(w <= width and n <= n1 for w, n in reached.get(family, [])):
            continue  # searches at least as wide and keeps at least as many as one that met the target
        row, low = measure.with_bound(cascade)
        rows.append(row)
        if low >= target:
            reached.setdefault(family, []).append((width, n1))
    return rows, reached


def _family(c: Cascade) -> str:
    return f"{c.kind}@{c.first[0]}/{len(c.stages)}"


def _wider(index: Tunable, c: Cascade) -> Cascade | None:
    """The next cascade of a widening: twice the shortlist, and for inverted files also twice the
    lists scanned (a wider scan finds more true neighbours, which need room in the shortlist:
    on 1M x 768 diffuse clusters 500 candidates capped recall below 0.99 at any width)."""
    spec = next(s for s in index.first_stages if s.kind == c.kind and s.dim == c.first[0])
    nlist = index.max_width(spec)
    (d1, n1), rest = c.first, c.stages[1:]
    width = min(2 * c.width, nlist) if nlist and c.width is not None and c.width < nlist else c.width
    if n1 >= index.count and width == c.width:
        return None
    n1 = min(2 * n1, index.count)
    if len(rest) > 1:  # a middle stage keeps a quarter of the first shortlist, as in the grid
        rest = ((rest[0][0], max(rest[-1][1], n1 // 4)), *rest[1:])
    return Cascade(c.kind, ((d1, n1), *rest), width)


def _widen(index: Tunable, xq: np.ndarray, truth: np.ndarray, k: int, target: float, confidence: float,
           n_single: int, rows: list[TuneRow], reached: dict[str, list[tuple[int, int]]], stats: dict[str, Any],
           outcomes: dict[str, dict[str, Any]] | None) -> None:
    """Widen every first stage's widest measured cascade that missed the target (see :func:`tune`)."""
    exact_p50 = _exact_latency(index, xq, k, n_single)
    by_family: dict[str, TuneRow] = {}
    for r in rows:  # each family's widest measured cascade
        c = parse_cascade(r.cascade, index.dim)
        f = _family(c)
        if f not in by_family or _reach(c) >= _reach(parse_cascade(by_family[f].cascade, index.dim)):
            by_family[f] = r
    measure = _Measure(index, xq, truth, k, confidence, n_single, stats)
    for f, last in by_family.items():
        status, row = ("met", last) if f in reached else _widen_family(measure, last, target, exact_p50, rows)
        if outcomes is not None:
            outcomes[f] = {"status": status, "cascade": row.cascade, "recall": row.recall,
                           "recall_low": row.recall_low, "p50_ms": row.p50_ms}
    if outcomes is not None:
        outcomes["exact"] = {"p50_ms": round(exact_p50, 3)}


@dataclass(frozen=True)
class _Measure:
    """Recall and latency of one cascade on the tuning queries, as a row."""

    index: Tunable
    xq: np.ndarray
    truth: np.ndarray
    k: int
    confidence: float
    n_single: int
    stats: dict[str, Any]

    def __call__(self, c: Cascade) -> TuneRow:
        return self.with_bound(c)[0]

    def with_bound(self, c: Cascade) -> tuple[TuneRow, float]:
        """The row and its recall's lower bound before rounding."""
        _, ids = self.index.search(self.xq, self.k, c, adapted=True)
        recalls = per_query_recall(ids, self.truth)  # (nq,)
        low = lower_bound(recalls, self.confidence)
        p50, p99, batch = _latency(self.index, self.xq, self.k, c, self.n_single)
        return TuneRow(str(c), round(float(recalls.mean()), 4), round(low, 4), round(p50, 3), round(p99, 3),
                       round(batch, 4), self.stats.get(f"{c.kind}@{c.first[0]}", {}).get("bytes_per_vector", 0.0)), low


def _widen_family(measure: _Measure, last: TuneRow, target: float, exact_p50: float, rows: list[TuneRow]
                  ) -> tuple[str, TuneRow]:
    """Double one family's widest cascade until it meets the target or the budget rules it out."""
    row, gains, prev_p50 = last, [], last.p50_ms
    wider = _wider(measure.index, parse_cascade(last.cascade, measure.index.dim))
    while wider is not None:
        prev, row = row.recall, measure(wider)
        rows.append(row)
        gains.append(row.recall - prev)
        if row.recall_low >= target:
            return "met", row
        if row.p50_ms > exact_p50:
            return "slower than exact", row
        if row.p50_ms + 2 * (row.p50_ms - prev_p50) > exact_p50:
            # a doubling doubles the part of the time that grows with the width: the next one would be
            # slower than exact search (which always meets the target), so measuring it is waste
            return "next slower than exact", row
        if len(gains) >= 2 and gains[-1] + gains[-2] < NO_GAIN:
            return "no gain", row
        prev_p50 = row.p50_ms
        wider = _wider(measure.index, wider)
    return "plateau", row


def _reach(c: Cascade) -> tuple[int, int]:
    return (c.width or 0, c.first[1])


def _exact_latency(index: Tunable, xq: np.ndarray, k: int, n_single: int) -> float:
    index.exact_search(xq[:1], k, adapted=True)
    times = []
    for q in xq[:n_single]:
        t = time.perf_counter()
        index.exact_search(q[None], k, adapted=True)
        times.append(time.perf_counter() - t)
    return float(np.percentile(times, 50) * 1e3)


def pick(
    rows: list[TuneRow], target_recall: float, max_bytes_per_vector: float | None = None, batched: bool = False
) -> TuneRow | None:
    """The fastest row whose recall's lower bound meets the target, optionally among first
    stages that keep at most ``max_bytes_per_vector`` resident. Fastest: single-query p50
    (ties: batched), or with ``batched`` the batched time per query (ties: p50)."""
    meeting = [r for r in rows if r.recall_low >= target_recall and
               (max_bytes_per_vector is None or r.first_stage_bytes_per_vector <= max_bytes_per_vector)]
    key = (lambda r: (r.batch_ms_per_query, r.p50_ms)) if batched else (lambda r: (r.p50_ms, r.batch_ms_per_query))
    return min(meeting, key=key) if meeting else None


def pareto(rows: list[TuneRow]) -> list[TuneRow]:
    """Rows no other row beats on both recall and single-query latency."""
    return [r for r in rows if not any(o.recall >= r.recall and o.p50_ms < r.p50_ms for o in rows)]


def tuning_record(best: TuneRow, k: int, target: float, n_queries: int, source: str) -> dict[str, Any]:
    return {"k": k, "target_recall": target, "queries": n_queries, "query_source": source, **asdict(best)}
