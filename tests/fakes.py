"""A numpy fake backend for the tests: :class:`NumpyIndex` is a :class:`~mrl.index.Searcher`, a
:class:`~mrl.index.Writer` and a :class:`~mrl.index.Tunable` in plain numpy, independent of the
library's funnel and storage, so a test can tell a backend's defect from the contract's.

Every first stage is an exact scan of its prefix (the fake has one: the default cascade's);
later stages rescore the shortlist on longer prefixes. Like :class:`~mrl.index.MrlIndex` it is
a snapshot: a write returns a new index and leaves the old object as it was (its ``refresh()``
returns the newest).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mrl.errors import MrlError
from mrl.index import Cascade, FirstStageSpec, SearchResult, parse_cascade
from mrl.index.cascade import check_k, resolve_plan
from mrl.index.filters import check_types, evaluate, parse_filter, payload_types
from mrl.index.ids import check_ids
from mrl.index.payloads import check_payloads
from mrl.prefix import check_dim, truncate, unit_rows
from mrl.vectors import check_vectors


class NumpyIndex:
    """Exact scans in numpy over unit rows; int ids (default ``0..n-1``) or string ids."""

    adaptor = None
    model = None
    supports_gates = False  # it runs no gate (like Qdrant): tune's grid, not ``--adaptive``

    def __init__(self, xb: Any, ids: Any = None, cascade: str = "exact@8:50,16:10", payloads: Any = None) -> None:
        xb = check_vectors(xb, None, "vectors", scan=True)
        self.payloads = check_payloads(payloads, len(xb))
        self.dim = xb.shape[1]
        self._cascade = parse_cascade(cascade, self.dim)
        if self._cascade.kind not in (None, "exact"):
            raise MrlError(f"cascade {cascade}: the numpy fake has exact first stages only")
        self.xb = unit_rows(xb)
        self.generation = 1
        self.tuning: dict[str, Any] | None = None  # the record set_default_cascade was given
        self._head = [self]  # shared by every snapshot of this index: the newest one
        if ids is None:
            self.id_kind, self._ids, self._keys = "int", np.arange(len(xb), dtype=np.int64), None
        else:
            values = check_ids(ids, len(xb))
            if values.dtype.kind == "U":
                self.id_kind, self._ids, self._keys = "str", np.arange(len(xb), dtype=np.int64), values.astype(object)
            else:
                self.id_kind, self._ids, self._keys = "int", values, None

    # ------------------------------------------------------------------ reads
    count = property(lambda self: len(self.xb))
    default_cascade = property(lambda self: self._cascade)
    first_stages = property(lambda self: [FirstStageSpec("exact", self._cascade.first[0])])

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        plan = resolve_plan(cascade, k, self._cascade, self.dim, self.count)
        if plan.gated:
            raise MrlError(f"cascade {plan}: the numpy fake runs no gate")
        if plan.width is not None:
            raise MrlError(f"cascade {plan}: an exact first stage has no search width")
        if plan.kind not in (None, "exact"):  # an exact scan runs on any prefix, as on MrlIndex
            raise MrlError(f"the index has no {plan.kind}@{plan.first[0]} first stage (it has: {self.first_stages[0]})")
        return plan

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        xq = np.atleast_2d(xq) if np.ndim(xq) == 1 else xq
        return np.asarray(check_vectors(xq, self.dim, "queries", owner="the index's", empty=True, scan=True),
                          np.float32)

    def _top(self, xq: np.ndarray, d: int, n: int, rows: np.ndarray | None = None,
             allowed: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Best ``n`` rows per query on the ``d``-prefix, among ``rows`` ``(nq, c)`` and ``allowed`` when given."""
        s = truncate(xq, d) @ truncate(self.xb, d).T  # (nq, N)
        if allowed is not None:
            s[:, ~allowed] = -np.inf
        if rows is not None:
            keep = np.full(s.shape, -np.inf, np.float32)
            np.put_along_axis(keep, rows, 0.0, axis=1)
            s = s + keep
        order = np.argsort(-s, axis=1, kind="stable")[:, :n]
        return np.take_along_axis(s, order, 1).astype(np.float32), order.astype(np.int64)

    def search(self, xq: Any, k: int = 10, cascade: str | Cascade | None = None, *, adapted: bool = False,
               work: Any = None, filter: Any = None) -> SearchResult:
        xq = self.prepare_queries(xq)
        plan = self.plan(cascade, k)
        f = parse_filter(filter)
        allowed = None
        if f is not None:
            check_types(f, payload_types(self.payloads) or None, "the numpy fake")
            allowed = evaluate(f, self.payloads)
        scores, rows = self._top(xq, *plan.first, allowed=allowed)
        for d, n in plan.stages[1:]:
            scores, rows = self._top(xq, d, n, rows, allowed)
        scores, rows = scores[:, :k], rows[:, :k]
        missing = ~np.isfinite(scores)
        return SearchResult(np.where(missing, -np.inf, scores).astype(np.float32),
                            np.where(missing, -1, self._ids[rows]))

    def exact_search(self, xq: Any, k: int = 10, dim: int | None = None, *, adapted: bool = False) -> SearchResult:
        xq = self.prepare_queries(xq)
        check_k(k, self.count)
        scores, rows = self._top(xq, check_dim(dim, self.dim, "dim") if dim is not None else self.dim, k)
        return SearchResult(scores, self._ids[rows])

    def keys(self, ids: Any) -> list[list[str | None]]:
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self._keys is None:
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        by_id = dict(zip(self._ids.tolist(), self._keys.tolist()))
        return [[by_id.get(i) if i >= 0 else None for i in row] for row in ids.tolist()]

    def stats(self) -> dict[str, Any]:
        return {"count": self.count, "dim": self.dim, "model": None, "id_kind": self.id_kind,
                "generation": self.generation, "default_cascade": str(self._cascade), "segments": 1,
                "deleted_rows": 0,
                "first_stages": {str(s): {"bytes_per_vector": 4.0 * s.dim} for s in self.first_stages}}

    def refresh(self) -> NumpyIndex:
        return self._head[0]

    def check_adaptor(self, adaptor: Any) -> None:
        if adaptor is not None:
            raise MrlError("the numpy fake has no adaptor")

    # ------------------------------------------------------------------ Tunable
    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        rows = np.sort(np.random.default_rng(seed).choice(self.count, size=min(n, self.count), replace=False))
        return self.xb[rows]

    def max_width(self, spec: FirstStageSpec) -> int:
        return 0

    def first_stage_scores(self, xq: np.ndarray, plan: Cascade, width: int | None = None) -> np.ndarray:
        plan = self.plan(plan.ungated, 1)
        return self._top(self.prepare_queries(xq), *plan.first)[0]

    def search_gated(self, xq: np.ndarray, k: int, plan: Cascade, gate: Any, chosen: np.ndarray | None = None,
                     work: Any = None) -> SearchResult:
        raise MrlError("the numpy fake runs no gate")

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Any = None) -> NumpyIndex:
        if gate is not None:
            raise MrlError("the numpy fake runs no gate")
        plan = parse_cascade(str(cascade), self.dim)
        self.plan(plan, 1)  # checked as a search would check it
        return self._next(cascade=plan, tuning=tuning)

    # ------------------------------------------------------------------ Writer
    def add(self, vectors: Any, ids: Any, payloads: Any = None) -> NumpyIndex:
        """Upsert: new ids are appended, existing ones replaced in place (with their payload)."""
        vectors = unit_rows(check_vectors(vectors, self.dim, "vectors", owner="the index's", scan=True))
        values = check_ids(ids, len(vectors))
        given = check_payloads(payloads, len(vectors))
        if (values.dtype.kind == "U") != (self.id_kind == "str"):
            raise MrlError(f"this index uses {'string' if self.id_kind == 'str' else 'integer'} ids")
        xb, all_ids = self.xb.copy(), self._ids.copy()
        keys = None if self._keys is None else self._keys.copy()
        where = {v: r for r, v in enumerate((keys if keys is not None else all_ids).tolist())}
        new_rows, new_ids, new_keys = [], [], []
        stored = list(self.payloads)
        next_id = int(all_ids.max()) + 1
        for v, x, p in zip(values.tolist(), vectors, given):
            if v in where:
                xb[where[v]] = x
                stored[where[v]] = p
            else:
                stored.append(p)
                new_rows.append(x)
                new_keys.append(v)
                new_ids.append(next_id if keys is not None else v)
                next_id += keys is not None
        if new_rows:
            xb = np.concatenate([xb, np.stack(new_rows)])
            all_ids = np.concatenate([all_ids, np.asarray(new_ids, np.int64)])
            if keys is not None:
                keys = np.concatenate([keys, np.asarray(new_keys, object)])
        return self._next(xb=xb, ids=all_ids, keys=keys, payloads=stored)

    def delete(self, ids: Any) -> NumpyIndex:
        values = list(ids)
        if not values:
            raise MrlError("delete: no ids given")
        check_ids(values, len(values))
        have = (self._keys if self._keys is not None else self._ids).tolist()
        where = {v: r for r, v in enumerate(have)}
        missing = [v for v in values if (str(v) if self._keys is not None else v) not in where]
        if missing:
            raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")
        gone = {where[v] for v in values}
        if len(gone) >= self.count:
            raise MrlError(f"delete: removing all {self.count} vectors would leave an empty index")
        keep = np.setdiff1d(np.arange(self.count), sorted(gone))
        return self._next(xb=self.xb[keep], ids=self._ids[keep],
                          keys=None if self._keys is None else self._keys[keep],
                          payloads=[self.payloads[r] for r in keep.tolist()])

    def compact(self) -> NumpyIndex:
        return self._next()  # nothing to merge: deleted rows are gone at once

    def verify(self) -> list[str]:
        problems = []
        if len(np.unique(self._ids)) != len(self._ids):
            problems.append("ids are not unique")
        if not np.isfinite(self.xb).all():
            problems.append("a stored vector is not finite")
        return problems

    def _next(self, xb: np.ndarray | None = None, ids: np.ndarray | None = None, keys: Any = "same",
              cascade: Cascade | None = None, tuning: dict[str, Any] | None = None,
              payloads: list[Any] | None = None) -> NumpyIndex:
        """A new snapshot one generation on (``self`` untouched)."""
        out = object.__new__(NumpyIndex)
        out.__dict__.update(self.__dict__)
        out.xb = self.xb if xb is None else xb
        out._ids = self._ids if ids is None else ids
        out._keys = self._keys if isinstance(keys, str) else keys
        out.payloads = self.payloads if payloads is None else payloads
        out._cascade = cascade or self._cascade
        out.tuning = tuning if tuning is not None else self.tuning
        out.generation = self.generation + 1
        self._head[0] = out
        return out
