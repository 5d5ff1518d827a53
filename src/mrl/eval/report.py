"""Per-dimension results: JSON, Markdown, a quality-vs-dimension plot, and dimension selection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.errors import MrlError
from mrl.eval.precision import is_precision_method

METRICS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")


@dataclass(frozen=True)
class EvalReport:
    """Scores per method (``truncate``, ``pca`` ...) per dimension.

    Attributes:
        results: ``{method: {dim: {metric: value}}}``; every method includes ``full_dim``.
    """

    model: str
    dataset: str
    split: str
    n_queries: int
    n_docs: int
    full_dim: int
    results: dict[str, dict[int, dict[str, float]]]

    @property
    def dims(self) -> list[int]:
        return sorted(self.results["truncate"])

    def retention(self, dim: int, metric: str = "ndcg@10", method: str = "truncate") -> float:
        """``metric`` at ``dim`` relative to the full dimension (of the same method)."""
        full = self.results[method][self.full_dim][metric]
        return self.results[method][dim][metric] / full if full > 0 else 0.0

    def select(self, threshold: float, metric: str = "ndcg@10", method: str = "truncate") -> int:
        """The smallest evaluated dimension whose ``metric`` is at least ``threshold`` x the full one's."""
        if not 0 < threshold <= 1:
            raise MrlError(f"--select takes a fraction in (0, 1], got {threshold}")
        return min(d for d in self.dims if self.retention(d, metric, method) >= threshold)

    def _dims_block(self, method: str) -> dict[str, dict[str, float]]:
        block = {}
        for d in self.dims:
            entry = dict(self.results[method][d])
            entry["ndcg@10_retention"] = self.retention(d, "ndcg@10", method)
            block[str(d)] = entry
        return block

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "model": self.model,
            "dataset": self.dataset,
            "split": self.split,
            "n_queries": self.n_queries,
            "n_docs": self.n_docs,
            "full_dim": self.full_dim,
            "dims": self._dims_block("truncate"),
        }
        baselines = [m for m in self.results if m != "truncate" and not is_precision_method(m)]
        if baselines:
            out["baselines"] = {m: {"dims": self._dims_block(m)} for m in baselines}
        quantised = [m for m in self.results if is_precision_method(m)]
        if quantised:
            out["precisions"] = {m: {"dims": self._dims_block(m)} for m in quantised}
        return out

    def write_json(self, path: str | Path) -> None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def rows(self, compact: bool = False) -> list[list[str]]:
        """Table rows: dim, every metric and the nDCG@10 retention of truncation, then per baseline
        every metric and retention (``compact``: only its nDCG@10 and retention)."""
        rows = []
        for d in self.dims:
            row = [str(d)]
            for method in self.results:
                r = self.results[method][d]
                metrics = ("ndcg@10",) if compact and method != "truncate" else METRICS
                row += [f"{r[m]:.4f}" for m in metrics] + [f"{self.retention(d, method=method):.1%}"]
            rows.append(row)
        return rows

    def header(self, compact: bool = False) -> list[str]:
        cols = ["dim"]
        for method in self.results:
            tag = "" if method == "truncate" else f"{method} "
            metrics = ("ndcg@10",) if compact and method != "truncate" else METRICS
            cols += [tag + m for m in metrics] + [tag + "kept"]
        return cols

    def to_markdown(self) -> str:
        head = self.header()
        lines = [
            f"**{self.model}** on {self.dataset} / {self.split}: {self.n_queries} queries, {self.n_docs} documents",
            "",
            "| " + " | ".join(head) + " |",
            "|" + "---|" * len(head),
        ]
        lines += ["| " + " | ".join(r) + " |" for r in self.rows()]
        return "\n".join(lines) + "\n"

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> EvalReport:
        def parse(block: dict[str, dict[str, float]]) -> dict[int, dict[str, float]]:
            return {int(k): {m: v[m] for m in METRICS} for k, v in block.items()}

        results = {"truncate": parse(d["dims"])}
        for m, b in {**d.get("baselines", {}), **d.get("precisions", {})}.items():
            results[m] = parse(b["dims"])
        return cls(d["model"], d["dataset"], d["split"], d["n_queries"], d["n_docs"], d["full_dim"], results)


def plot_reports(reports: dict[str, EvalReport], path: str | Path, metric: str = "ndcg@10") -> None:
    """Draw ``metric`` against dimension for several labelled reports (and their baselines)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2), dpi=120)
    for label, report in reports.items():
        for method, by_dim in report.results.items():
            dims = sorted(by_dim)
            name = label if method == "truncate" else f"{label} + {method}"
            style = "-o" if method == "truncate" else "--s"
            ax.plot(dims, [by_dim[d][metric] for d in dims], style, label=name, markersize=4)
    ax.set_xscale("log", base=2)
    all_dims = sorted({d for r in reports.values() for d in r.dims})
    ax.set_xticks(all_dims)
    ax.set_xticklabels([str(d) for d in all_dims])
    ax.set_xlabel("embedding prefix dimension")
    ax.set_ylabel(metric)
    first = next(iter(reports.values()))
    ax.set_title(f"{metric} vs dimension: {first.dataset} / {first.split}")
    save_figure(fig, ax, path, legend_size=8)


def save_figure(fig: Any, ax: Any, path: str | Path, legend_size: int = 8) -> None:
    """Grid, legend, tight layout; write the PNG (its folder made) and free the figure."""
    import matplotlib.pyplot as plt

    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    plt.close(fig)
