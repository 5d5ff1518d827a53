"""An optional linear head between pooling and normalisation.

Initialised to the identity, so training starts from the base model exactly; trained with
its own (higher) learning rate it can rotate information into the leading coordinates much
faster than the encoder's layers move. It is a plain Sentence-Transformers ``Dense`` module:
the saved folder still loads with ``SentenceTransformer(path, truncate_dim=...)``.

``orthogonal=True`` keeps the layer a rotation during training (torch's ``orthogonal``
parametrisation). A rotation leaves every full-dimension cosine unchanged, so the head can
only serve the prefixes: the full-dimension loss does not see it at all.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer


def add_linear_head(
    model: SentenceTransformer, orthogonal: bool = False
) -> tuple[SentenceTransformer, list[nn.Parameter]]:
    """Insert an identity-initialised ``Dense(D, D)`` before a trailing ``Normalize`` (or at the end).

    With ``orthogonal`` the weight stays orthogonal while training; call :func:`fix_head`
    before saving so the folder holds a plain weight matrix.

    Returns:
        The new model and the head's parameters (for their own optimizer group).
    """
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    from mrl.encoders.model import embedding_dim

    dim = embedding_dim(model)
    modules = list(model)
    head = Dense(dim, dim, bias=False, activation_function=nn.Identity(), init_weight=torch.eye(dim))
    if orthogonal:
        # the identity is orthogonal, so the parametrisation starts exactly there
        nn.utils.parametrizations.orthogonal(head.linear, "weight")
    at = len(modules) - 1 if modules and isinstance(modules[-1], Normalize) else len(modules)
    modules.insert(at, head)
    # the prompts (e5's query: / passage:) belong to the model, so the new one keeps them
    prompts = {k: v for k, v in model.prompts.items() if v is not None}
    new = SentenceTransformer(modules=modules, device=str(model.device), prompts=prompts,
                              default_prompt_name=model.default_prompt_name)
    new.max_seq_length = model.max_seq_length
    return new, list(head.parameters())


def fix_head(model: SentenceTransformer) -> None:
    """Replace an orthogonal parametrisation by its current plain weight (in place), for saving."""
    from torch.nn.utils import parametrize

    for module in model.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
