"""The one check of an input matrix of vectors, shared by the index and the adaptors."""

from __future__ import annotations

from typing import Any

import numpy as np

from mrl.errors import MrlError

BLOCK = 65_536  # rows per block when scanning


def check_vectors(x: Any, dim: int | None, what: str, *, owner: str = "the expected", empty: bool = False,
                  scan: bool = False) -> np.ndarray:
    """``x`` as an array after checking it: 2-D, numeric, at least one column, ``dim`` columns when
    given (the error names ``owner``'s dimension), rows unless ``empty``; with ``scan``, also every
    row finite and non-zero (a zero vector has no direction), read in blocks (memmaps stay lazy).

    Raises:
        MrlError: naming ``what`` and, for a bad row, its index.
    """
    arr = x if isinstance(x, np.ndarray) else np.asarray(x)
    if arr.ndim != 2:
        raise MrlError(f"{what}: expected a 2-D array (n, dim), got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise MrlError(f"{what}: expected numbers, got dtype {arr.dtype}")
    if arr.shape[1] == 0:
        raise MrlError(f"{what}: vectors have 0 dimensions")
    if dim is not None and arr.shape[1] != dim:
        raise MrlError(f"{what}: dimension {arr.shape[1]} does not match {owner} dimension {dim}")
    if len(arr) == 0 and not empty:
        raise MrlError(f"{what}: no rows (shape {arr.shape})")
    if scan:
        for start in range(0, len(arr), BLOCK):
            check_rows(np.asarray(arr[start : start + BLOCK]), start, what)
    return arr


def check_rows(block: np.ndarray, offset: int = 0, what: str = "vectors") -> None:
    """NaN/Inf and all-zero rows (no direction) are errors naming the row."""
    bad = ~np.isfinite(block).all(axis=1)
    if bad.any():
        raise MrlError(f"{what}: row {offset + int(np.argmax(bad))} holds NaN or Inf")
    zero = ~block.any(axis=1)
    if zero.any():
        raise MrlError(f"{what}: row {offset + int(np.argmax(zero))} is all zeros (it has no direction)")
