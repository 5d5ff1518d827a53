"""Losses computed from embeddings: inner losses per prefix, and the Matryoshka wrapper around them."""

from __future__ import annotations

from mrl.losses.distill import DistillKL, DistillMSE
from mrl.losses.infonce import InfoNCE
from mrl.losses.matryoshka import MatryoshkaInfoNCELoss, MatryoshkaLoss, Term

__all__ = ["DistillKL", "DistillMSE", "InfoNCE", "MatryoshkaInfoNCELoss", "MatryoshkaLoss", "Term"]
