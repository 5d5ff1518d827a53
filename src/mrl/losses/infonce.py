"""InfoNCE on one prefix: in-batch (and hard) negatives, as ``MultipleNegativesRankingLoss``."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mrl.errors import MrlError


def similarity_logits(columns: list[Tensor], scale: float) -> Tensor:
    """``scale * anchors @ candidates.T``: anchors are column 0, candidates every other column stacked.

    Shape ``(B, B * (n_columns - 1))``; for anchor ``i`` the positive is candidate ``i``.
    """
    if len(columns) < 2:
        raise MrlError("an in-batch similarity needs at least (anchor, positive) columns")
    return scale * columns[0] @ torch.cat(columns[1:], dim=0).T


class InfoNCE(nn.Module):
    """Cross-entropy of each anchor over the batch's positives and hard negatives.

    Called by :class:`mrl.losses.MatryoshkaLoss` with the unit-length prefixes of every column;
    the teacher is not used.
    """

    uses_teacher = False

    def __init__(self, scale: float = 20.0) -> None:
        super().__init__()
        if not scale > 0:
            raise MrlError(f"scale must be positive, got {scale}")
        self.scale = float(scale)

    def forward(self, student: list[Tensor], teacher: list[Tensor] | None, dim: int) -> Tensor:
        logits = similarity_logits(student, self.scale)
        target = torch.arange(logits.shape[0], device=logits.device)
        return F.cross_entropy(logits, target)
