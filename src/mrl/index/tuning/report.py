"""The tune report: ``tune.json``, ``tune.md`` and ``tune.png``, and one line per first stage."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mrl.index.tuning.tune import NO_GAIN, TuneRow, pareto


def write_report(rows: list[TuneRow], best: TuneRow | None, target: float, k: int, out: Path,
                 outcomes: dict[str, dict[str, Any]] | None = None) -> None:
    """``tune.json``, ``tune.md`` (the table, Pareto rows marked) and ``tune.png`` (latency vs recall)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    front = {r.cascade for r in pareto(rows)}
    (out / "tune.json").write_text(json.dumps(
        {"k": k, "target_recall": target, "best": asdict(best) if best else None, "first_stages": outcomes or {},
         "rows": [asdict(r) | {"pareto": r.cascade in front} for r in rows]}, indent=2) + "\n")
    lines = [f"# Cascade tuning: recall@{k} target {target}", "",
             "| cascade | recall | lower bound | p50 ms | p99 ms | batched ms/query | first stage B/vec | pareto |",
             "|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: r.p50_ms):
        mark = "best" if best and r.cascade == best.cascade else ("yes" if r.cascade in front else "")
        lines.append(f"| `{r.cascade}` | {r.recall:.4f} | {r.recall_low:.4f} | {r.p50_ms:.3f} | {r.p99_ms:.3f} | "
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


def describe_outcomes(outcomes: dict[str, dict[str, Any]]) -> list[str]:
    """One line per first stage: met, or what ruled it out, with the widest cascade tried."""
    exact = outcomes.get("exact", {}).get("p50_ms")
    lines = []
    for family, o in outcomes.items():
        if family == "exact":
            continue
        why = {"met": "meets the target", "plateau": "plateaus: nothing left to widen",
               "no gain": f"plateaus: two doublings raised recall by less than {NO_GAIN}",
               "slower than exact": f"ruled out: slower than exact search ({exact} ms) before the target",
               "next slower than exact": f"ruled out: its next widening would be slower than exact search "
                                         f"({exact} ms; from the time the last one added)"}[o["status"]]
        lines.append(f"{family.split('/')[0]} ({family.split('/')[1]} stages): {why}; widest {o['cascade']}: "
                     f"recall {o['recall']:.4f} (low {o['recall_low']:.4f}), p50 {o['p50_ms']} ms")
    return lines


