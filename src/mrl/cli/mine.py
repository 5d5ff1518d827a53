"""``mrl mine``: hard-negative triplets for ``mrl train``, mined with a model over a BEIR corpus."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, handle_errors


@handle_errors
def mine_command(
    data: Annotated[Path, typer.Option(help="BEIR folder: its --split's pairs, negatives from its whole corpus.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Triplets file to write (.jsonl).")],
    model: Annotated[str, typer.Option("--model", "-m", help="Model that ranks the candidates.",
                                       envvar="MRL_MODEL")] = "minilm",
    split: Annotated[str, typer.Option(help="Split whose pairs get negatives.")] = "train",
    num_negatives: Annotated[int, typer.Option(help="Negatives per pair (columns negative or negative_1..n).",
                                               min=1)] = 1,
    range_min: Annotated[int, typer.Option(help="Skip the model's top-N documents (likely unjudged positives).",
                                           min=0)] = 0,
    range_max: Annotated[int, typer.Option(help="Consider candidates down to this rank.", min=1)] = 50,
    relative_margin: Annotated[float, typer.Option(
        help="Keep a negative only if its score is this share below the positive's (skips near-duplicates).")
                               ] = 0.05,
    max_score: Annotated[float | None, typer.Option(help="Skip candidates scoring above this.")] = None,
    sampling: Annotated[str, typer.Option(help="top: the highest-ranked valid candidates; random: any of them.")
                        ] = "top",
    batch_size: Annotated[int, typer.Option(help="Encoding batch size.", min=1)] = 64,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")] = None,
) -> None:
    """Mine hard negatives with sentence-transformers' mine_hard_negatives; writes what `mrl train --data` reads."""
    from mrl.training.mine import MineOptions, mine

    options = MineOptions(num_negatives, range_min, range_max, relative_margin, max_score, sampling, batch_size)
    counts = mine(model, data, out, split, options, device)
    console.print(f"wrote {counts['written']} of {counts['pairs']} pairs with {num_negatives} negative(s) each to "
                  f"[bold]{out}[/] ({counts['without_enough_negatives']} without enough valid negatives)")
