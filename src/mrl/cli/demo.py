"""``mrl demo``: the whole job on the shipped data, offline, in a few minutes on a CPU."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, handle_errors, results_table


@handle_errors
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Folder for model and reports.")] = Path("demo-out"),
    max_steps: Annotated[int | None, typer.Option(help="Cap the training steps (default: one epoch).", min=1)] = None,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")] = None,
) -> None:
    """Fine-tune all-MiniLM-L6-v2 with the Matryoshka loss on debian-mini; compare nDCG@10 per dimension."""
    from mrl.demo import comparison_rows, run_demo

    console.print("[bold]mrl demo[/]: base MiniLM vs Matryoshka-trained, nDCG@10 per prefix dimension")
    result = run_demo(output, max_steps=max_steps, device=device)
    header, rows = comparison_rows(result)
    console.print(results_table(
        f"debian-mini test ({result.base.n_queries} queries, {result.base.n_docs} docs)", header, rows))
    for name in ("model", "report.json", "report.md", "quality_vs_dim.png"):
        console.print(f"wrote {output / name}")
