"""Matryoshka InfoNCE: one encoder pass per batch, a contrastive loss at every nested prefix.

The encoder runs once per input column; every prefix is cut from those embeddings
(:func:`mrl.truncate`), so no model method is patched and the cost of extra dims is a few
small matrix products. Optionally each prefix is also distilled towards the full
dimension's in-batch score distribution (self-distillation), which keeps the short
prefixes ranking like the full vector.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mrl.errors import MrlError
from mrl.prefix import truncate


def default_dims(full_dim: int, smallest: int = 32) -> list[int]:
    """Powers of two from ``smallest`` up to ``full_dim``, plus ``full_dim`` itself."""
    dims = []
    d = smallest
    while d < full_dim:
        dims.append(d)
        d *= 2
    return [*dims, full_dim]


def validate_dims(
    dims: Sequence[int], weights: Sequence[float] | None, full_dim: int | None
) -> tuple[list[int], list[float]]:
    """Check dims/weights and return them sorted by dimension (ascending), weights aligned.

    Raises:
        MrlError: empty, non-positive, duplicated or too-large dims; weights of the wrong length
            or negative weights.
    """
    dims = list(dims)
    if not dims:
        raise MrlError("dims is empty: give at least one Matryoshka dimension")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, int) or d <= 0:
            raise MrlError(f"Matryoshka dim {d!r} is not a positive integer")
        if full_dim is not None and d > full_dim:
            raise MrlError(f"Matryoshka dim {d} is larger than the model dimension {full_dim}")
    duplicated = sorted({d for d in dims if dims.count(d) > 1})
    if duplicated:
        raise MrlError(f"Matryoshka dims are duplicated: {', '.join(map(str, duplicated))}")
    if weights is None:
        weights = [1.0] * len(dims)
    weights = [float(w) for w in weights]
    if len(weights) != len(dims):
        raise MrlError(f"{len(weights)} weights given for {len(dims)} dims: give one weight per dim")
    if any(not math.isfinite(w) for w in weights):
        raise MrlError(f"Matryoshka weights must be finite numbers, got {weights}")
    if any(w < 0 for w in weights):
        raise MrlError(f"Matryoshka weights must be non-negative, got {weights}")
    if sum(weights) == 0:
        raise MrlError(f"Matryoshka weights are all zero ({weights}): nothing would be trained")
    order = sorted(range(len(dims)), key=lambda i: dims[i])
    return [dims[i] for i in order], [weights[i] for i in order]


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
        self.dims, self.weights = validate_dims(dims, weights, full)
        if not scale > 0:
            raise MrlError(f"scale must be positive, got {scale}")
        if distill_weight < 0 or not distill_temperature > 0:
            raise MrlError(
                f"distill_weight must be >= 0 and distill_temperature > 0, "
                f"got {distill_weight} and {distill_temperature}"
            )
        self.model = model
        self.scale = float(scale)
        self.distill_weight = float(distill_weight)
        self.distill_temperature = float(distill_temperature)
        self.return_components = return_components
        #: Detached per-dim InfoNCE values of the last call, for logging: {dim: value}.
        self.last_losses: dict[int, float] = {}

    def forward(self, sentence_features: Iterable[dict[str, Tensor]], labels: Tensor | None = None) -> Any:
        # One encoder pass per column; every prefix below is cut from these embeddings.
        embeddings = [self.model(features)["sentence_embedding"] for features in sentence_features]
        return self.compute_loss_from_embeddings(embeddings, labels)

    def compute_loss_from_embeddings(self, embeddings: list[Tensor], labels: Tensor | None = None) -> Any:
        """The loss from full-dimension embeddings: ``[anchors (B, D), positives (B, D), negatives (B, D)...]``."""
        if len(embeddings) < 2:
            raise MrlError("the Matryoshka InfoNCE loss needs at least (anchor, positive) columns")
        anchors = embeddings[0]  # (B, D)
        candidates = torch.cat(embeddings[1:], dim=0)  # (B * (1 + n_neg), D)
        target = torch.arange(anchors.shape[0], device=anchors.device)
        logits = {
            d: self.scale * truncate(anchors, d) @ truncate(candidates, d).T  # (B, B * (1 + n_neg))
            for d in self.dims
        }
        terms: dict[str, Tensor] = {}
        for d, w in zip(self.dims, self.weights):
            terms[f"infonce_{d}"] = w * F.cross_entropy(logits[d], target)
        if self.distill_weight > 0 and len(self.dims) > 1:
            t = self.distill_temperature
            teacher = F.softmax(logits[self.dims[-1]].detach() / t, dim=-1)
            for d in self.dims[:-1]:
                student = F.log_softmax(logits[d] / t, dim=-1)
                kl = F.kl_div(student, teacher, reduction="batchmean") * t * t
                terms[f"distill_{d}"] = self.distill_weight * kl
        self.last_losses = {
            d: float(terms[f"infonce_{d}"].detach()) / w if w else 0.0 for d, w in zip(self.dims, self.weights)
        }
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
