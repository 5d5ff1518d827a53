"""``mrl train``: fine-tune an encoder with a Matryoshka objective (InfoNCE, distillation, parallel data)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from mrl.cli.common import check_output, console, handle_errors, parse_floats, parse_ints

OutputOpt = Annotated[Path, typer.Option("--output", "-o", help="Where the trained model goes.")]
ModelOpt = Annotated[str, typer.Option("--model", "-m", envvar="MRL_MODEL",
                                       help="Base model: folder, 'minilm', 'multilingual-e5-small' or cached hub name."
                                       )]
DataOpt = Annotated[Path | None, typer.Option(help="BEIR folder (pairs from --split) or a pairs/triplets file "
                                                   "(.jsonl[.gz]/.csv/.parquet: anchor, positive[, negative...]).")
                    ]
SplitOpt = Annotated[str, typer.Option(help="Training split of a BEIR folder.")]
DimsOpt = Annotated[str | None, typer.Option(help="Matryoshka dims, e.g. 32,64,128,256,384 "
                                                  "(default: powers of two from 32 plus the full dim).")]
WeightsOpt = Annotated[str | None, typer.Option(help="One loss weight per dim, e.g. 2,1.5,1,1,1.")]
ScaleOpt = Annotated[float, typer.Option(help="InfoNCE logit scale = 1/temperature.")]
TemperatureOpt = Annotated[float | None, typer.Option(help="Alternative to --scale.")]
TeacherOpt = Annotated[str | None, typer.Option(help="Distil into every prefix from this Sentence-Transformers model, "
                                                     "or from `mrl encode` folder[,folder] of precomputed teacher "
                                                     "vectors keyed by the data's ids.")]
DistillOpt = Annotated[str | None, typer.Option(help="kl (in-batch similarity distributions) or mse (unit "
                                                     "vectors); default mse with --parallel, else kl.")]
DistillWeightOpt = Annotated[float | None, typer.Option(
        help="Weight of the distillation term (default 1 with --teacher/--parallel, else 0). Without a teacher: "
             "self-distillation from the full dim to each prefix.")]
DistillTemperatureOpt = Annotated[float, typer.Option(help="Temperature of the distillation softmax.")]
TeacherViewOpt = Annotated[str | None, typer.Option(
        help="prefix: each student prefix matches the teacher's prefix of the same width; full: the teacher's "
             "whole embedding (a teacher of another width; mse then learns a projection per dim).")]
TeacherCacheOpt = Annotated[Path | None, typer.Option(help="Cache of a teacher model's embeddings "
                                                            "(default: OUTPUT/teacher-cache).")]
ParallelOpt = Annotated[str | None, typer.Option(
        help="Parallel .jsonl[.gz] file[,file...] ('en'/'text' or 'source'/'target'): the student's embeddings of "
             "source and translation both learn the teacher's of the source (default teacher: --model).")]
ParallelLimitOpt = Annotated[int | None, typer.Option(help="At most this many records per parallel file "
                                                            "(a seeded sample).", min=1)]
XlingOpt = Annotated[str | None, typer.Option(
        help="Cross-lingual pairs, a stream of its own (InfoNCE): debian-xling <lang>.jsonl[.gz] file[,file...] "
             "or their folder (translated synopsis -> English description), or pairs files with "
             "anchor, positive and lang columns (.jsonl[.gz]/.csv).")]
XlingLangsOpt = Annotated[str | None, typer.Option(help="Languages of --xling to train on, e.g. de,fr,it "
                                                        "(default: every one found).")]
XlingLimitOpt = Annotated[int | None, typer.Option(help="At most this many --xling pairs per language "
                                                        "(a seeded sample).", min=1)]
XlingWeightOpt = Annotated[float, typer.Option(help="Weight of the --xling stream's loss.")]
HeadOpt = Annotated[str, typer.Option(help="'linear': add an identity-initialised linear layer after pooling; "
                                               "'orthogonal': the same layer kept a rotation.")
                    ]
HeadLrOpt = Annotated[float, typer.Option(help="Peak learning rate of the --head layer.")]
FreezeOpt = Annotated[str | None, typer.Option(
        help="Comma-separated parts that keep their weights: 'embeddings' (the token table; 96M of "
             "multilingual-e5-small's 117M parameters).")]
BatchSizeOpt = Annotated[int, typer.Option(help="Pairs per step.", min=2)]
LrOpt = Annotated[float, typer.Option(help="Peak learning rate.")]
WarmupRatioOpt = Annotated[float, typer.Option(help="Share of steps for linear warm-up.")]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay.")]
EpochsOpt = Annotated[int, typer.Option(help="Passes over the data (unless --max-steps).")]
MaxStepsOpt = Annotated[int | None, typer.Option(help="Stop after this many steps.")]
MaxSeqLengthOpt = Annotated[int, typer.Option(help="Token cap per text.")]
SeedOpt = Annotated[int, typer.Option(help="Random seed (batch order, dropout).")]
GroupByLengthOpt = Annotated[bool, typer.Option(help="Batch texts of similar length together.")]
DevDataOpt = Annotated[Path | None, typer.Option(help="BEIR folder evaluated during/after training.")]
DevSplitOpt = Annotated[str, typer.Option(help="Split of --dev-data.")]
DevMaxQueriesOpt = Annotated[int, typer.Option(help="Dev queries sampled.", min=1)]
DevMaxDocsOpt = Annotated[int, typer.Option(help="Dev corpus size (judged + random).", min=1)]
EvalEveryOpt = Annotated[int, typer.Option(help="Evaluate dev nDCG@10 per dim every N steps (0: at the end).")]
CheckpointEveryOpt = Annotated[int, typer.Option(help="Checkpoint every N steps (0: never).")]
ResumeOpt = Annotated[bool, typer.Option(help="Continue from the newest checkpoint in --output.")]
KeepCheckpointsOpt = Annotated[bool, typer.Option(
        "--keep-checkpoints", help="Keep the checkpoints after the run finishes (default: removed).")]
OverwriteOpt = Annotated[bool, typer.Option(help="Replace a model already at --output (else refused).")]
DeviceOpt = Annotated[str | None, typer.Option(help="cpu, cuda ... (default: cuda if present).")]


@handle_errors
def train_command(
    output: OutputOpt, model: ModelOpt = "minilm", data: DataOpt = None, split: SplitOpt = "train",
    dims: DimsOpt = None, weights: WeightsOpt = None, scale: ScaleOpt = 20.0, temperature: TemperatureOpt = None,
    teacher: TeacherOpt = None, distill: DistillOpt = None, distill_weight: DistillWeightOpt = None,
    distill_temperature: DistillTemperatureOpt = 1.0, teacher_view: TeacherViewOpt = None,
    teacher_cache: TeacherCacheOpt = None, parallel: ParallelOpt = None, parallel_limit: ParallelLimitOpt = None,
    xling: XlingOpt = None, xling_langs: XlingLangsOpt = None, xling_limit: XlingLimitOpt = None,
    xling_weight: XlingWeightOpt = 1.0,
    head: HeadOpt = "none", head_lr: HeadLrOpt = 1e-3, freeze: FreezeOpt = None, batch_size: BatchSizeOpt = 32,
    lr: LrOpt = 5e-5, warmup_ratio: WarmupRatioOpt = 0.1, weight_decay: WeightDecayOpt = 0.01, epochs: EpochsOpt = 1,
    max_steps: MaxStepsOpt = None, max_seq_length: MaxSeqLengthOpt = 128, seed: SeedOpt = 42,
    group_by_length: GroupByLengthOpt = True, dev_data: DevDataOpt = None, dev_split: DevSplitOpt = "dev",
    dev_max_queries: DevMaxQueriesOpt = 500, dev_max_docs: DevMaxDocsOpt = 5000, eval_every: EvalEveryOpt = 0,
    checkpoint_every: CheckpointEveryOpt = 0, resume: ResumeOpt = False,
    keep_checkpoints: KeepCheckpointsOpt = False, device: DeviceOpt = None, overwrite: OverwriteOpt = False,
) -> None:
    """Fine-tune a Sentence-Transformers / Hugging Face encoder with a Matryoshka InfoNCE loss."""
    from mrl.training.config import TrainConfig
    from mrl.training.loop import train

    dim_list, weight_list, scale = _check_dims(dims, weights, scale, temperature)
    parallel_files = _check_inputs(output, data, parallel, teacher, dev_data, resume, overwrite, xling)
    cfg = TrainConfig(
        model=model, data=str(data) if data is not None else None, output=str(output), split=split,
        dims=tuple(dim_list) if dim_list else None, weights=tuple(weight_list) if weight_list else None,
        scale=scale, distill_weight=distill_weight, distill_temperature=distill_temperature, distill=distill,
        teacher=teacher, teacher_view=teacher_view, teacher_cache=str(teacher_cache) if teacher_cache else None,
        parallel=parallel_files, parallel_limit=parallel_limit, xling=_split(xling), xling_langs=_split(xling_langs),
        xling_limit=xling_limit, xling_weight=xling_weight, head=head,
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


def _check_dims(dims: str | None, weights: str | None, scale: float, temperature: float | None
                ) -> tuple[list[int] | None, list[float] | None, float]:
    """The dims and weights (checked), and the InfoNCE scale (from --temperature when given)."""
    from mrl.errors import MrlError
    from mrl.prefix import check_dims

    dim_list = parse_ints(dims, "--dims")
    weight_list = parse_floats(weights, "--weights")
    if weight_list is not None and dim_list is None:
        raise MrlError("--weights needs --dims (one weight per dim)")
    if dim_list is not None:
        check_dims(dim_list, weight_list, None)
    if temperature is not None:
        if not temperature > 0:
            raise MrlError(f"--temperature must be positive, got {temperature}")
        scale = 1.0 / temperature
    return dim_list, weight_list, scale


def _split(value: str | None) -> tuple[str, ...] | None:
    """A comma-separated option as a tuple (``None`` when not given)."""
    return tuple(v.strip() for v in value.split(",") if v.strip()) if value is not None else None


def _check_inputs(output: Path, data: Path | None, parallel: str | None, teacher: str | None, dev_data: Path | None,
                  resume: bool, overwrite: bool, xling: str | None = None) -> tuple[str, ...] | None:
    """Every path checked before anything loads; the parallel files. A model already at ``output`` is
    replaced only with --overwrite (or continued with --resume), the rule of index build and adapt fit."""
    from mrl.errors import MrlError

    check_output(output, "folder", "--output")
    if (output / "mrl.json").exists() and not (overwrite or resume):
        raise MrlError(f"{output}: a trained model is already there (pass --overwrite to replace it)")
    if data is None and parallel is None and xling is None:
        raise MrlError("give --data (training pairs), --parallel (translations) and/or --xling (cross-lingual pairs)")
    if xling is not None:
        from mrl.data.xling_pairs import xling_files

        xling_files(list(_split(xling) or ()))  # each named file or folder exists
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
    return parallel_files
