"""``mrl train``: fine-tune an encoder with a Matryoshka objective (InfoNCE, distillation, parallel data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import console, handle_errors, parse_floats, parse_ints


@handle_errors
def train_command(
    output: Annotated[Path, typer.Option("--output", "-o", help="Where the trained model goes.")],
    model: Annotated[str, typer.Option("--model", "-m", envvar="MRL_MODEL",
                                       help="Base model: folder, 'minilm', 'multilingual-e5-small' or cached hub name."
                                       )] = "minilm",
    data: Annotated[Path | None, typer.Option(help="BEIR folder (pairs from --split) or a pairs/triplets file "
                                                   "(.jsonl[.gz]/.csv/.parquet: anchor, positive[, negative...]).")
                    ] = None,
    split: Annotated[str, typer.Option(help="Training split of a BEIR folder.")] = "train",
    dims: Annotated[str | None, typer.Option(help="Matryoshka dims, e.g. 32,64,128,256,384 "
                                                  "(default: powers of two from 32 plus the full dim).")] = None,
    weights: Annotated[str | None, typer.Option(help="One loss weight per dim, e.g. 2,1.5,1,1,1.")] = None,
    scale: Annotated[float, typer.Option(help="InfoNCE logit scale = 1/temperature.")] = 20.0,
    temperature: Annotated[float | None, typer.Option(help="Alternative to --scale.")] = None,
    teacher: Annotated[str | None, typer.Option(help="Distil into every prefix from this Sentence-Transformers model, "
                                                     "or from `mrl encode` folder[,folder] of precomputed teacher "
                                                     "vectors keyed by the data's ids.")] = None,
    distill: Annotated[str | None, typer.Option(help="kl (in-batch similarity distributions) or mse (unit "
                                                     "vectors); default mse with --parallel, else kl.")] = None,
    distill_weight: Annotated[float | None, typer.Option(
        help="Weight of the distillation term (default 1 with --teacher/--parallel, else 0). Without a teacher: "
             "self-distillation from the full dim to each prefix.")] = None,
    distill_temperature: Annotated[float, typer.Option(help="Temperature of the distillation softmax.")] = 1.0,
    teacher_view: Annotated[str | None, typer.Option(
        help="prefix: each student prefix matches the teacher's prefix of the same width; full: the teacher's "
             "whole embedding (a teacher of another width; mse then learns a projection per dim).")] = None,
    teacher_cache: Annotated[Path | None, typer.Option(help="Cache of a teacher model's embeddings "
                                                            "(default: OUTPUT/teacher-cache).")] = None,
    parallel: Annotated[str | None, typer.Option(
        help="Parallel .jsonl[.gz] file[,file...] ('en'/'text' or 'source'/'target'): the student's embeddings of "
             "source and translation both learn the teacher's of the source (default teacher: --model).")] = None,
    parallel_limit: Annotated[int | None, typer.Option(help="At most this many records per parallel file "
                                                            "(a seeded sample).", min=1)] = None,
    head: Annotated[str, typer.Option(help="'linear': add an identity-initialised linear layer after pooling; "
                                               "'orthogonal': the same layer kept a rotation.")
                    ] = "none",
    head_lr: Annotated[float, typer.Option(help="Peak learning rate of the --head layer.")] = 1e-3,
    freeze: Annotated[str | None, typer.Option(
        help="Comma-separated parts that keep their weights: 'embeddings' (the token table; 96M of "
             "multilingual-e5-small's 117M parameters).")] = None,
    batch_size: Annotated[int, typer.Option(help="Pairs per step.", min=2)] = 32,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-5,
    warmup_ratio: Annotated[float, typer.Option(help="Share of steps for linear warm-up.")] = 0.1,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.01,
    epochs: Annotated[int, typer.Option(help="Passes over the data (unless --max-steps).")] = 1,
    max_steps: Annotated[int | None, typer.Option(help="Stop after this many steps.")] = None,
    max_seq_length: Annotated[int, typer.Option(help="Token cap per text.")] = 128,
    seed: Annotated[int, typer.Option(help="Random seed (batch order, dropout).")] = 42,
    group_by_length: Annotated[bool, typer.Option(help="Batch texts of similar length together.")] = True,
    dev_data: Annotated[Path | None, typer.Option(help="BEIR folder evaluated during/after training.")] = None,
    dev_split: Annotated[str, typer.Option(help="Split of --dev-data.")] = "dev",
    dev_max_queries: Annotated[int, typer.Option(help="Dev queries sampled.", min=1)] = 500,
    dev_max_docs: Annotated[int, typer.Option(help="Dev corpus size (judged + random).", min=1)] = 5000,
    eval_every: Annotated[int, typer.Option(help="Evaluate dev nDCG@10 per dim every N steps (0: at the end).")] = 0,
    checkpoint_every: Annotated[int, typer.Option(help="Checkpoint every N steps (0: never).")] = 0,
    resume: Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --output.")] = False,
    keep_checkpoints: Annotated[bool, typer.Option(
        "--keep-checkpoints", help="Keep the checkpoints after the run finishes (default: removed).")] = False,
    device: Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")] = None,
) -> None:
    """Fine-tune a Sentence-Transformers / Hugging Face encoder with a Matryoshka InfoNCE loss."""
    from mrl.errors import MrlError
    from mrl.training.config import TrainConfig
    from mrl.training.loop import train

    dim_list = parse_ints(dims, "--dims")
    weight_list = parse_floats(weights, "--weights")
    if weight_list is not None and dim_list is None:
        raise MrlError("--weights needs --dims (one weight per dim)")
    if dim_list is not None:
        from mrl.prefix import check_dims

        check_dims(dim_list, weight_list, None)
    if temperature is not None:
        if not temperature > 0:
            raise MrlError(f"--temperature must be positive, got {temperature}")
        scale = 1.0 / temperature
    if data is None and parallel is None:
        raise MrlError("give --data (training pairs) and/or --parallel (translations)")
    if data is not None and not data.exists():
        raise MrlError(f"training data not found: {data}")
    parallel_files = tuple(p for p in parallel.split(",") if p) if parallel is not None else None
    for p in parallel_files or ():
        if not Path(p).is_file():
            raise MrlError(f"--parallel: file not found: {p}")
    if teacher is not None and "," not in teacher and not Path(teacher).exists() and (
            teacher.startswith((".", "/", "~")) or teacher.count("/") > 1):
        raise MrlError(f"--teacher: folder does not exist: {teacher}")
    if dev_data is not None and not dev_data.is_dir():
        raise MrlError(f"--dev-data must be a BEIR folder: {dev_data}")
    cfg = TrainConfig(
        model=model, data=str(data) if data is not None else None, output=str(output), split=split,
        dims=tuple(dim_list) if dim_list else None, weights=tuple(weight_list) if weight_list else None,
        scale=scale, distill_weight=distill_weight, distill_temperature=distill_temperature, distill=distill,
        teacher=teacher, teacher_view=teacher_view, teacher_cache=str(teacher_cache) if teacher_cache else None,
        parallel=parallel_files, parallel_limit=parallel_limit, head=head,
        head_lr=head_lr, freeze=tuple(p.strip() for p in (freeze or "").split(",") if p.strip()),
        batch_size=batch_size, lr=lr, warmup_ratio=warmup_ratio, weight_decay=weight_decay, epochs=epochs,
        max_steps=max_steps,
        max_seq_length=max_seq_length, seed=seed, group_by_length=group_by_length,
        dev_data=str(dev_data) if dev_data else None, dev_split=dev_split, dev_max_queries=dev_max_queries,
        dev_max_docs=dev_max_docs, eval_every=eval_every, checkpoint_every=checkpoint_every, resume=resume,
        remove_checkpoints=not keep_checkpoints,
        device=device,
    )
    summary = train(cfg)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports
    console.print(f"trained {summary['steps']} steps in {summary['train_time_s']:.0f}s "
                  f"({summary['pairs_per_s']:.1f} pairs/s); dims {summary['matryoshka_dims']}")
    if summary["final_dev_ndcg@10"]:
        scores = ", ".join(f"{d}: {v:.4f}" for d, v in summary["final_dev_ndcg@10"].items())
        console.print(f"dev nDCG@10 per dim: {scores}")
    console.print(f"model saved to [bold]{output}[/] (Sentence-Transformers format; see mrl.json)")
