"""``MrlIndex``: full vectors stored once, searched through a funnel of prefixes.

>>> index = MrlIndex.build("idx", xb, ids, first_stages=["int8@64"])
>>> scores, ids = index.search(xq, k=10, cascade="int8@64:1000,128:100,384:10")

Vectors are unit-normalised on the way in and scored by cosine similarity at every prefix
(each prefix renormalised, the Matryoshka convention). An ``MrlIndex`` object is a read-only
snapshot of one committed manifest; ``add``, ``delete``, ``compact`` and ``set_default_cascade``
commit a new manifest atomically and return the new snapshot. The pieces: :mod:`.manifest`
(what is committed), :mod:`.segments` (the rows and every scan over them), :mod:`.ids` (ids
and keys), :mod:`.funnel` (the stage loop), :mod:`.local_build` (a new index).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl._fs import disk_bytes
from mrl.adapt.base import Adaptor
from mrl.errors import MrlError
from mrl.index import storage
from mrl.index.base import SearchResult
from mrl.index.cascade import Cascade, FirstStageSpec, check_k, parse_cascade, resolve_plan
from mrl.index.filters import Filter, check_types, parse_filter
from mrl.index.first_stages import structures
from mrl.index.first_stages.kinds import NAMES, WIDTH_KINDS, kind
from mrl.index.funnel import FirstStage, Rescore, run_cascade
from mrl.index.gate import Gate
from mrl.index.ids import IdMap
from mrl.index.manifest import Manifest
from mrl.index.segments import LiveRows, SegmentSet
from mrl.index.work import Work
from mrl.prefix import check_dim
from mrl.vectors import check_vectors

CANDIDATE_BUDGET = 1 << 21  # first-stage candidates held at once per search (x 12 bytes, plus faiss's heaps)
# a filter letting through at most this many rows (or this share of them) is searched by an exact scan
# of those rows; above it, faiss's selector inside the first stage, widened until the shortlist fills
EXACT_ALLOWED, EXACT_SHARE = 2048, 0.02
WIDEN = 4  # each widening multiplies the search width (efSearch, lists probed) by this


class MrlIndex:
    first_stage_kinds = NAMES  # every kind: the faiss structures
    supports_gates = True

    def __init__(self, root: Path, manifest: Manifest, stamp: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.dim: int = manifest.dim
        self.specs = manifest.specs
        self.rows = SegmentSet.load(self.root, manifest)
        self.ids = IdMap(self.rows.ids, self.rows.dead, manifest.id_kind, self.rows.keys)
        # which manifest file this snapshot came from (for refresh); open() takes it before reading
        self._stamp = stamp if stamp is not None else storage.stamp(self.root)
        entry = manifest.adaptor
        #: The adaptor every incoming vector goes through (``None``: vectors are stored as given).
        self.adaptor: Adaptor | None = Adaptor.load(self.root / entry["path"]) if entry else None
        gate = manifest.gate
        #: The fitted gate of ``...@gate`` cascades (``mrl index tune --adaptive``), or ``None``.
        self.gate: Gate | None = Gate.load(self.root / gate["path"]) if gate else None

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(cls, path: str | Path) -> MrlIndex:
        """The index's current snapshot, with every file it needs pinned (see :class:`~.segment.Segment`).

        Raises:
            MrlError: no index there, a damaged or edited manifest, a missing file or an altered adaptor.
        """
        root = Path(path)
        for _ in range(5):  # a writer may commit (and collect the old files) between reading and pinning
            stamp = storage.stamp(root)
            manifest = storage.read_manifest(root)
            missing = storage.missing_files(root, manifest)
            if not missing:
                try:
                    return cls(root, manifest, stamp)
                except FileNotFoundError as e:
                    missing = [str(e.filename)]
            if storage.generation(root) == manifest.generation:
                raise MrlError(f"{root}: {missing[0]} is missing; the index is damaged "
                               "(`mrl index verify` lists every problem)")
        raise MrlError(f"{root}: the index changed five times while it was being opened; try again")

    @classmethod
    def build(cls, path: str | Path, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray | None = None,
              **options: Any) -> MrlIndex:
        """Write a new index at ``path`` from ``vectors`` ``(n, D)``; see :func:`mrl.index.local_build.build`."""
        from mrl.index.local_build import build

        root, manifest = build(path, vectors, ids, **options)
        return cls(root, manifest)

    # ------------------------------------------------------------------ properties
    @property
    def count(self) -> int:
        """Live vectors (deleted and superseded ones excluded)."""
        return self.manifest.count

    @property
    def default_cascade(self) -> Cascade:
        return parse_cascade(self.manifest.default_cascade, self.dim)

    @property
    def generation(self) -> int:
        return self.manifest.generation

    @property
    def model(self) -> str | None:
        return self.manifest.model

    @property
    def first_stages(self) -> list[FirstStageSpec]:
        return list(self.specs)

    def max_width(self, spec: FirstStageSpec) -> int:
        return self.rows.max_width(spec)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        return self.rows.sample(n, seed)

    def refresh(self) -> MrlIndex:
        """The newest committed snapshot: ``self`` while the manifest file is the one opened."""
        return self if storage.stamp(self.root) == self._stamp else MrlIndex.open(self.root)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"MrlIndex({str(self.root)!r}, count={self.count}, dim={self.dim}, "
                f"first_stages={list(self.manifest.first_stages)}, cascade={self.manifest.default_cascade!r})")

    # ------------------------------------------------------------------ search
    def search(self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *, adapted: bool = False,
               work: Work | None = None, filter: Any = None) -> SearchResult:
        """Search with a cascade (the index's default when ``None``).

        Queries are vectors of the model the index was built from; an index with an adaptor applies
        it to them first (``adapted=True``: they already went through it, e.g. stored vectors).
        ``work`` collects what every stage did per query (:mod:`mrl.index.work`).

        Returns:
            :class:`SearchResult` ``(scores, ids)``, float32 and int64, shape ``(nq, k)``; id -1
            (score -inf) where the cascade found fewer than ``k`` hits. Scores are cosine similarities at the last
            stage's prefix (for a one-stage binary cascade, ``d - 2 * hamming``).

        ``filter`` (:mod:`mrl.index.filters`): only rows whose payload it lets through. Their
        allow-list goes into the first stage (a faiss id selector; an exact scan of them when they
        are few) and rescoring; a shortlist the selector leaves short is searched again wider, then
        exactly, so ``k`` hits come back whenever ``k`` rows match. A gated cascade runs ungated.
        An index that stores no payloads refuses a filter, by name.
        """
        f = parse_filter(filter)
        if f is not None:
            return self._search_filtered(self.prepare_queries(xq, adapted), k, cascade, f, work)
        plan = self.plan(cascade, k)
        return self._run(self.prepare_queries(xq, adapted), k, plan, self.gate_for(plan) if plan.gated else None,
                         None, work)

    def search_gated(self, xq: np.ndarray, k: int, plan: Cascade, gate: Gate, chosen: np.ndarray | None = None,
                     work: Work | None = None) -> SearchResult:
        """``plan`` with ``gate`` (not the stored one: tuning times a gate before it is committed);
        ``chosen``: a level index per query instead of the gate's choice. Queries are in the stored space."""
        return self._run(self.prepare_queries(xq, adapted=True), k, self.plan(plan.ungated, k), gate, chosen, work)

    def first_stage_scores(self, xq: np.ndarray, plan: Cascade, width: int | None = None) -> np.ndarray:
        """The first stage's scores ``(nq, n1)`` of ``plan`` at ``width`` (default: the plan's), best first."""
        plan = self.plan(plan.ungated, 1)
        return self._first_stage(plan)(self.prepare_queries(xq, adapted=True), width or plan.width, 0, None)[0]

    def _search_filtered(self, xq: np.ndarray, k: int, cascade: str | Cascade | None, f: Filter,
                         work: Work | None) -> SearchResult:
        check_types(f, self.rows.payload_types() if self.rows.has_payloads else None, str(self.root))
        allowed = self.rows.allowed(f)
        plan = self.plan(cascade, k).ungated
        rows = self.rows

        def rescore(q: np.ndarray, r: np.ndarray, d: int) -> np.ndarray:
            return np.where(allowed[np.maximum(r, 0)] & (r >= 0), rows.rescore(q, r, d), -np.inf)

        return self._run(xq, k, plan, None, None, work, self._filtered_first_stage(plan, allowed), rescore)

    def _filtered_first_stage(self, plan: Cascade, allowed: np.ndarray) -> FirstStage:
        """The plan's first stage over the ``allowed`` rows only (see :meth:`search`)."""
        (d, n), spec = plan.first, self._spec(plan.kind, plan.first[0], plan.width)
        chosen = np.flatnonzero(allowed)
        few = len(chosen) <= max(n, EXACT_ALLOWED, EXACT_SHARE * self.rows.rows)
        wide = self.max_width(spec) if spec is not None and kind(spec.kind).inverted else self.rows.rows

        def first(q: np.ndarray, width: int | None, skip: int, work: Work | None) -> tuple[np.ndarray, np.ndarray]:
            if spec is None or few or skip:
                if work is not None:
                    per_query = np.full(len(q), float(len(chosen)))
                    work.record(0, f"exact@{d}", d, per_query, per_query * d * self.rows.itemsize)
                return self.rows.exact_rows(q, d, n, chosen)
            s, r = self.rows.first_stage(spec, q, n, width, work, 0, allowed)
            short = (r >= 0).sum(axis=1) < min(n, len(chosen))
            w = width or (n if kind(spec.kind).graph else structures.MIN_PROBE)
            while short.any() and kind(spec.kind).width and 0 < w < wide:  # widen: more lists, a longer beam
                w = min(w * WIDEN, wide)
                s[short], r[short] = self.rows.first_stage(spec, q[short], n, w, None, 0, allowed)
                short[short] = (r[short] >= 0).sum(axis=1) < min(n, len(chosen))
            if short.any():  # what the structure could not find: an exact scan of the allowed rows
                s[short], r[short] = self.rows.exact_rows(q[short], d, n, chosen)
            return s, r

        return first

    def _run(self, xq: np.ndarray, k: int, plan: Cascade, gate: Gate | None, chosen: np.ndarray | None,
             work: Work | None, first: FirstStage | None = None, rescore: Rescore | None = None) -> SearchResult:
        # queries go in blocks whose candidate lists fit a fixed budget: the memory of a search is
        # bounded by the index (the shortlist is clamped to it), not by the number of queries
        first, step = first or self._first_stage(plan), max(1, CANDIDATE_BUDGET // plan.first[1])
        parts = [run_cascade(xq[a : a + step], k, plan, first, rescore or self.rows.rescore, gate, work,
                             self.rows.itemsize, None if chosen is None else chosen[a : a + step])
                 for a in range(0, len(xq), step)]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.float32)
        rows = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.int64)
        return SearchResult(scores, self.ids.row_ids(rows))

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        """The cascade a search with ``k`` runs: checked, with shortlists (and width) clamped to the live count."""
        plan = resolve_plan(cascade, k, self.default_cascade, self.dim, self.count)
        self._spec(plan.kind, plan.first[0], plan.width)
        return plan

    def _first_stage(self, plan: Cascade) -> FirstStage:
        """The plan's first stage as the funnel calls it: ``(queries, width, skip, work) -> (scores, rows)``."""
        (d, n), spec = plan.first, self._spec(plan.kind, plan.first[0], plan.width)
        if spec is not None:
            return lambda q, width, skip, work: self.rows.first_stage(spec, q, n, width, work, skip)

        def exact(q: np.ndarray, width: int | None, skip: int, work: Work | None) -> tuple[np.ndarray, np.ndarray]:
            if work is not None:
                per_query = np.full(len(q), float(self.rows.rows))
                work.record(0, f"exact@{d}", d, per_query, per_query * d * self.rows.itemsize)
            return self.rows.exact_scan(q, d, n)

        return exact

    def _spec(self, kind_name: str | None, d: int, width: int | None = None) -> FirstStageSpec | None:
        """The structure a first stage uses (``None``: an exact scan of the stored vectors); a given
        search width must apply to it."""
        at_d = [s for s in self.specs if s.dim == d and (kind_name is None or s.kind == kind_name)]
        if not at_d and kind_name not in (None, "exact"):
            have = ", ".join(map(str, self.specs)) or "none"
            raise MrlError(f"the index has no {kind_name}@{d} first stage (it has: {have}); "
                           f"rebuild with it, e.g. --first-stage {kind_name}@{d}")
        spec = at_d[0] if at_d else None
        if width is not None and (spec is None or not kind(spec.kind).width):
            raise MrlError(f"a search width applies to {', '.join(WIDTH_KINDS)} first stages, "
                           f"not to {spec or f'exact@{d}'}")
        return spec

    def gate_for(self, plan: Cascade) -> Gate:
        """The stored gate, checked to be the one fitted for ``plan``'s kind, dims and width."""
        if self.gate is None:
            raise MrlError(f"{self.root} has no gate: fit one with `mrl index tune --target-recall R --adaptive`, "
                           "or search with an ungated cascade")
        fitted = parse_cascade(self.gate.cascade, self.dim)
        same = (fitted.kind, [d for d, _ in fitted.stages], fitted.width) == (
            plan.kind, [d for d, _ in plan.stages], plan.width)
        if not same:
            raise MrlError(f"the index's gate was fitted for {self.gate.cascade}; cascade {plan} has other stages "
                           f"(use {self.gate.cascade}@gate, or re-run `mrl index tune --adaptive`)")
        return self.gate

    def exact_search(self, xq: np.ndarray, k: int = 10, dim: int | None = None, *, adapted: bool = False
                     ) -> SearchResult:
        """Exact cosine search on the stored vectors' ``dim``-prefix (default: all dims), streamed in blocks."""
        xq = self.prepare_queries(xq, adapted)  # (nq, D)
        check_k(k, self.count)
        d = check_dim(dim, self.dim, "dim") if dim is not None else self.dim
        scores, rows = self.rows.exact_scan(xq, d, k)
        return SearchResult(scores, self.ids.row_ids(rows))

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        """Checked float queries ``(nq, D)`` in the stored space (through the adaptor unless ``adapted``)."""
        xq = check_vectors(np.atleast_2d(xq) if np.ndim(xq) == 1 else xq, self.dim, "queries",
                           owner="the index's", empty=True, scan=True)
        if self.adaptor is not None and not adapted:
            return self.adaptor.transform(xq)
        return xq

    def check_adaptor(self, adaptor: Adaptor | None) -> None:
        """Refuse an adaptor the caller means to query with that is not the one the index applies."""
        if adaptor is None:
            return
        if self.adaptor is None:
            raise MrlError(f"{self.root} was built without an adaptor (its vectors are stored as given); "
                           "query it without --adaptor, or rebuild it with --adaptor")
        if adaptor.fingerprint != self.adaptor.fingerprint:
            raise MrlError(f"{self.root} was built with another adaptor ({self.adaptor.kind}, "
                           f"{self.adaptor.fingerprint[:12]}) than the one given ({adaptor.kind}, "
                           f"{adaptor.fingerprint[:12]}); the index applies its own: drop --adaptor")

    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        """The user-facing id of every int64 id in ``ids`` ``(nq, k)`` (``None`` for -1)."""
        return self.ids.keys(ids)

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray,
            payloads: Sequence[dict[str, Any] | None] | None = None) -> MrlIndex:
        """Upsert: new ids are added, existing ones replaced (a replaced row's payload with it: the
        given one, or none). Returns the new snapshot."""
        from mrl.index.local_build import add

        return MrlIndex(self.root, add(self, vectors, ids, payloads))

    def delete(self, ids: Sequence[int] | Sequence[str] | np.ndarray) -> MrlIndex:
        """Delete by id; every id must exist (nothing changes otherwise)."""
        from mrl.index.local_build import delete

        return MrlIndex(self.root, delete(self, ids))

    def compact(self) -> MrlIndex:
        """Rewrite the live vectors as one segment (drops deleted rows, rebuilds first stages).

        Refuses, naming the file, when a file it would read is missing or altered: rewriting damaged
        data with fresh checksums would make the damage permanent and invisible.
        """
        from mrl.index.local_build import compact

        return MrlIndex(self.root, compact(self, LiveRows(self.rows, self.rows.live_rows(), self.dim)))

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Gate | None = None) -> MrlIndex:
        """Commit a new default cascade (and, for a gated one, the gate fitted for it)."""
        plan = cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim)
        self._spec(plan.kind, plan.first[0], plan.width)  # the first stage must exist and take the width
        if gate is not None and str(parse_cascade(gate.cascade, self.dim)) != str(plan.ungated):
            raise MrlError(f"the gate was fitted for {gate.cascade}, not for {plan.ungated}")
        if plan.gated and gate is None:
            self.gate_for(plan)  # an existing gate must fit it
        with storage.writer_lock(self.root):
            self.check_current("set the default cascade of")
            changes: dict[str, Any] = {"default_cascade": str(plan)}
            if tuning is not None:
                changes["tuning"] = tuning
            if gate is not None:
                changes["gate"] = storage.write_gate(self.root, gate)
            manifest = self.manifest.next(**changes)
            storage.commit_manifest(self.root, manifest)
        return MrlIndex(self.root, manifest)

    def check_current(self, what: str | None = None) -> None:
        """Under the writer lock: the snapshot is still the committed one and, for ``what`` (a change
        that rewrites tombstones and ids), the files it rewrites from are intact."""
        if storage.read_manifest(self.root).generation != self.manifest.generation:
            raise MrlError(f"{self.root}: the index changed since it was opened; open it again and retry")
        problems = storage.verify_files(self.root, self.manifest, bookkeeping_only=True) if what else []
        if problems:
            raise MrlError(f"{self.root}: refusing to {what} a damaged index ({'; '.join(problems)}); "
                           "nothing was changed (`mrl index verify` lists every problem)")

    # ------------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        m = self.manifest
        disk = disk_bytes(self.root)
        stages = {}
        for spec in self.specs:
            total = self.rows.resident_bytes(spec)
            stages[str(spec)] = {"resident_bytes": total, "bytes_per_vector": round(total / max(self.rows.rows, 1), 1)}
        return {
            "path": str(self.root), "model": m.model, "count": self.count, "dim": self.dim,
            "dtype": m.dtype, "metric": m.metric, "id_kind": m.id_kind,
            "segments": len(self.rows.segments), "deleted_rows": int(self.rows.dead.sum()),
            "default_cascade": m.default_cascade, "first_stages": stages, "disk_bytes": disk,
            "generation": m.generation, "tuning": dict(m.tuning) if m.tuning else None,
            "adaptor": {k: v for k, v in m.adaptor.items() if k != "files"} if m.adaptor else None,
            "payloads": self.rows.has_payloads,
        }

    def verify(self) -> list[str]:
        """Every problem of the folder (:func:`~mrl.index.storage.verify_folder`); empty when intact."""
        return storage.verify_folder(self.root)
