"""What the backends described by a ``meta`` dict (Qdrant, Postgres) answer the same way from it."""

from __future__ import annotations

from typing import Any

from mrl.errors import MrlError
from mrl.index.cascade import Cascade, FirstStageSpec, parse_cascade, resolve_plan


class Described:
    """Reads of a backend whose description is ``self.meta`` (``generation``, ``model``,
    ``default_cascade``, ``first_stages``) with ``self.dim``, ``self.specs``, a ``count`` and a
    ``_check_cascade`` of its own."""

    meta: dict[str, Any]
    dim: int
    specs: list[FirstStageSpec]

    @property
    def count(self) -> int:
        raise NotImplementedError

    def _check_cascade(self, plan: Cascade) -> Cascade:
        raise NotImplementedError

    @property
    def generation(self) -> int:
        return int(self.meta["generation"])

    @property
    def model(self) -> str | None:
        return self.meta.get("model")

    @property
    def default_cascade(self) -> Cascade:
        return parse_cascade(self.meta["default_cascade"], self.dim)

    @property
    def first_stages(self) -> list[FirstStageSpec]:
        return list(self.specs)

    def __len__(self) -> int:
        return self.count

    def _spec(self, kind_name: str | None, d: int) -> FirstStageSpec:
        """The first stage a cascade starting at ``kind_name@d`` uses; the error lists what there is."""
        for spec in self.specs:
            if spec.dim == d and (kind_name is None or spec.kind == kind_name):
                return spec
        have = ", ".join(map(str, self.specs))
        raise MrlError(f"the index has no {kind_name or 'first stage'}@{d} (it has: {have}); rebuild with it")

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        """The checked cascade a search with ``k`` runs, shortlists clamped to the live count."""
        return self._check_cascade(resolve_plan(cascade, k, self.default_cascade, self.dim, self.count))
