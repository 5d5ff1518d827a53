"""mrl: Matryoshka embeddings, end to end.

``import mrl`` stays light: torch and sentence-transformers load only when a
training, encoding or evaluation function is first used.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from mrl.errors import MrlError
from mrl.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from mrl.prefix import truncate

__version__ = "0.1.0"

_LAZY = {
    "MatryoshkaInfoNCELoss": "mrl.losses.matryoshka",
    "TrainConfig": "mrl.training.config",
    "train": "mrl.training.loop",
    "evaluate": "mrl.eval.evaluate",
    "EvalReport": "mrl.eval.report",
    "load_model": "mrl.encoders.model",
    "encode": "mrl.encoders.model",
    "load_beir": "mrl.data.beir",
    "load_pairs": "mrl.data.pairs",
    "MrlIndex": "mrl.index.local",
    "parse_cascade": "mrl.index.cascade",
    "create_app": "mrl.serve.app",
    "ServeSettings": "mrl.serve.settings",
}

__all__ = ["MrlError", "truncate", "ndcg_at_k", "recall_at_k", "mrr_at_k", *_LAZY]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mrl' has no attribute {name!r}")
    return getattr(import_module(module), name)
