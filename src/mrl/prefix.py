"""The Matryoshka prefix, in one place: cut and renormalise, the ladder of dims, the dims check, exact top-k.

Every prefix cut in the package goes through :func:`truncate` (or :func:`unit_rows`, the same
renormalisation at the full width); every best-first selection through :func:`top_k`. Numpy
only at import; torch is touched when a tensor is given (and for the fast float16 cast).
"""

from __future__ import annotations

import math
import sys
import warnings
from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np

from mrl.errors import MrlError

ArrayT = TypeVar("ArrayT")
TINY = 1e-18  # a float32 norm below this (denormal squares) is recomputed in float64
CAST_MIN = 2048  # from this many float16 values the cast goes through torch when it is loaded


# ---------------------------------------------------------------------- dims
def default_dims(full_dim: int, smallest: int = 32) -> list[int]:
    """Powers of two from ``smallest`` up to ``full_dim``, plus ``full_dim`` itself."""
    dims = []
    d = smallest
    while d < full_dim:
        dims.append(d)
        d *= 2
    return [*dims, full_dim]


def check_dim(dim: Any, full_dim: int | None, what: str = "prefix dim") -> int:
    """``dim`` as an int in ``1..full_dim``; the one check of a single dimension."""
    if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)):
        raise MrlError(f"{what} must be an integer, got {dim!r}")
    if dim < 1 or (full_dim is not None and dim > full_dim):
        upper = f"{full_dim} (the embedding dimension)" if full_dim is not None else "any"
        raise MrlError(f"{what} {dim} is outside 1..{upper}")
    return int(dim)


def check_dims(
    dims: Sequence[int], weights: Sequence[float] | None, full_dim: int | None
) -> tuple[list[int], list[float]]:
    """Check Matryoshka dims (and their weights); return them sorted by dimension, weights aligned.

    Raises:
        MrlError: empty, non-positive, duplicated or too-large dims; weights of the wrong length,
            non-finite, negative or all zero.
    """
    dims = list(dims)
    if not dims:
        raise MrlError("dims is empty: give at least one Matryoshka dimension")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)) or d <= 0:
            raise MrlError(f"Matryoshka dim {d!r} is not a positive integer")
        if full_dim is not None and d > full_dim:
            raise MrlError(f"Matryoshka dim {d} is larger than the model dimension {full_dim}")
    duplicated = sorted({d for d in dims if dims.count(d) > 1})
    if duplicated:
        raise MrlError(f"Matryoshka dims are duplicated: {', '.join(map(str, duplicated))}")
    values = [1.0] * len(dims) if weights is None else [float(w) for w in weights]
    if len(values) != len(dims):
        raise MrlError(f"{len(values)} weights given for {len(dims)} dims: give one weight per dim")
    if any(not math.isfinite(w) for w in values):
        raise MrlError(f"Matryoshka weights must be finite numbers, got {values}")
    if any(w < 0 for w in values):
        raise MrlError(f"Matryoshka weights must be non-negative, got {values}")
    if sum(values) == 0:
        raise MrlError(f"Matryoshka weights are all zero ({values}): nothing would be trained")
    order = sorted(range(len(dims)), key=lambda i: dims[i])
    return [int(dims[i]) for i in order], [values[i] for i in order]


# ---------------------------------------------------------------------- cut and renormalise
def truncate(x: ArrayT, dim: int, normalize: bool = True) -> ArrayT:
    """Keep the first ``dim`` coordinates of each row and optionally L2-renormalise them.

    Works on numpy arrays (the result is float32, renormalised as :func:`unit_rows` does, so
    float64 rows beyond float32's range keep their direction) and torch tensors (``F.normalize``).

    Args:
        x: embeddings, shape ``(n, D)`` (or ``(D,)``).
        dim: prefix length, ``1 <= dim <= D``.
        normalize: renormalise each prefix to unit length (zero rows stay zero).
    """
    full = x.shape[-1]  # type: ignore[attr-defined]
    check_dim(dim, full)
    prefix = x[..., :dim]  # type: ignore[index]
    if not normalize:
        return prefix
    if isinstance(prefix, np.ndarray):
        return unit_rows(prefix[None])[0] if prefix.ndim == 1 else unit_rows(prefix)  # type: ignore[return-value]
    import torch.nn.functional as F  # noqa: N812  (torch only when a tensor is given)

    return F.normalize(prefix, p=2, dim=-1)  # type: ignore[return-value]  # a tensor in, a tensor out


def unit_rows(x: Any, dtype: Any = np.float32) -> np.ndarray:
    """Rows scaled to unit length (float32 by default; zero rows stay zero).

    Rows whose squares overflow float32 (values near 3.4e38, or float64 input beyond float32's
    range) or underflow it (denormals) are scaled in float64 first, so they keep their direction
    instead of becoming NaN or zero: normalise before any narrowing cast.
    """
    arr = np.asarray(x)
    if arr.dtype == np.float64 and dtype != np.float64:
        wide = _unit64(arr)
        return wide.astype(dtype)
    out = to_float32(arr) if dtype == np.float32 else np.asarray(arr, dtype)
    with np.errstate(over="ignore", under="ignore", invalid="ignore"):
        norms = np.sqrt(np.einsum("nd,nd->n", out, out))
    redo = ~np.isfinite(norms) | (norms < TINY)
    out = out / np.where(redo, 1.0, norms).astype(out.dtype)[:, None]
    if redo.any():
        out[redo] = _unit64(arr[redo]).astype(out.dtype)
    return out


def row_norms(x: np.ndarray) -> np.ndarray:
    """Euclidean norm of every row ``(n,)`` in ``x``'s dtype (inf where the squares overflow it)."""
    return np.sqrt(np.einsum("nd,nd->n", x, x))


def _unit64(x: np.ndarray) -> np.ndarray:
    """float64 unit rows; rows beyond float64's own range are scaled by their largest value first."""
    wide = np.asarray(x, np.float64)
    peak = np.abs(wide).max(axis=1, keepdims=True) if wide.size else np.ones((len(wide), 1))
    wide = wide / np.where(np.isfinite(peak) & (peak > 0), peak, 1.0)
    norms = np.linalg.norm(wide, axis=1, keepdims=True)
    return wide / np.where(norms > 0, norms, 1.0)


def to_float32(x: np.ndarray) -> np.ndarray:
    """float32 copy or view of ``x``; float16 goes through torch, ~20x faster than numpy's cast here."""
    if x.dtype == np.float32:
        return np.asarray(x)
    return cast_into(x, np.empty(x.shape, np.float32))


def cast_into(x: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Write ``x`` as float32 into ``out`` (same shape) and return ``out``; float16 through torch."""
    if x.dtype == np.float16 and x.size >= CAST_MIN:
        torch = _torch()
        if torch is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)  # a read-only memmap: torch only reads it
                src = torch.from_numpy(x)
            torch.from_numpy(out).copy_(src)
            return out
    np.copyto(out, x, casting="unsafe")
    return out


def _torch() -> Any:
    """torch if this process already imported it (its float16 cast is faster on big blocks here), else None:
    the index never imports torch itself, so a service with the ONNX encoder stays torch-free."""
    return sys.modules.get("torch")


# ---------------------------------------------------------------------- top-k
def top_k(scores: np.ndarray, rows: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Best ``n`` per query of candidates ``(nq, c)``, best first; pads with (-inf, -1) when short.

    The one tie rule: ``argpartition`` keeps the ``n`` best, then they are ordered by score,
    equal scores by lower row first. Rows without a finite score become -1.
    """
    nq, c = scores.shape
    if c < n:
        scores = np.concatenate([scores, np.full((nq, n - c), -np.inf, np.float32)], 1)
        rows = np.concatenate([rows, np.full((nq, n - c), -1, np.int64)], 1)
        c = n
    if c > n:
        part = np.argpartition(-scores, n - 1, axis=1)[:, :n]
        scores, rows = np.take_along_axis(scores, part, 1), np.take_along_axis(rows, part, 1)
    order = np.lexsort((rows, -scores), axis=1)  # score descending, then row ascending
    scores, rows = np.take_along_axis(scores, order, 1), np.take_along_axis(rows, order, 1)
    rows = np.where(np.isfinite(scores), rows, -1)
    return scores.astype(np.float32), rows.astype(np.int64)


def exact_top_k(xq: np.ndarray, xb: np.ndarray, k: int, block: int = 1024) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` by inner product of ``xq`` ``(nq, d)`` against ``xb`` ``(nb, d)``, in query blocks.

    Returns ``(scores, ids)``, float32 and int64, ``(nq, k)``, best first (:func:`top_k`'s tie
    rule); slots beyond ``nb`` get ``-inf`` and ``-1``.
    """
    nq, nb = xq.shape[0], xb.shape[0]
    scores = np.full((nq, k), -np.inf, dtype=np.float32)
    ids = np.full((nq, k), -1, dtype=np.int64)
    for start in range(0, nq, block):
        s = np.asarray(xq[start : start + block] @ xb.T, np.float32)  # (b, nb)
        rows = np.broadcast_to(np.arange(nb, dtype=np.int64), s.shape)
        scores[start : start + block], ids[start : start + block] = top_k(s, rows, k)
    return scores, ids
