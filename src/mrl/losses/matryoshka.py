"""The Matryoshka wrapper: cut every prefix once, apply inner losses per prefix, weight and sum.

:class:`MatryoshkaLoss` works on embeddings, not on a model: it cuts each column's prefix with
:func:`mrl.truncate` (renormalised), cuts the teacher's side the same way, and calls each
:class:`Term`'s inner loss (:class:`~mrl.losses.InfoNCE`, :class:`~mrl.losses.DistillMSE`,
:class:`~mrl.losses.DistillKL`, or any module with that call signature) at every dim.
:class:`MatryoshkaInfoNCELoss` is the convenience that encodes the columns with a model first;
it equals sentence-transformers' ``MatryoshkaLoss(MultipleNegativesRankingLoss)`` and never
patches the model.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mrl.errors import MrlError
from mrl.losses.distill import DistillKL
from mrl.losses.infonce import InfoNCE
from mrl.prefix import check_dims, default_dims, truncate


@dataclass
class Term:
    """One inner loss of a :class:`MatryoshkaLoss`.

    Attributes:
        name: the label of its logs and components (``infonce``, ``mse``, ``kl`` ...).
        loss: a module called as ``loss(student_columns, teacher_columns, dim)`` with unit vectors.
        weight: multiplies the term at every dim.
        dim_weights: the term's own ``{dim: weight}``; its keys are the dims it applies to. ``None``:
            the wrapper's dims and weights.
        teacher: ``"given"`` (the teacher embeddings passed to the call), ``"self"`` (the student's
            own full-dimension embeddings, detached: self-distillation) or ``"none"``.
        teacher_view: ``"prefix"`` compares with the teacher's prefix of the same width,
            renormalised (a Matryoshka teacher, or the starting model); ``"full"`` with the
            teacher's whole embedding, renormalised (any teacher, of any width).
    """

    name: str
    loss: nn.Module
    weight: float = 1.0
    dim_weights: Mapping[int, float] | None = None
    teacher: str = "none"
    teacher_view: str = "prefix"

    def __post_init__(self) -> None:
        if self.teacher not in ("given", "self", "none"):
            raise MrlError(f"term {self.name}: teacher must be 'given', 'self' or 'none', got {self.teacher!r}")
        if self.teacher_view not in ("prefix", "full"):
            raise MrlError(f"term {self.name}: teacher_view must be 'prefix' or 'full', got {self.teacher_view!r}")
        if not (math.isfinite(self.weight) and self.weight >= 0):
            raise MrlError(f"term {self.name}: weight must be a finite number >= 0, got {self.weight}")


class MatryoshkaLoss(nn.Module):
    """Weighted sum over Matryoshka dims and terms of ``term.loss`` on renormalised prefixes.

    ``loss = sum_term term.weight * sum_d w_term(d) * term.loss(student[:d], teacher_view(d), d)``

    Args:
        terms: the inner losses.
        dims: Matryoshka dimensions (ascending after validation).
        weights: one weight per dim for terms without their own ``dim_weights`` (default 1 each).
        full_dim: the student's width, checked against ``dims`` when known.

    After each call, :attr:`last_terms` holds the unweighted value of every term at every dim.
    """

    def __init__(self, terms: Sequence[Term], dims: Sequence[int], weights: Sequence[float] | None = None,
                 full_dim: int | None = None) -> None:
        super().__init__()
        if not terms:
            raise MrlError("a Matryoshka loss needs at least one term")
        names = [t.name for t in terms]
        if len(set(names)) != len(names):
            raise MrlError(f"term names must differ, got {names}")
        self.dims, self.weights = check_dims(dims, weights, full_dim)
        self.terms = list(terms)
        self.inner = nn.ModuleList(t.loss for t in terms)  # registers learned parts (projections)
        self.plan: list[tuple[Term, dict[int, float]]] = []
        for t in terms:
            own = dict(zip(self.dims, self.weights)) if t.dim_weights is None else dict(t.dim_weights)
            unknown = sorted(set(own) - set(self.dims))
            if unknown:
                raise MrlError(f"term {t.name}: dims {unknown} are not among the Matryoshka dims {self.dims}")
            self.plan.append((t, own))
        #: Unweighted value of every term at every dim, from the last call: ``{name: {dim: value}}``.
        self.last_terms: dict[str, dict[int, float]] = {}

    @property
    def needs_teacher(self) -> bool:
        return any(t.teacher == "given" for t in self.terms)

    def components(self, student: list[Tensor], teacher: list[Tensor] | None = None) -> dict[str, Tensor]:
        """Every weighted term, ``{f"{name}_{dim}": value}``; the loss is their sum."""
        if not student:
            raise MrlError("the Matryoshka loss got no embeddings")
        if self.needs_teacher and teacher is None:
            raise MrlError("this Matryoshka loss distils from a teacher, but no teacher embeddings were given")
        cut = {d: [truncate(c, d) for c in student] for d in self.dims}
        sources = {"given": teacher, "self": [c.detach() for c in student], "none": None}
        views: dict[tuple[str, str, int], list[Tensor] | None] = {}
        out: dict[str, Tensor] = {}
        self.last_terms = {}
        for term, dim_weights in self.plan:
            values = self.last_terms.setdefault(term.name, {})
            for d, w in dim_weights.items():
                key = (term.teacher, term.teacher_view, d if term.teacher_view == "prefix" else 0)
                if key not in views:
                    views[key] = _teacher_view(sources[term.teacher], term.teacher_view, d)
                value = term.loss(cut[d], views[key], d)
                values[d] = float(value.detach())
                out[f"{term.name}_{d}"] = term.weight * w * value
        return out

    def forward(self, student: list[Tensor], teacher: list[Tensor] | None = None) -> Tensor:
        return torch.stack(list(self.components(student, teacher).values())).sum()


def _teacher_view(columns: list[Tensor] | None, view: str, dim: int) -> list[Tensor] | None:
    if columns is None:
        return None
    if view == "full":
        return [F.normalize(c, dim=-1) for c in columns]
    width = columns[0].shape[-1]
    if dim > width:
        raise MrlError(f"the teacher is {width}-dimensional, so it has no {dim}-dim prefix to distil into "
                       f"the student's; compare with its full embedding instead (teacher_view='full')")
    return [truncate(c, dim) for c in columns]


class MatryoshkaInfoNCELoss(nn.Module):
    """InfoNCE with in-batch (and hard) negatives at every Matryoshka dimension, weighted and summed.

    Inputs are ``(anchor, positive[, negative_1, ...])`` columns, as for
    ``MultipleNegativesRankingLoss``: for anchor i the positive i is the target among all
    positives and hard negatives of the batch. Configured with the same dims, weights and
    scale, its value equals ``MatryoshkaLoss(model, MultipleNegativesRankingLoss(model), dims,
    weights)``; unlike that wrapper it never patches ``model.forward``.

    Args:
        model: a ``SentenceTransformer`` (anything mapping features to ``sentence_embedding``).
        dims: Matryoshka dimensions (default: powers of two from 32 plus the full dim).
        weights: one weight per dim (default 1 each).
        scale: logit scale, ``1 / temperature`` (20 = temperature 0.05).
        distill_weight: weight of the self-distillation term: KL from the full dimension's
            (detached) in-batch score distribution to each smaller prefix's. 0 turns it off.
        distill_temperature: softmax temperature multiplier for that term.
        return_components: return a dict of per-dim terms instead of their sum, so that
            ``SentenceTransformerTrainer`` logs each dimension's loss.
    """

    def __init__(
        self,
        model: nn.Module,
        dims: Sequence[int] | None = None,
        weights: Sequence[float] | None = None,
        scale: float = 20.0,
        distill_weight: float = 0.0,
        distill_temperature: float = 1.0,
        return_components: bool = False,
    ) -> None:
        super().__init__()
        full = _model_dim(model)
        if dims is None:
            if full is None:
                raise MrlError("dims must be given when the model dimension is unknown")
            dims = default_dims(full)
        dims, weights = check_dims(dims, weights, full)
        if distill_weight < 0 or not distill_temperature > 0:
            raise MrlError(
                f"distill_weight must be >= 0 and distill_temperature > 0, "
                f"got {distill_weight} and {distill_temperature}"
            )
        terms = [Term("infonce", InfoNCE(scale))]
        if distill_weight > 0 and len(dims) > 1:  # the full dim would distil into itself: left out
            terms.append(Term("distill", DistillKL(scale, distill_temperature), distill_weight,
                              dim_weights=dict.fromkeys(dims[:-1], 1.0), teacher="self", teacher_view="full"))
        self.model = model
        self.matryoshka = MatryoshkaLoss(terms, dims, weights, full)
        self.dims, self.weights = self.matryoshka.dims, self.matryoshka.weights
        self.scale = float(scale)
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.return_components = return_components

    @property
    def last_losses(self) -> dict[int, float]:
        """Unweighted per-dim InfoNCE values of the last call, for logging: ``{dim: value}``."""
        return dict(self.matryoshka.last_terms.get("infonce", {}))

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Any:
        # One encoder pass per column; every prefix below is cut from these embeddings.
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Any:
        """The loss from full-dimension embeddings: ``[anchors (B, D), positives (B, D), negatives (B, D)...]``."""
        if len(embeddings) < 2:
            raise MrlError("the Matryoshka InfoNCE loss needs at least (anchor, positive) columns")
        terms = self.matryoshka.components(embeddings)
        if self.return_components:
            return terms
        return torch.stack(list(terms.values())).sum()

    def get_config_dict(self) -> dict[str, Any]:
        return {
            "dims": self.dims,
            "weights": self.weights,
            "scale": self.scale,
            "distill_weight": self.distill_weight,
            "distill_temperature": self.distill_temperature,
        }


def _model_dim(model: nn.Module) -> int | None:
    for name in ("get_embedding_dimension", "get_sentence_embedding_dimension"):
        getter = getattr(model, name, None)
        if getter is not None:
            dim = getter()
            return int(dim) if dim is not None else None
    return None
