"""The one check of the ids given with vectors, for every backend."""

from __future__ import annotations

from typing import Any

import numpy as np

from mrl.errors import MrlError


def check_ids(ids: Any, n: int) -> np.ndarray:
    """``ids`` for ``n`` vectors as an array: int64 (non-negative) or str (non-empty), 1-D, unique.

    Raises:
        MrlError: naming the count, the repeated id, the negative or empty one, or the dtype.
    """
    values = np.asarray(list(ids) if not isinstance(ids, np.ndarray) else ids)
    if values.ndim != 1 or len(values) != n:
        raise MrlError(f"ids: {len(values) if values.ndim == 1 else values.shape} ids for {n} vectors")
    uniq, counts = np.unique(values, return_counts=True)
    if (counts > 1).any():
        raise MrlError(f"ids: {uniq[np.argmax(counts > 1)].item()!r} appears {counts.max()} times; ids must be unique")
    if np.issubdtype(values.dtype, np.integer):
        if (values < 0).any():
            raise MrlError(f"ids: {values[values < 0][0].item()} is negative; ids must be >= 0")
        return values.astype(np.int64)
    if values.dtype.kind != "U":
        raise MrlError(f"ids: expected integers or strings, got dtype {values.dtype}")
    if (values == "").any():
        raise MrlError("ids: an id is the empty string")
    return values
