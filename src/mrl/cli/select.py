"""``mrl select``: the cheapest (dimension, precision) keeping a target share of the full float quality."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import check_output, console, err_console, handle_errors, print_json, results_table


@handle_errors
def select_command(
    report: Annotated[Path, typer.Argument(help="An `mrl eval --precision ... --json` report.")],
    target: Annotated[float, typer.Option(help="Share of the full-dimension float32 nDCG@10 to keep.")] = 0.95,
    max_bytes: Annotated[float | None, typer.Option(help="RAM budget in bytes per vector.")] = None,
    precision: Annotated[str | None, typer.Option(help="Only these precisions (e.g. int8,binary); each must be "
                                                       "in the report.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a quality-vs-bytes PNG with the Pareto front.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the pick as JSON on stdout.")] = False,
) -> None:
    """Print the Pareto front of quality vs bytes per vector and the cheapest option meeting --target."""
    from mrl.errors import MrlError
    from mrl.eval.precision import PRECISIONS
    from mrl.eval.select import check_budget, choose, load_report, options, pareto, plot_front

    check_budget(target, max_bytes)
    check_output(plot, "file", "--plot")
    wanted = [p.strip() for p in precision.split(",") if p.strip()] if precision else None
    for p in wanted or []:
        if p not in PRECISIONS:
            raise MrlError(f"--precision {p!r} is unknown (choose from: {', '.join(PRECISIONS)})")
    rep = load_report(report)
    opts = options(rep, wanted)
    front = pareto(opts)
    pick = choose(opts, target, max_bytes)
    out = err_console if json_out else console
    rows = [[("-> " if o == pick else "") + o.precision, str(o.dim), f"{o.bytes_per_vector:g}", f"{o.ndcg:.4f}",
             f"{o.share:.1%}"] for o in front]
    out.print(results_table(f"{rep.dataset}/{rep.split}: Pareto front (share = of float32 at {rep.full_dim} dims)",
                            ["precision", "dim", "bytes/vector", "ndcg@10", "share"], rows))
    budget = f" within {max_bytes:g} B/vector" if max_bytes is not None else ""
    out.print(f"cheapest keeping {target:.0%}{budget}: [bold]{pick.precision} at {pick.dim} dims[/], "
              f"{pick.bytes_per_vector:g} B/vector, nDCG@10 {pick.ndcg:.4f} ({pick.share:.1%})")
    if plot:
        plot_front(opts, front, pick, plot, f"{rep.model or rep.dataset}: nDCG@10 vs bytes per vector")
        out.print(f"wrote {plot}")
    if json_out:
        print_json(pick.to_dict())
