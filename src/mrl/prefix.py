"""The one place a Matryoshka prefix is cut."""

from __future__ import annotations

from typing import TypeVar

import numpy as np

ArrayT = TypeVar("ArrayT")


def truncate(x: ArrayT, dim: int, normalize: bool = True) -> ArrayT:
    """Keep the first ``dim`` coordinates of each row and optionally L2-renormalise them.

    Works on numpy arrays and torch tensors alike (torch is only touched when given one).

    Args:
        x: embeddings, shape ``(n, D)`` (or ``(D,)``).
        dim: prefix length, ``1 <= dim <= D``.
        normalize: renormalise each prefix to unit length (zero rows stay zero).

    Returns:
        The prefix, shape ``(n, dim)``, same type and dtype as ``x``.
    """
    full = x.shape[-1]  # type: ignore[attr-defined]
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise TypeError(f"prefix dim must be an int, got {dim!r}")
    if not 1 <= dim <= full:
        raise ValueError(f"prefix dim {dim} is outside 1..{full} (the embedding dimension)")
    prefix = x[..., :dim]  # type: ignore[index]
    if not normalize:
        return prefix
    if isinstance(prefix, np.ndarray):
        norms = np.linalg.norm(prefix, axis=-1, keepdims=True)
        return prefix / np.maximum(norms, 1e-12).astype(prefix.dtype)
    import torch.nn.functional as F  # noqa: N812  (torch only when a tensor is given)

    return F.normalize(prefix, p=2, dim=-1)
