"""The demo: fine-tune all-MiniLM-L6-v2 on the shipped debian-mini set and compare per-dim quality."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import Any

from mrl.eval.report import EvalReport, plot_reports


def demo_data_path() -> Path:
    """The small BEIR set shipped inside the package (a subset of debian-pkgs)."""
    return Path(str(files("mrl") / "demo_data" / "debian-mini"))


@dataclass(frozen=True)
class DemoResult:
    base: EvalReport
    trained: EvalReport
    train_summary: dict[str, Any]
    output: Path


def run_demo(
    output: str | Path = "demo-out",
    model: str = "minilm",
    epochs: int = 1,
    max_steps: int | None = None,
    head: str = "linear",
    distill_weight: float = 0.0,
    seed: int = 42,
    device: str | None = None,
) -> DemoResult:
    """Evaluate the base model, train it with the Matryoshka loss, evaluate again, write the reports."""
    from mrl.data.beir import load_beir
    from mrl.encoders.model import embedding_dim, load_model
    from mrl.eval.evaluate import evaluate
    from mrl.prefix import default_dims
    from mrl.training.config import TrainConfig
    from mrl.training.loop import train

    out = Path(output)
    data = demo_data_path()
    test = load_beir(data, "test")
    base_model = load_model(model, device, 128)
    dims = default_dims(embedding_dim(base_model))
    cfg = TrainConfig(  # checked now, before minutes of evaluation
        model=model, data=str(data), output=str(out / "model"), dims=tuple(dims), head=head,
        distill_weight=distill_weight, epochs=epochs, max_steps=max_steps, seed=seed, device=device,
    )
    base = evaluate(base_model, test, dims, ("pca",), model_name=f"base ({model})")
    del base_model
    summary = train(cfg)
    trained = evaluate(load_model(str(out / "model"), device, 128), test, dims, model_name="mrl-trained")
    result = DemoResult(base, trained, summary, out)
    write_reports(result)
    return result


def comparison_rows(result: DemoResult) -> tuple[list[str], list[list[str]]]:
    header = ["dim", "base nDCG@10", "base+PCA", "mrl nDCG@10", "base retention", "mrl retention"]
    rows = []
    for d in result.base.dims:
        b, p = result.base.results["truncate"][d], result.base.results["pca"][d]
        t = result.trained.results["truncate"][d]
        rows.append([str(d), f"{b['ndcg@10']:.4f}", f"{p['ndcg@10']:.4f}", f"{t['ndcg@10']:.4f}",
                     f"{result.base.retention(d):.1%}", f"{result.trained.retention(d):.1%}"])
    return header, rows


def write_reports(result: DemoResult) -> None:
    out = result.output
    out.mkdir(parents=True, exist_ok=True)
    report = {"base": result.base.to_dict(), "trained": result.trained.to_dict(), "training": result.train_summary}
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    header, rows = comparison_rows(result)
    s = result.train_summary
    md = [
        "# mrl demo: Matryoshka fine-tuning of all-MiniLM-L6-v2 on debian-mini",
        "",
        f"Test split: {result.base.n_queries} queries over {result.base.n_docs} documents. "
        f"Training: {s['steps']} steps of {s['config']['batch_size']} pairs in {s['train_time_s']:.0f}s "
        f"({s['pairs_per_s']:.1f} pairs/s), dims {s['matryoshka_dims']}, weights {s['matryoshka_weights']}, "
        f"head {s['config']['head']}, self-distillation {s['config']['distill_weight']}.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + "---|" * len(header),
        *["| " + " | ".join(r) + " |" for r in rows],
        "",
        "![nDCG@10 vs dimension](quality_vs_dim.png)",
        "",
    ]
    (out / "report.md").write_text("\n".join(md))
    plot_reports({"base MiniLM": result.base, "mrl-trained": result.trained}, out / "quality_vs_dim.png")
