"""Distillation on one prefix: the student's prefix is pulled towards a teacher's embedding.

Both losses receive unit-length vectors: the wrapper (:class:`mrl.losses.MatryoshkaLoss`)
renormalises the student's prefix *and* the teacher's side (its prefix of the same width, or
its full embedding; see ``teacher_view`` there), so a prefix is compared by direction only.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn.functional as F  # noqa: N812
from torch import Tensor, nn

from mrl.errors import MrlError
from mrl.losses.infonce import similarity_logits


class DistillMSE(nn.Module):
    """Mean squared L2 distance between the student's and the teacher's unit vectors (= 2 - 2 cos).

    Averaged over the rows of every column. With ``projections`` (student width -> teacher
    width, one learned linear map per Matryoshka dim) the student prefix is mapped into the
    teacher's space first and renormalised: that is how a teacher of another width teaches
    every prefix (the map is on the student side, so it cannot collapse the fixed teacher).

    Args:
        teacher_dim: the teacher's width, when a projection is wanted.
        dims: the Matryoshka dims the projections are made for.
    """

    uses_teacher = True

    def __init__(self, teacher_dim: int | None = None, dims: Sequence[int] = ()) -> None:
        super().__init__()
        self.projections = nn.ModuleDict()
        if teacher_dim is not None:
            for d in dims:
                self.projections[str(d)] = nn.Linear(d, teacher_dim, bias=False)

    def forward(self, student: list[Tensor], teacher: list[Tensor] | None, dim: int) -> Tensor:
        if teacher is None:
            raise MrlError("the MSE distillation loss needs teacher embeddings")
        if len(teacher) != len(student):
            raise MrlError(f"{len(teacher)} teacher columns for {len(student)} student columns")
        total = student[0].new_zeros(())
        for s, t in zip(student, teacher):
            if str(dim) in self.projections:
                s = F.normalize(self.projections[str(dim)](s), dim=-1)
            if s.shape != t.shape:
                raise MrlError(f"student prefix {tuple(s.shape)} and teacher {tuple(t.shape)} differ in shape: a "
                               "teacher of another width needs the projection (teacher_view='full')")
            total = total + (s - t.to(s.dtype)).pow(2).sum(dim=-1).mean()
        return total / len(student)


class DistillKL(nn.Module):
    """KL from the teacher's in-batch similarity distribution to the student's.

    For each anchor (column 0) a softmax over the batch's candidates (every other column),
    ``scale * cos / temperature`` on both sides, ``KL(teacher || student)`` averaged over the
    anchors and multiplied by ``temperature**2`` (Hinton et al.). Widths need not match: the
    teacher's similarities come from its own vectors.
    """

    uses_teacher = True

    def __init__(self, scale: float = 20.0, temperature: float = 1.0) -> None:
        super().__init__()
        if not scale > 0 or not temperature > 0:
            raise MrlError(f"the KL distillation needs scale > 0 and temperature > 0, got {scale} and {temperature}")
        self.scale, self.temperature = float(scale), float(temperature)

    def forward(self, student: list[Tensor], teacher: list[Tensor] | None, dim: int) -> Tensor:
        if teacher is None:
            raise MrlError("the KL distillation loss needs teacher embeddings")
        t = self.temperature
        target = F.softmax(similarity_logits([c.to(student[0].dtype) for c in teacher], self.scale) / t, dim=-1)
        log_student = F.log_softmax(similarity_logits(student, self.scale) / t, dim=-1)
        return F.kl_div(log_student, target, reduction="batchmean") * t * t
