"""``--freeze``: parts of the model that keep their weights during training.

``embeddings`` is the token table (the input word embeddings): for multilingual-e5-small 96M of
its 117M parameters, whose Adam state alone would be 0.77 GB and whose dense update is slow.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from mrl.errors import MrlError

PARTS = {"embeddings": "the token table (input word embeddings)"}


def check_parts(parts: Sequence[str]) -> None:
    """Refuse a part name that ``--freeze`` does not know, naming it."""
    for part in parts:
        if part not in PARTS:
            raise MrlError(f"--freeze {part!r}: not a part that can be frozen (choose from: {', '.join(PARTS)})")


def freeze(model: Any, parts: Sequence[str], model_name: str) -> frozenset[str]:
    """Stop the gradient of ``parts`` of a Sentence-Transformers model; return the frozen parameters' names."""
    check_parts(parts)
    for part in parts:
        if part == "embeddings":
            backbone = getattr(model[0], "auto_model", None) if len(model) else None
            table = backbone.get_input_embeddings() if backbone is not None else None
            if table is None or not hasattr(table, "weight"):
                raise MrlError(f"--freeze embeddings: {model_name} has no token table (its first module has no "
                               "input embeddings)")
            table.weight.requires_grad_(False)
    return frozenset(name for name, p in model.named_parameters() if not p.requires_grad)
