"""Training configuration: one frozen dataclass, written as JSON beside every run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mrl.errors import MrlError


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a Matryoshka fine-tuning run.

    Attributes:
        model: base encoder (folder, ``minilm``, or a cached hub name).
        data: BEIR folder (its ``split`` gives the pairs) or a pairs/triplets file; may be ``None``
            when ``parallel`` is given.
        output: folder for the trained model, logs and checkpoints.
        dims: Matryoshka dims; ``None`` means powers of two from 32 plus the full dim.
        weights: one weight per dim; ``None`` means 1 each.
        scale: InfoNCE logit scale (1 / temperature).
        distill_weight: weight of the distillation term: from ``teacher`` (or, with ``parallel``, the
            starting model) when given, else self-distillation (full dim -> prefixes). ``None``:
            1 with a teacher or parallel data, else 0 (off).
        distill_temperature: temperature multiplier of the distillation softmax (``kl``).
        distill: ``"kl"`` (in-batch similarity distributions) or ``"mse"`` (unit vectors);
            ``None``: ``mse`` with parallel data, else ``kl``.
        teacher: a Sentence-Transformers model, or ``mrl encode`` folder[,folder] of precomputed
            teacher vectors keyed by the data's ids (see :mod:`mrl.training.teacher`).
        teacher_view: ``"prefix"`` or ``"full"`` (see :mod:`mrl.training.objective`); ``None`` picks.
        teacher_cache: where a teacher model's embeddings are cached (default ``output/teacher-cache``).
        parallel: ``.jsonl[.gz]`` files of source texts and translations (multilingual distillation).
        parallel_limit: keep a seeded random sample of at most this many records per parallel file.
        xling: cross-lingual pairs (a translated query, its English document): debian-xling files or
            their folder, or pairs files with a ``lang`` column (:mod:`mrl.data.xling_pairs`); a stream
            of its own with Matryoshka InfoNCE.
        xling_langs: the languages of ``xling`` trained on (``None``: every one found).
        xling_limit: keep a seeded sample of at most this many cross-lingual pairs per language.
        xling_weight: the weight of the cross-lingual stream's loss against the other streams'.
        head: ``"linear"`` adds an identity-initialised linear layer after pooling,
            ``"orthogonal"`` the same layer kept a rotation (see :mod:`mrl.encoders.head`);
            ``"none"`` trains the encoder as it is.
        head_lr: peak learning rate of that layer.
        freeze: parts that keep their weights: ``embeddings`` (the token table; a checkpoint then
            holds only what trains).
        batch_size: pairs per step (in-batch negatives come from the batch).
        lr: peak learning rate (AdamW, linear warm-up then linear decay).
        warmup_ratio: share of the steps spent warming up.
        weight_decay: AdamW weight decay.
        epochs: passes over the data when ``max_steps`` is not given.
        max_steps: stop after this many optimizer steps.
        max_seq_length: token cap per text.
        seed: seeds batch order, dropout and initialisation; a resumed run replays it exactly.
        group_by_length: batch texts of similar length together (less padding, faster steps).
        dev_data: BEIR folder for evaluation during and after training.
        dev_split: split of ``dev_data`` to evaluate.
        dev_max_queries: sample at most this many dev queries.
        dev_max_docs: dev corpus = the judged documents plus random others up to this size.
        eval_every: evaluate every N steps (0: only at the end).
        checkpoint_every: checkpoint every N steps (0: never).
        keep_checkpoints: how many checkpoints to keep.
        resume: continue from the newest checkpoint in ``output``.
        log_every: write the per-dim losses every N steps.
        device: ``cpu``/``cuda``; ``None`` picks CUDA when present (bf16 autocast there).
    """

    model: str
    data: str | None
    output: str
    split: str = "train"
    dims: tuple[int, ...] | None = None
    weights: tuple[float, ...] | None = None
    scale: float = 20.0
    distill_weight: float | None = None
    distill_temperature: float = 1.0
    distill: str | None = None
    teacher: str | None = None
    teacher_view: str | None = None
    teacher_cache: str | None = None
    parallel: tuple[str, ...] | None = None
    parallel_limit: int | None = None
    xling: tuple[str, ...] | None = None
    xling_langs: tuple[str, ...] | None = None
    xling_limit: int | None = None
    xling_weight: float = 1.0
    head: str = "none"
    head_lr: float = 1e-3
    freeze: tuple[str, ...] = ()
    batch_size: int = 32
    lr: float = 5e-5
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    epochs: int = 1
    max_steps: int | None = None
    max_seq_length: int = 128
    seed: int = 42
    group_by_length: bool = True
    dev_data: str | None = None
    dev_split: str = "dev"
    dev_max_queries: int = 500
    dev_max_docs: int = 5000
    eval_every: int = 0
    checkpoint_every: int = 0
    keep_checkpoints: int = 2  # the newest N are kept while the run goes
    remove_checkpoints: bool = True  # a run that finishes removes them (the saved model is what it produced)
    resume: bool = False
    log_every: int = 1
    device: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        checks = {
            "batch_size": self.batch_size >= 2,
            "lr": self.lr > 0,
            "epochs": self.epochs >= 1,
            "max_steps": self.max_steps is None or self.max_steps >= 1,
            "max_seq_length": self.max_seq_length >= 1,
            "warmup_ratio": 0 <= self.warmup_ratio < 1,
            "eval_every": self.eval_every >= 0,
            "checkpoint_every": self.checkpoint_every >= 0,
            "keep_checkpoints": self.keep_checkpoints >= 1,
            "scale": self.scale > 0,
            "head": self.head in ("none", "linear", "orthogonal"),
            "head_lr": self.head_lr > 0,
            "distill_weight": self.distill_weight is None or self.distill_weight >= 0,
            "distill_temperature": self.distill_temperature > 0,
            "distill": self.distill in (None, "kl", "mse"),
            "teacher_view": self.teacher_view in (None, "prefix", "full"),
            "parallel_limit": self.parallel_limit is None or self.parallel_limit >= 1,
            "xling_limit": self.xling_limit is None or self.xling_limit >= 1,
            "xling_weight": self.xling_weight > 0,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            name = bad[0]
            raise MrlError(f"invalid training option {name}={getattr(self, name)!r}")
        from mrl.training.freeze import check_parts

        check_parts(self.freeze)
        if self.data is None and not self.parallel and not self.xling:
            raise MrlError("training needs data: --data (pairs), --parallel (translations) and/or --xling "
                           "(cross-lingual pairs)")
        if self.device:
            from mrl.encoders.model import pick_device

            pick_device(self.device)  # names a missing GPU before anything loads

    @property
    def resolved_distill_weight(self) -> float:
        if self.distill_weight is not None:
            return float(self.distill_weight)
        return 1.0 if self.teacher or self.parallel else 0.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        # an empty freeze is None: older checkpoints resume
        for name in ("dims", "weights", "parallel", "freeze", "xling", "xling_langs"):
            d[name] = list(d[name]) if d[name] else None
        return d
