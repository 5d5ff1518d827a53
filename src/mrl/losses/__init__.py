"""Contrastive losses computed from embeddings, and the Matryoshka wrapper."""

from __future__ import annotations

from mrl.losses.matryoshka import MatryoshkaInfoNCELoss, default_dims, validate_dims

__all__ = ["MatryoshkaInfoNCELoss", "default_dims", "validate_dims"]
