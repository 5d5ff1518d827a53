"""Per-dimension retrieval evaluation: encode once, slice every prefix, search exactly, score."""

from __future__ import annotations

from mrl.eval.evaluate import evaluate, evaluate_embeddings
from mrl.eval.report import EvalReport

__all__ = ["EvalReport", "evaluate", "evaluate_embeddings"]
