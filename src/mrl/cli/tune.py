"""``mrl index tune``: measure candidate cascades, store the cheapest that meets a recall target."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import typer
from rich.markup import escape

from mrl.cli.common import check_output, console, err_console, handle_errors, print_json, results_table
from mrl.cli.index_inputs import IndexArg, JsonOpt, load_vectors
from mrl.errors import MrlError


@handle_errors
def tune_command(
    index_path: IndexArg,
    k: Annotated[int, typer.Option(help="Results per query.", min=1)] = 10,
    target_recall: Annotated[float, typer.Option(help="Recall@k vs exact full-dim search to reach.")] = 0.99,
    queries: Annotated[Path | None, typer.Option(help="Sample queries .npy (default: noisy corpus vectors).")] = None,
    n_queries: Annotated[int, typer.Option(help="Sampled queries when --queries is not given.", min=2)] = 200,
    noise: Annotated[float, typer.Option(help="Relative noise added to sampled corpus vectors.")] = 1.0,
    out: Annotated[Path | None, typer.Option(help="Report folder (default IDX/tune).")] = None,
    max_bytes_per_vector: Annotated[float | None, typer.Option(
        help="Only first stages keeping at most this many bytes per vector in RAM.")] = None,
    confidence: Annotated[float, typer.Option(
        help="Require the lower bound of this one-sided confidence interval of the sample recall to "
             "meet the target (0.5: the sample mean), so the pick holds on new queries.")] = 0.9,
    dry_run: Annotated[bool, typer.Option(help="Report only; keep the current default cascade.")] = False,
    adaptive: Annotated[bool, typer.Option(
        help="Also fit a per-query gate on the chosen cascade (its first shortlist doubled, up to 8x if needed) "
             "and store the gated cascade CASCADE@gate: easy queries rescore less. Needs at least 200 tuning "
             "queries.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Measure candidate cascades, store the cheapest that meets the target as the default."""
    from mrl.index import open_index
    from mrl.index.tuning.tune import tune, tuning_record

    check_output(out, "folder", "--out")
    index = open_index(index_path)
    xq = np.asarray(load_vectors(queries), dtype=np.float32) if queries else None
    say = err_console if as_json else console
    n_tuning = len(xq) if xq is not None else min(n_queries, index.count)
    _check_adaptive(adaptive, n_tuning)  # named before minutes of measuring
    outcomes: dict[str, dict[str, Any]] = {}
    best, rows = tune(index, k, target_recall, xq, n_queries, noise, max_bytes_per_vector=max_bytes_per_vector,
                      confidence=confidence, progress=True, outcomes=outcomes)
    report_dir = out or (Path(index_path) / "tune" if Path(index_path).is_dir() else Path("tune-report"))
    _report(rows, best, outcomes, target_recall, k, confidence, report_dir, as_json, dry_run)
    if best is None:
        raise MrlError(f"no candidate cascade reached recall@{k} {target_recall}; the best was "
                       f"{max(r.recall for r in rows):.4f} (lower bound {max(r.recall_low for r in rows):.4f}; "
                       "every first stage was widened until the target or the budget ruled it out, see above; "
                       "add a first stage on a longer prefix, or give more --queries)")
    source = str(queries) if queries else f"{n_queries} corpus vectors + noise {noise}"
    record = tuning_record(best, k, target_recall, n_tuning, source)
    chosen, gate, p50 = best.cascade, None, best.p50_ms
    if adaptive:  # fitted before anything is stored: a failure keeps the old default
        chosen, gate, record, p50 = _adaptive(index, best, record, xq, n_queries, noise, k, target_recall,
                                              confidence, say)
    if not dry_run:
        index.set_default_cascade(chosen, record, **({"gate": gate} if gate is not None else {}))
    say.print(f"chosen: [bold]{chosen}[/] recall {best.recall:.4f}, p50 {p50:.3f} ms"
              + (" (dry run: not stored)" if dry_run else " (stored as the index default)"))


def _check_adaptive(adaptive: bool, n_tuning: int) -> None:
    from mrl.index.tuning.adaptive import MIN_TUNING_QUERIES

    if adaptive and n_tuning < MIN_TUNING_QUERIES:
        raise MrlError(f"--adaptive needs at least {MIN_TUNING_QUERIES} tuning queries to fit and calibrate the "
                       f"gate (half each), got {n_tuning}; pass more --queries or --n-queries {MIN_TUNING_QUERIES}")


def _report(rows: list[Any], best: Any, outcomes: dict[str, dict[str, Any]], target: float, k: int,
            confidence: float, report_dir: Path, as_json: bool, dry_run: bool) -> None:
    """Write tune.json/md/png; print the table (or the JSON) and one line per first stage."""
    from mrl.index.tuning.report import describe_outcomes, write_report

    write_report(rows, best, target, k, report_dir, outcomes)
    table = [[r.cascade, f"{r.recall:.4f}", f"{r.recall_low:.4f}", f"{r.p50_ms:.3f}", f"{r.batch_ms_per_query:.4f}",
              f"{r.first_stage_bytes_per_vector:g}"] for r in sorted(rows, key=lambda r: r.p50_ms)]
    say = err_console if as_json else console
    if as_json:
        print_json(json.loads((report_dir / "tune.json").read_text()) | {"stored": best is not None and not dry_run})
    else:
        console.print(results_table(f"cascades (recall@{k} vs exact full-dim; low: {confidence:g} lower bound)",
                                    ["cascade", "recall", "low", "p50 ms", "batch ms/q", "B/vec"], table))
    say.print(f"wrote {report_dir}/tune.md, tune.json, tune.png")
    for line in describe_outcomes(outcomes):
        say.print(f"  {escape(line)}")


def _adaptive(index: Any, best: Any, record: dict[str, Any], xq: np.ndarray | None, n_queries: int, noise: float,
              k: int, target: float, confidence: float, say: Any) -> tuple[str, Any, dict[str, Any], float]:
    """Fit a gate on the tuned cascade; keep it only when it is faster than the fixed cascade it wraps.

    Returns the cascade to store, its gate (or ``None``), the tuning record and the stored cascade's p50.
    """
    from mrl.index.tuning.adaptive import tune_adaptive
    from mrl.index.tuning.tune import tuning_queries

    result = tune_adaptive(index, best.cascade, tuning_queries(index, xq, n_queries, noise), k, target, confidence)
    c = result.gate.calibration
    what = "lists scanned" if result.gate.axis == "width" else "shortlist rescored"
    say.print(f"gate on {result.gate.cascade}: calibration recall {c['recall']:.4f} (lower bound "
              f"{c['recall_low']:.4f}), mean {what} {c['mean_level']:.0f} of {result.gate.levels[-1]}; "
              f"p50 {result.gated_p50_ms:.3f} ms against {result.fixed_p50_ms:.3f} ms fixed ({result.fixed})")
    if result.gated_p50_ms >= result.fixed_p50_ms:
        say.print("the gate is not faster than the fixed cascade: the fixed cascade is stored, not the gate")
        return best.cascade, None, record | {"adaptive": False, "gate_rejected": result.record()}, best.p50_ms
    return str(result.cascade), result.gate, record | result.record(), result.gated_p50_ms
