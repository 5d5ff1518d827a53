"""Choose the cheapest (dimension, precision) that keeps a target share of the full float score.

Every (dim, method) of an evaluation report is an option: its bytes per vector in RAM
(:func:`mrl.eval.precision.bytes_per_vector`) and its nDCG@10; its share is that nDCG@10 over
the float32 full-dimension one. The Pareto front keeps the options that no cheaper option
matches; the pick is the cheapest option on it with ``share >= target`` within ``max_bytes``.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mrl.errors import MrlError
from mrl.eval.precision import RESCORED, base_precision, bytes_per_vector
from mrl.eval.report import EvalReport, save_figure


@dataclass(frozen=True)
class Option:
    dim: int
    precision: str  # float32, int8, binary, int8+rescore, binary+rescore
    bytes_per_vector: float
    ndcg: float
    share: float

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["ndcg@10"] = d.pop("ndcg")
        return d

    def __str__(self) -> str:
        return f"{self.precision}@{self.dim} ({self.bytes_per_vector:g} B/vector)"


def options(report: EvalReport, precisions: list[str] | None = None) -> list[Option]:
    """Every (dim, precision) of ``report``; ``precisions`` (base names) must all be in it."""
    full = report.results["truncate"][report.full_dim]["ndcg@10"]
    methods = {("float32" if m == "truncate" else m): m for m in report.results
               if m == "truncate" or base_precision(m) in ("int8", "binary")}
    have = {base_precision(m) for m in methods}
    for p in precisions or []:
        if p not in have:
            raise MrlError(f"the report has no {p} results (it has {', '.join(sorted(have))}); evaluate with "
                           f"`mrl eval ... --precision float32,int8,binary --json REPORT`")
    out = []
    for name, method in methods.items():
        if precisions and base_precision(name) not in precisions:
            continue
        for d, scores in report.results[method].items():
            out.append(Option(d, name, bytes_per_vector(name, d), scores["ndcg@10"],
                              scores["ndcg@10"] / full if full > 0 else 0.0))
    return sorted(out, key=lambda o: (o.bytes_per_vector, -o.ndcg, RESCORED in o.precision, o.precision))


def pareto(opts: list[Option]) -> list[Option]:
    """Options no cheaper (or equally cheap) option matches in nDCG@10, cheapest first."""
    front, best = [], float("-inf")
    for o in opts:  # sorted by bytes, then quality
        if o.ndcg > best:
            front.append(o)
            best = o.ndcg
    return front


def choose(opts: list[Option], target: float, max_bytes: float | None = None) -> Option:
    """The cheapest option keeping ``target`` of the full float nDCG@10, within ``max_bytes``."""
    if not 0 < target <= 1:
        raise MrlError(f"--target takes a share in (0, 1], got {target}")
    if not opts:
        raise MrlError("the report holds no option to choose from")
    if max_bytes is not None:
        cheapest = min(opts, key=lambda o: o.bytes_per_vector)
        if max_bytes < cheapest.bytes_per_vector:
            raise MrlError(f"--max-bytes {max_bytes:g} is below every option (the cheapest is {cheapest})")
    allowed = [o for o in opts if max_bytes is None or o.bytes_per_vector <= max_bytes]
    meeting = [o for o in allowed if o.share >= target]
    if not meeting:
        best = max(allowed, key=lambda o: o.share)
        within = f" within {max_bytes:g} B/vector" if max_bytes is not None else ""
        raise MrlError(f"no option keeps {target:.0%} of the full float nDCG@10{within}: the best is {best}, "
                       f"{best.share:.1%}")
    return min(meeting, key=lambda o: (o.bytes_per_vector, -o.share))


def load_report(path: str | Path) -> EvalReport:
    import json

    try:
        doc = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise MrlError(f"report not found: {path}") from None
    except IsADirectoryError:
        raise MrlError(f"{path}: a folder, not an `mrl eval --json` report") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise MrlError(f"{path}: not a JSON report ({e})") from None
    except OSError as e:
        raise MrlError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        report = EvalReport.from_dict(doc)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise MrlError(f"{path}: not an `mrl eval --json` report (missing or bad {e})") from None
    _check_scores(report, path)
    return report


def _check_scores(report: EvalReport, path: str | Path) -> None:
    """Every nDCG@10 a number in [0, 1] (a string or 7.8 would make absurd picks)."""
    for method, by_dim in report.results.items():
        for dim, scores in by_dim.items():
            value = scores.get("ndcg@10") if isinstance(scores, dict) else None
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise MrlError(f"{path}: {method} at {dim} dims has nDCG@10 {value!r}; expected a number in [0, 1]")


def check_budget(target: float, max_bytes: float | None) -> None:
    if not (math.isfinite(target) and 0 < target <= 1):
        raise MrlError(f"--target takes a share in (0, 1], got {target}")  # before the report is read
    if max_bytes is not None and not (math.isfinite(max_bytes) and max_bytes > 0):
        raise MrlError(f"--max-bytes {max_bytes}: expected a positive number of bytes per vector")


def plot_front(opts: list[Option], front: list[Option], pick: Option | None, path: str | Path, title: str) -> None:
    """nDCG@10 against bytes per vector: every option by precision, the front as a line, the pick marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for name in dict.fromkeys(o.precision for o in opts):
        mine = [o for o in opts if o.precision == name]
        ax.plot([o.bytes_per_vector for o in mine], [o.ndcg for o in mine], "o", markersize=4, label=name)
    ax.plot([o.bytes_per_vector for o in front], [o.ndcg for o in front], "-", color="black", lw=1,
            label="Pareto front")
    if pick is not None:
        ax.plot([pick.bytes_per_vector], [pick.ndcg], "*", markersize=14, color="red", label=f"pick: {pick}")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("bytes per vector (RAM)")
    ax.set_ylabel("nDCG@10")
    ax.set_title(title)
    save_figure(fig, ax, path, legend_size=7)
