"""The one check of the ids given with vectors, for every backend."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mrl.errors import MrlError

MAX_ID_LENGTH = 256  # characters of a string id: keys are stored as fixed-width arrays per segment
INT64_MAX = 2**63 - 1


def check_ids(ids: Any, n: int) -> np.ndarray:
    """``ids`` for ``n`` vectors as an array: int64 (0 .. 2^63 - 1) or str (non-empty, at most
    ``MAX_ID_LENGTH`` characters, valid UTF-8 without control characters), 1-D, unique.

    Raises:
        MrlError: naming the count, the repeated id, the negative, too large, empty, too long or
            unencodable one, or the dtype.
    """
    if not isinstance(ids, np.ndarray):
        ids = list(ids)
        _check_strings([v for v in ids if isinstance(v, str)])  # before numpy drops a trailing NUL
    values = np.asarray(ids)
    if values.dtype.kind == "u" and len(values) and int(values.max()) > INT64_MAX:
        raise MrlError(f"ids: {int(values.max())} does not fit in a signed 64-bit id (at most {INT64_MAX})")
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
    _check_strings(values.tolist())
    if (values == "").any():
        raise MrlError("ids: an id is the empty string")
    return values


def _check_strings(values: list[str]) -> None:
    for v in values:
        if len(v) > MAX_ID_LENGTH:
            raise MrlError(f"ids: {v[:40]!r}... is {len(v)} characters long; ids have at most {MAX_ID_LENGTH}")
        if any(ord(c) < 32 or ord(c) == 127 for c in v):
            raise MrlError(f"ids: {v!r} holds a control character (NUL, tab, newline ...); ids are printable text")
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            raise MrlError(f"ids: {v!r} is not valid text (a lone surrogate); ids must be UTF-8") from None


class IdMap:
    """A snapshot's ids: int64 ids (and string keys) of its global rows, and the lookups between them."""

    def __init__(self, ids: np.ndarray, dead: np.ndarray, id_kind: str, keys: Callable[[], np.ndarray]) -> None:
        self.ids, self.dead, self.id_kind = ids, dead, id_kind
        self._keys = keys  # every row's string key, built on first use (string-id indexes)
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None

    def row_ids(self, rows: np.ndarray) -> np.ndarray:
        """The ids of global rows (-1 stays -1)."""
        return np.where(rows >= 0, self.ids[np.maximum(rows, 0)], -1).astype(np.int64)

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        """The user-facing id of every int64 id in ``ids`` ``(nq, k)`` (``None`` for -1)."""
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self.id_kind == "int":
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        sorted_ids, order = self._id_lookup()
        keys = self._keys()
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == ids
        return [[str(keys[order[p]]) if f and i >= 0 else None for p, f, i in zip(prow, frow, irow)]
                for prow, frow, irow in zip(pos, found, ids)]

    def _id_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Live ids sorted, and the global row of each."""
        if self._by_id is None:
            live = np.flatnonzero(~self.dead)
            order = live[np.argsort(self.ids[live], kind="stable")]
            self._by_id = (self.ids[order], order)
        return self._by_id

    def live_rows_of(self, ids: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
        """Global rows of the live entries with these ids (string index: these keys); -1 if absent."""
        if keys is not None:
            all_keys = self._keys()
            live = np.flatnonzero(~self.dead)
            order = live[np.argsort(all_keys[live], kind="stable")]
            sorted_values, wanted = all_keys[order], keys
        else:
            sorted_values, order = self._id_lookup()
            wanted = ids
        if not len(order):
            return np.full(len(wanted), -1, np.int64)
        pos = np.clip(np.searchsorted(sorted_values, wanted), 0, len(order) - 1)
        return np.where(sorted_values[pos] == wanted, order[pos], -1)

    def assign(self, ids: Any, n: int, next_id: int) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, int]:
        """For an upsert of ``n`` vectors: ``(int64 ids, string keys or None, rows they replace (-1: new),
        next free int id)``; an upserted string id keeps its int64 id."""
        int_ids, keys, _, _ = assign_ids(ids, n, self.id_kind, next_id)
        old_rows = self.live_rows_of(int_ids, keys)
        if keys is None:
            return int_ids, None, old_rows, max(next_id, int(int_ids.max()) + 1)
        fresh = old_rows < 0
        int_ids = np.where(fresh, 0, self.ids[np.maximum(old_rows, 0)])
        int_ids[fresh] = next_id + np.arange(int(fresh.sum()))
        return int_ids, keys, old_rows, next_id + int(fresh.sum())


def assign_ids(ids: Any, n: int, id_kind: str | None, next_id: int
               ) -> tuple[np.ndarray, np.ndarray | None, str, int]:
    """(int64 ids, string keys or None, id kind, next free int id) for ``n`` new vectors."""
    if ids is None:
        if id_kind == "str":
            raise MrlError("this index uses string ids; pass ids")
        return np.arange(next_id, next_id + n, dtype=np.int64), None, "int", next_id + n
    values = check_ids(ids, n)
    if values.dtype.kind != "U":
        if id_kind == "str":
            raise MrlError("this index uses string ids; pass strings, not integers")
        return values, None, "int", max(next_id, int(values.max()) + 1)
    if id_kind == "int":
        raise MrlError(f"this index uses integer ids; {values[0].item()!r} is a string")
    return np.arange(next_id, next_id + n, dtype=np.int64), values, "str", next_id + n
