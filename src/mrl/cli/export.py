"""``mrl export``: a model folder plus an ONNX encoder (fp32, optionally int8) checked against PyTorch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, err_console, handle_errors, parse_ints, results_table


@handle_errors
def export_command(
    model: Annotated[str, typer.Argument(help="Model folder, 'minilm', or a cached hub name.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="New folder: the model, onnx/ and mrl.json.")],
    quantize: Annotated[str, typer.Option(help="none (fp32 graph only) or int8 (fp32 and int8 graphs).")] = "none",
    calibrate: Annotated[Path | None, typer.Option(
        help="BEIR folder: every runtime's nDCG@10 per prefix is checked against PyTorch's; with int8, three "
             "graphs compete (dynamic, dynamic with the FFN down-projections in fp32, static calibrated on its "
             "texts) and the one losing least at its worst prefix is kept.")] = None,
    split: Annotated[str, typer.Option(help="qrels split of --calibrate to score.")] = "dev",
    accept_loss: Annotated[bool, typer.Option(
        "--accept-loss", help="Export even if a runtime loses more than --max-loss nDCG@10 at a prefix.")] = False,
    max_loss: Annotated[float, typer.Option(help="The guard's tolerance in nDCG@10.")] = 0.005,
    dims: Annotated[str | None, typer.Option(
        help="Prefixes to check (default: the model's trained dims, else 32,64,... + full).")] = None,
    max_queries: Annotated[int, typer.Option(help="Sample at most this many calibration queries (0: all).",
                                             min=0)] = 0,
    max_docs: Annotated[int, typer.Option(help="Judged docs plus random others up to this size (0: all).",
                                          min=0)] = 0,
) -> None:
    """Export MODEL to one ONNX graph whose output is the model's normalised embedding.

    The folder still loads as a Sentence-Transformers model; mrl.json records the ONNX files, their
    sha256 and the agreement with PyTorch measured here. Nothing is written unless every check passes.
    """
    from mrl.export.config import ExportConfig
    from mrl.export.onnx import export

    dim_list = parse_ints(dims, "--dims")
    cfg = ExportConfig(model=model, out=out, quantize=quantize, calibrate=calibrate, split=split,
                       accept_loss=accept_loss, max_loss=max_loss, dims=tuple(dim_list) if dim_list else None,
                       max_queries=max_queries, max_docs=max_docs)
    record = export(cfg, say=err_console.print)
    runtimes = list(record["runtimes"])
    agreement = record["agreement"]
    dims_seen = list(agreement[runtimes[0]]["cosine"])
    rows = [[d, *[f"{agreement[r]['cosine'][d]['mean']:.6f} / {agreement[r]['cosine'][d]['min']:.6f}"
                  for r in runtimes]] for d in dims_seen]
    console.print(results_table(f"cosine to PyTorch per prefix (mean / min over {agreement['texts']} texts)",
                                ["dim", *runtimes], rows))
    if "calibration" in record:
        cal = record["calibration"]
        names = list(cal["ndcg@10"])
        rows = [[d, *[f"{cal['ndcg@10'][r][d]:.4f}" for r in names]] for d in dims_seen]
        console.print(results_table(f"nDCG@10 per prefix on {cal['data']} ({cal['split']}, {cal['n_queries']} "
                                    f"queries, {cal['n_docs']} documents)", ["dim", *names], rows))
        if cal["accepted_loss"]:
            err_console.print("[yellow]warning:[/] a runtime loses more than the guard's tolerance; kept "
                              "(--accept-loss)")
    console.print(f"exported to [bold]{out}[/] (runtimes: torch, {', '.join(runtimes)})")
