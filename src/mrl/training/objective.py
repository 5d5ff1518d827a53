"""The training objective, built from the config: which terms apply to which batch, and the teacher.

- Training pairs (``--data``): InfoNCE at every Matryoshka dim (the dim weights), plus either
  self-distillation (``--distill-weight`` without a teacher: the full dim's detached in-batch
  score distribution teaches each smaller prefix) or distillation from ``--teacher``.
- Parallel sentences (``--parallel``): the student's embedding of the source and of its
  translation are both pulled to the teacher's embedding of the source, at every prefix
  (Reimers & Gurevych, 2020). The default teacher is the starting model (a frozen copy, whose
  embeddings are computed once); then the pairs get InfoNCE only.

How the teacher side is cut (``--teacher-view``): ``prefix`` compares a student prefix with the
teacher's prefix of the same width, renormalised (for a Matryoshka teacher such as the starting
model); ``full`` with the teacher's whole embedding (any teacher: a KL on similarities needs no
equal width, an MSE maps the student prefix into the teacher's width with a learned linear map
per dim). Default: ``prefix`` for MSE with a teacher of the student's width, else ``full``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from mrl.data.pairs import Pairs
from mrl.data.parallel import Parallel
from mrl.data.xling_pairs import CrossLingualPairs
from mrl.errors import MrlError
from mrl.losses import DistillKL, DistillMSE, InfoNCE, MatryoshkaLoss, Term
from mrl.prefix import check_dims, default_dims
from mrl.training import teacher as teachers
from mrl.training.config import TrainConfig
from mrl.training.streams import PARALLEL_KIND, BatchPlan, Stream, pair_kinds

if TYPE_CHECKING:
    from mrl.encoders.model import TextKind


@dataclass
class Objective:
    """The streams of one step (each with its loss), and the teacher whose vectors some of them need."""

    dims: list[int]
    weights: list[float]
    streams: list[Stream]
    teacher: teachers.Teacher | None

    def modules(self) -> nn.ModuleDict:
        """The learned parts of the losses (projections), for the optimizer and the checkpoint."""
        return nn.ModuleDict({s.name: s.loss for s in self.streams})

    def _rows(self, keys: Sequence[str], idx: Sequence[int], device: Any) -> Tensor:
        assert self.teacher is not None
        return torch.from_numpy(self.teacher.lookup([keys[i] for i in idx])).to(device)

    def __call__(self, batches: Sequence[tuple[list[Tensor], Sequence[int]]]) -> Tensor:
        """The summed loss; ``batches`` holds, per stream, its columns' embeddings and the batch's global rows."""
        total: Tensor | None = None
        for stream, (embeddings, idx) in zip(self.streams, batches):
            teacher = None
            if stream.loss.needs_teacher:
                assert stream.teacher_keys is not None
                teacher = [self._rows(keys, idx, embeddings[0].device) for keys in stream.teacher_keys]
            value = stream.loss(embeddings, teacher)
            total = value if total is None else total + value
        if total is None:
            raise MrlError("the step had no batch to train on")
        return total

    def logs(self) -> dict[str, Any]:
        """``dim_loss`` (InfoNCE per dim, as before) and every term per dim, unweighted."""
        terms: dict[str, dict[str, float]] = {}
        for stream in self.streams:
            for name, values in stream.loss.last_terms.items():
                terms[stream.log_prefix + name] = {str(d): round(v, 6) for d, v in values.items()}
        return {"dim_loss": terms.get("infonce", {}), "terms": terms}

    def short(self) -> dict[int, float]:
        """The per-dim values shown on the progress bar: the first stream's first term."""
        for stream in self.streams:
            if stream.loss.last_terms:
                return next(iter(stream.loss.last_terms.values()))
        return {}


def distill_kind(cfg: TrainConfig) -> str:
    return cfg.distill or ("mse" if cfg.parallel else "kl")


def build_objective(cfg: TrainConfig, full_dim: int, pairs: Pairs | None, parallel: Parallel | None,
                    lengths: Callable[[Sequence[str]], list[int]], device: str | None = None,
                    say: Callable[[str], None] | None = None,
                    barrier: Callable[[], None] | None = None, xling: CrossLingualPairs | None = None) -> Objective:
    """The objective ``cfg`` asks for; a teacher model encodes what it must (once, cached) here.

    ``lengths`` gives the token length of texts, which the streams' batch plans group by.
    """
    dims, weights = check_dims(list(cfg.dims) if cfg.dims else default_dims(full_dim),
                                  list(cfg.weights) if cfg.weights else None, full_dim)
    kind = distill_kind(cfg)
    weight = cfg.resolved_distill_weight
    spec = cfg.teacher or (cfg.model if parallel is not None else None)
    teacher, pair_keys, parallel_keys = None, None, None
    if spec is not None:
        teacher, pair_keys, parallel_keys = _load_teacher(spec, cfg, pairs, parallel, device, say, barrier)
    elif kind == "mse" and weight > 0:
        raise MrlError("--distill mse needs --teacher: the student's own full dimension can only teach its "
                       "prefixes through similarities (--distill kl)")
    term = _teacher_term(cfg, kind, weight, teacher, dims, full_dim) if teacher is not None else None
    plan_args = (cfg.batch_size, cfg.seed, cfg.epochs, cfg.max_steps, cfg.group_by_length)
    streams: list[Stream] = []
    if pairs is not None:
        terms = [Term("infonce", InfoNCE(cfg.scale))]
        if term is not None and parallel is None:
            terms.append(term)
        elif teacher is None and weight > 0 and len(dims) > 1:
            terms.append(Term("distill", DistillKL(cfg.scale, cfg.distill_temperature), weight,
                              dim_weights=dict.fromkeys(dims[:-1], 1.0), teacher="self", teacher_view="full"))
        columns = (pairs.anchors, pairs.positives, *pairs.negatives)
        streams.append(Stream("pairs", columns, pair_kinds(len(columns)),
                              BatchPlan(pairs.keys, lengths(pairs.positives), *plan_args, str(cfg.data)),
                              MatryoshkaLoss(terms, dims, weights, full_dim),
                              tuple(pair_keys) if pair_keys else None))
    if parallel is not None and term is not None:
        assert parallel_keys is not None
        # both sides are pulled to the teacher's embedding of the source
        streams.append(Stream("parallel", (parallel.sources, parallel.targets), (PARALLEL_KIND, PARALLEL_KIND),
                              BatchPlan(parallel.sources, lengths(parallel.targets), *plan_args, "--parallel",
                                        offset=1_000_003),
                              MatryoshkaLoss([term], dims, weights, full_dim), (parallel_keys, parallel_keys),
                              log_prefix="parallel_"))
    if xling is not None:
        streams.append(_xling_stream(cfg, xling, dims, weights, full_dim, lengths, plan_args))
    return Objective(dims, weights, streams, teacher)


def _xling_stream(cfg: TrainConfig, xling: CrossLingualPairs, dims: list[int], weights: list[float],
                  full_dim: int, lengths: Callable[[Sequence[str]], list[int]],
                  plan_args: tuple[int, int, int, int | None, bool]) -> Stream:
    """Translated queries against their English documents: InfoNCE at every prefix, weighted ``xling_weight``."""
    loss = MatryoshkaLoss([Term("infonce", InfoNCE(cfg.scale), cfg.xling_weight)], dims, weights, full_dim)
    return Stream("xling", (xling.queries, xling.documents), pair_kinds(2),
                  BatchPlan(xling.keys, lengths(xling.documents), *plan_args, "--xling", offset=2_000_003),
                  loss, log_prefix="xling_")


def _teacher_term(cfg: TrainConfig, kind: str, weight: float, teacher: Any, dims: list[int], full_dim: int) -> Term:
    """The distillation term from a given teacher: KL of in-batch similarities, or MSE of the vectors
    (with learned projections when the teacher is viewed whole and has another width)."""
    view = cfg.teacher_view or ("prefix" if kind == "mse" and teacher.dim == full_dim else "full")
    if view == "prefix" and teacher.dim < dims[-1]:
        raise MrlError(f"--teacher-view prefix: the teacher is {teacher.dim}-dimensional, narrower than the "
                       f"largest Matryoshka dim {dims[-1]}; use --teacher-view full")
    loss: nn.Module
    if kind == "kl":
        loss = DistillKL(cfg.scale, cfg.distill_temperature)
    else:
        loss = DistillMSE(teacher.dim if view == "full" else None, [d for d in dims if d != teacher.dim])
    return Term(kind, loss, weight, dim_weights=dict.fromkeys(dims, 1.0), teacher="given", teacher_view=view)


def _load_teacher(spec: str, cfg: TrainConfig, pairs: Pairs | None, parallel: Parallel | None,
                  device: str | None, say: Callable[[str], None] | None,
                  barrier: Callable[[], None] | None) -> tuple[teachers.Teacher, Any, Any]:
    distil_pairs = pairs is not None and parallel is None  # with --parallel the teacher teaches the parallel data
    if teachers.is_embeddings_folder(spec):
        needed: dict[str, Sequence[str | None]] = {}
        if distil_pairs:
            assert pairs is not None
            ids = pairs.column_ids or tuple([None] * len(pairs)  # type: ignore[list-item]  # no ids: each None
                                            for _ in range(2 + len(pairs.negatives)))
            for name, column in zip(["anchor", "positive", *[f"negative {i + 1}" for i in range(99)]], ids):
                needed[f"{name} ids of {cfg.data}"] = column
        if parallel is not None:
            needed["source ids of --parallel"] = parallel.ids
        teacher = teachers.from_folders(spec, needed)
        pair_keys = [list(c) for c in pairs.column_ids] if distil_pairs and pairs and pairs.column_ids else None
        parallel_keys = list(parallel.ids) if parallel is not None else None
        return teacher, pair_keys, parallel_keys
    if Path(spec).exists() and not Path(spec).is_dir():
        raise MrlError(f"--teacher {spec}: a file, not a model folder or an `mrl encode` folder")
    columns: list[Sequence[str]] = []
    if distil_pairs:
        assert pairs is not None
        columns = [pairs.anchors, pairs.positives, *pairs.negatives]
    # as the student reads them (see the streams below): each text with its kind's prompt
    kinds = pair_kinds(len(columns))
    texts: dict[TextKind, list[str]] = {"query": [], "document": []}
    for column_texts, kind in zip(columns, kinds):
        texts[kind] += list(column_texts)
    texts[PARALLEL_KIND] += list(parallel.sources) if parallel is not None else []
    cache = Path(cfg.teacher_cache) if cfg.teacher_cache else Path(cfg.output) / "teacher-cache"
    teacher = teachers.from_model(spec, texts, cache, device, say, barrier)
    pair_keys = [[teachers.text_key(t, k) for t in c] for c, k in zip(columns, kinds)] if columns else None
    parallel_keys = [teachers.text_key(t, PARALLEL_KIND) for t in parallel.sources] if parallel is not None else None
    return teacher, pair_keys, parallel_keys
