"""``MrlIndex``: full vectors stored once, searched through a funnel of prefixes.

>>> index = MrlIndex.build("idx", xb, ids, first_stages=["int8@64"])
>>> scores, ids = index.search(xq, k=10, cascade="int8@64:1000,128:100,384:10")

Vectors are unit-normalised on the way in and scored by cosine similarity at every prefix
(each prefix renormalised, the Matryoshka convention). An ``MrlIndex`` object is a read-only
snapshot of one committed manifest; ``add``, ``delete``, ``compact`` and ``set_default_cascade``
commit a new manifest atomically and return the new snapshot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mrl.adapt.base import Adaptor
from mrl.errors import MrlError
from mrl.index import storage
from mrl.index.base import SearchResult
from mrl.index.cascade import (
    Cascade,
    FirstStageSpec,
    check_k,
    parse_cascade,
    parse_first_stage,
    resolve_plan,
)
from mrl.index.first_stages import kinds
from mrl.index.first_stages import structures as first_stage
from mrl.index.first_stages.auto import resolve_first_stages
from mrl.index.funnel import run_gated, run_stages
from mrl.index.gate import Gate
from mrl.index.ids import check_ids
from mrl.index.segment import BLOCK, Segment, prefix_cosines, specs_from, write_segment
from mrl.index.work import Work
from mrl.prefix import check_dim, row_norms, to_float32, top_k, truncate
from mrl.vectors import check_vectors

DTYPES = ("float16", "float32")
GATHER_ROWS = 2048  # candidate rows per gather: small buffers stay in cache and skip page faults
CANDIDATE_BUDGET = 1 << 21  # first-stage candidates held at once per search (x 12 bytes, plus faiss's heaps)
SCAN_BUDGET = 1 << 25  # scores held at once by an exact scan (x 12 bytes with their rows)


class MrlIndex:
    def __init__(self, root: Path, manifest: dict[str, Any], stamp: tuple[int, int] | None = None) -> None:
        self.root = Path(root)
        self.manifest = manifest
        self.dim: int = manifest["dim"]
        self.specs = specs_from(manifest)
        self.segments = [Segment.load(self.root, e, self.specs) for e in manifest["segments"]]
        self._offsets = np.cumsum([0] + [s.n for s in self.segments])  # global row -> segment
        self._ids = np.concatenate([s.ids for s in self.segments]) if self.segments else np.zeros(0, np.int64)
        self._dead = np.concatenate([s.dead for s in self.segments]) if self.segments else np.zeros(0, bool)
        self._by_id: tuple[np.ndarray, np.ndarray] | None = None
        self._all_keys: np.ndarray | None = None
        # which manifest file this snapshot came from (for refresh); open() takes it before reading
        self._stamp = stamp if stamp is not None else _stamp(self.root)
        entry = manifest.get("adaptor")
        #: The adaptor every incoming vector goes through (``None``: vectors are stored as given).
        self.adaptor: Adaptor | None = Adaptor.load(self.root / entry["path"]) if entry else None
        gate = manifest.get("gate")
        #: The fitted gate of ``...@gate`` cascades (``mrl index tune --adaptive``), or ``None``.
        self.gate: Gate | None = Gate.load(self.root / gate["path"]) if gate else None

    # ------------------------------------------------------------------ open / build
    @classmethod
    def open(cls, path: str | Path) -> MrlIndex:
        """The index's current snapshot, with every file it needs pinned (see :class:`Segment`).

        Raises:
            MrlError: no index there, a damaged or edited manifest, a missing file or an altered adaptor.
        """
        root = Path(path)
        for _ in range(5):  # a writer may commit (and collect the old files) between reading and pinning
            stamp = _stamp(root)
            manifest = storage.read_manifest(root)
            missing = [f"segments/{seg['name']}/{f}" for seg in manifest["segments"] for f in seg["files"]
                       if not (root / "segments" / seg["name"] / f).is_file()]
            missing += [seg["dead"] for seg in manifest["segments"]
                        if seg.get("dead") and not (root / seg["dead"]).is_file()]
            adaptor = manifest.get("adaptor")
            for f, digest in (adaptor or {}).get("files", {}).items():
                if not (root / adaptor["path"] / f).is_file() or storage.sha256(root / adaptor["path"] / f) != digest:
                    missing.append(f"{adaptor['path']}/{f} (missing or altered)")
            gate = manifest.get("gate")
            if gate and (not (root / gate["path"]).is_file() or storage.sha256(root / gate["path"]) != gate["sha256"]):
                missing.append(f"{gate['path']} (the gate: missing or altered)")
            if not missing:
                try:
                    return cls(root, manifest, stamp)
                except FileNotFoundError as e:
                    missing = [str(e.filename)]
            if _generation(root) == manifest["generation"]:
                raise MrlError(f"{root}: {missing[0]} is missing; the index is damaged "
                               "(`mrl index verify` lists every problem)")
        raise MrlError(f"{root}: the index changed five times while it was being opened; try again")

    @classmethod
    def build(
        cls,
        path: str | Path,
        vectors: np.ndarray,
        ids: Sequence[int] | Sequence[str] | np.ndarray | None = None,
        *,
        model: str | None = None,
        dtype: str = "float16",
        first_stages: Sequence[str] | None = None,
        default_cascade: str | None = None,
        ram_budget: float | None = None,
        hnsw_m: int = 16,
        ef_construction: int = 80,
        overwrite: bool = False,
        progress: Callable[[FirstStageSpec], None] | None = None,
        adaptor: Adaptor | None = None,
    ) -> MrlIndex:
        """Write a new index at ``path`` from ``vectors`` ``(n, D)`` (any float dtype, may be a memmap).

        ``ids`` are ints or strings (default ``0..n-1``); string ids get int64 ids assigned in order.
        An existing index at ``path`` stays intact unless ``overwrite``, and even then until the
        new one is committed. ``first_stages`` default to ``["auto"]``: chosen for the corpus size and
        ``ram_budget`` (bytes for the first stages, see :mod:`mrl.index.auto`). With ``adaptor``, the
        adapted vectors are stored, the adaptor is kept in the index, and every vector given later
        (queries, additions) goes through it.
        """
        root = Path(path)
        vectors = _check_vectors(vectors, None, "vectors")
        if adaptor is not None:
            if vectors.shape[1] != adaptor.input_dim:
                raise MrlError(f"vectors: dimension {vectors.shape[1]} does not match the adaptor's input "
                               f"dimension {adaptor.input_dim}")
            vectors = adaptor.transform(vectors)
        n, dim = vectors.shape
        if n == 0:
            raise MrlError("vectors: the corpus is empty (0 rows); an index needs at least one vector")
        if dtype not in DTYPES:
            raise MrlError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
        if hnsw_m < 2 or ef_construction < 1:
            raise MrlError(f"hnsw: M must be >= 2 and efConstruction >= 1 (got {hnsw_m}, {ef_construction})")
        specs = [parse_first_stage(s, dim) for s in resolve_first_stages(first_stages, n, dim, ram_budget)]
        if len(set(specs)) != len(specs):
            raise MrlError(f"first stages {[str(s) for s in specs]}: listed twice")
        int_ids, keys, id_kind, next_id = _assign_ids(ids, n, None, 0)
        cascade = default_cascade or _initial_cascade(specs[0], dim)
        plan = parse_cascade(cascade, dim)
        if plan.kind not in (None, "exact") and FirstStageSpec(plan.kind, plan.first[0]) not in specs:
            raise MrlError(f"default cascade {cascade}: the build has no {plan.kind}@{plan.first[0]} first stage "
                           f"(it builds: {', '.join(map(str, specs))})")
        with storage.writer_lock(root):
            generation = 1
            if (root / storage.MANIFEST).exists():
                if not overwrite:
                    raise MrlError(f"{root}: an index already exists there "
                                   "(pass overwrite / --overwrite to replace it)")
                try:  # generations keep counting, so an open snapshot can tell it is stale
                    generation = storage.read_manifest(root)["generation"] + 1
                except MrlError:
                    pass
            adaptor_entry = storage.write_adaptor(root, adaptor) if adaptor is not None else None
            entry = write_segment(root, vectors, int_ids, keys, specs, dtype, hnsw_m, ef_construction, progress)
            entry.update(dead=None, dead_sha256=None, dead_count=0)
            manifest = {
                "format": storage.FORMAT, "version": storage.VERSION, "generation": generation,
                "model": model, "dim": dim, "dtype": dtype, "metric": "cosine",
                "count": n, "id_kind": id_kind, "next_id": next_id,
                "first_stages": [str(s) for s in specs], "hnsw_m": hnsw_m, "ef_construction": ef_construction,
                "default_cascade": cascade, "created": time.time(), "segments": [entry],
                "adaptor": adaptor_entry,
            }
            storage.commit_manifest(root, manifest)
        return cls(root, manifest)

    # ------------------------------------------------------------------ properties
    @property
    def count(self) -> int:
        """Live vectors (deleted and superseded ones excluded)."""
        return int(self.manifest["count"])

    @property
    def default_cascade(self) -> Cascade:
        return parse_cascade(self.manifest["default_cascade"], self.dim)

    @property
    def generation(self) -> int:
        return int(self.manifest["generation"])

    @property
    def model(self) -> str | None:
        return self.manifest.get("model")

    @property
    def first_stages(self) -> list[FirstStageSpec]:
        return list(self.specs)

    def max_width(self, spec: FirstStageSpec) -> int:
        """The largest inverted-file list count among the segments' ``spec`` structures (0: none)."""
        return max((getattr(seg.structure(spec), "nlist", 0) for seg in self.segments if seg.n), default=0)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``min(n, count)`` stored vectors of distinct random live rows (sorted by row), float32."""
        rng = np.random.default_rng(seed)
        live = np.flatnonzero(~self._dead)
        rows = np.sort(rng.choice(live, size=min(n, len(live)), replace=False))
        return self._gather(rows, self.dim)

    def refresh(self) -> MrlIndex:
        """The newest committed snapshot: ``self`` while the manifest file is the one opened."""
        return self if _stamp(self.root) == self._stamp else MrlIndex.open(self.root)

    def __len__(self) -> int:
        return self.count

    def __repr__(self) -> str:
        return (f"MrlIndex({str(self.root)!r}, count={self.count}, dim={self.dim}, "
                f"first_stages={self.manifest['first_stages']}, cascade={self.manifest['default_cascade']!r})")

    # ------------------------------------------------------------------ search
    def search(
        self, xq: np.ndarray, k: int = 10, cascade: str | Cascade | None = None, *, adapted: bool = False,
        work: Work | None = None,
    ) -> SearchResult:
        """Search with a cascade (the index's default when ``None``).

        Queries are vectors of the model the index was built from; an index with an adaptor applies
        it to them first (``adapted=True``: they already went through it, e.g. stored vectors).
        ``work`` collects what every stage did per query (:mod:`mrl.index.work`).

        Returns:
            :class:`SearchResult` ``(scores, ids)``, float32 and int64, shape ``(nq, k)``; id -1
            (score -inf) where the cascade found fewer than ``k`` hits. Scores are cosine similarities at the last
            stage's prefix (for a one-stage binary cascade, ``d - 2 * hamming``).
        """
        xq = self.prepare_queries(xq, adapted)  # (nq, D)
        plan = self.plan(cascade, k)
        # queries go in blocks whose candidate lists fit a fixed budget: the memory of a search is
        # bounded by the index (the shortlist is clamped to it), not by the number of queries
        step = max(1, CANDIDATE_BUDGET // plan.first[1])
        parts = [self._search_block(xq[a : a + step], k, plan, work) for a in range(0, len(xq), step)]
        scores = np.concatenate([p[0] for p in parts]) if parts else np.zeros((0, k), np.float32)
        rows = np.concatenate([p[1] for p in parts]) if parts else np.zeros((0, k), np.int64)
        return SearchResult(scores, self._row_ids(rows))

    def plan(self, cascade: str | Cascade | None = None, k: int = 10) -> Cascade:
        """The cascade a search with ``k`` runs: checked, with shortlists (and width) clamped to the live count."""
        return resolve_plan(cascade, k, self.default_cascade, self.dim, self.count)

    def _search_block(self, xq: np.ndarray, k: int, plan: Cascade, work: Work | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
        d1, n1 = plan.first
        gate = self.gate_for(plan) if plan.gated else None
        if gate is not None and gate.axis == "width":
            scores, rows = self.gated_first_stage(xq, plan, gate, None, work)
            return run_stages(self._rescore, xq, k, plan, scores, rows, work, self._itemsize)
        scores, rows = self._first_stage(xq, plan.kind, d1, n1, plan.width, work)
        if gate is not None:
            return self.gated_rest(xq, k, plan, scores, rows, gate, None, work)
        return run_stages(self._rescore, xq, k, plan, scores, rows, work, self._itemsize)

    def gated_first_stage(self, xq: np.ndarray, plan: Cascade, gate: Gate, chosen: np.ndarray | None = None,
                          work: Work | None = None) -> tuple[np.ndarray, np.ndarray]:
        """A width gate's first stage: every query scans ``gate.levels[0]`` lists; the gate reads those
        scores and the queries it sends further scan the lists up to their width (or ``chosen``: a
        level index per query) past those first ones, one group per width; both scans merged give
        one scan at that width."""
        (d1, n1), levels = plan.first, gate.levels
        counts: list[Work] = []  # one per scan, only when the caller counts work

        def scan(q: np.ndarray, width: int, skip: int = 0) -> tuple[np.ndarray, np.ndarray]:
            counted = Work() if work is not None else None
            if counted is not None:
                counts.append(counted)
            return self._first_stage(q, plan.kind, d1, n1, width, counted, skip)

        scores, rows = scan(xq, levels[0])
        chosen = gate.choose(scores) if chosen is None else np.asarray(chosen)
        groups = [np.flatnonzero(chosen == li) for li in np.unique(chosen[chosen > 0])]
        for sel, li in zip(groups, np.unique(chosen[chosen > 0])):
            s, r = scan(xq[sel], levels[li], skip=levels[0])
            scores[sel], rows[sel] = top_k(np.concatenate([scores[sel], s], axis=1),
                                          np.concatenate([rows[sel], r], axis=1), n1)
        if work is not None:
            scanned, read = (a.copy() for a in counts[0].stages[0].totals())
            for sel, again in zip(groups, counts[1:]):
                c, b = again.stages[0].totals()
                scanned[sel] += c
                read[sel] += b
            work.record(0, counts[0].stages[0].name, d1, scanned, read)
        return scores, rows

    def gated_rest(self, xq: np.ndarray, k: int, plan: Cascade, scores: np.ndarray, rows: np.ndarray, gate: Gate,
                   chosen: np.ndarray | None = None, work: Work | None = None) -> tuple[np.ndarray, np.ndarray]:
        """The stages after the first with per-query depth from ``gate`` (or the level indexes ``chosen``)."""
        return run_gated(self._rescore, xq, k, plan, scores, rows, gate, work, self._itemsize, chosen)

    def row_ids(self, rows: np.ndarray) -> np.ndarray:
        """The ids of global rows (-1 stays -1)."""
        return self._row_ids(rows)

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

    def exact_search(
        self, xq: np.ndarray, k: int = 10, dim: int | None = None, *, adapted: bool = False
    ) -> SearchResult:
        """Exact cosine search on the stored vectors' ``dim``-prefix (default: all dims), streamed in blocks."""
        xq = self.prepare_queries(xq, adapted)  # (nq, D)
        self._check_k(k)
        if dim is not None:
            check_dim(dim, self.dim, "dim")
        scores, rows = self._exact_scan(xq, dim or self.dim, k)
        return SearchResult(scores, self._row_ids(rows))

    def prepare_queries(self, xq: Any, adapted: bool = False) -> np.ndarray:
        """Checked float queries ``(nq, D)`` in the stored space (through the adaptor unless ``adapted``)."""
        xq = _check_vectors(np.atleast_2d(xq) if np.ndim(xq) == 1 else xq, self.dim, "queries")
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

    def _check_k(self, k: int) -> None:
        check_k(k, self.count)

    def _spec_for(self, kind: str | None, d: int) -> FirstStageSpec | None:
        """The structure a first stage uses; ``None`` means an exact scan of the stored vectors."""
        at_d = [s for s in self.specs if s.dim == d and (kind is None or s.kind == kind)]
        if at_d:
            return at_d[0]
        if kind in (None, "exact"):
            return None
        have = ", ".join(map(str, self.specs)) or "none"
        raise MrlError(f"the index has no {kind}@{d} first stage (it has: {have}); "
                       f"rebuild with it, e.g. --first-stage {kind}@{d}")

    def _first_spec(self, kind: str | None, d: int, width: int | None) -> FirstStageSpec | None:
        """:meth:`_spec_for`, also checking that a given search width applies to that structure."""
        spec = self._spec_for(kind, d)
        if width is not None and (spec is None or not kinds.kind(spec.kind).width):
            raise MrlError(f"a search width applies to {', '.join(kinds.WIDTH_KINDS)} first stages, "
                           f"not to {spec or f'exact@{d}'}")
        return spec

    def _first_stage(
        self, xq: np.ndarray, kind: str | None, d: int, n: int, width: int | None = None, work: Work | None = None,
        skip: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        spec = self._first_spec(kind, d, width)
        if spec is None:
            if work is not None:
                scanned = float(sum(seg.n for seg in self.segments))
                per_query = np.full(len(xq), scanned)
                work.record(0, f"exact@{d}", d, per_query, per_query * d * self._itemsize)
            return self._exact_scan(xq, d, n)
        q = truncate(xq, d)  # (nq, d)
        all_scores, all_rows = [], []
        scanned, read = np.zeros(len(q)), np.zeros(len(q))
        for seg, off in zip(self.segments, self._offsets[:-1]):
            if seg.n == 0 or seg.n_dead == seg.n:
                continue
            if work is None:
                s, r = first_stage.search(spec, seg.structure(spec), q, n + seg.n_dead, width, skip)
            else:
                s, r, codes, size = first_stage.counted_search(spec, seg.structure(spec), q, n + seg.n_dead, width,
                                                               skip)
                scanned, read = scanned + codes, read + codes * size
            valid = r >= 0
            valid[valid] &= ~seg.dead[r[valid]]
            all_scores.append(np.where(valid, s, -np.inf).astype(np.float32))
            all_rows.append(np.where(valid, r + off, -1))
        if work is not None:
            work.record(0, str(spec), d, scanned, read)
        return top_k(np.concatenate(all_scores, axis=1), np.concatenate(all_rows, axis=1), n)

    @property
    def _itemsize(self) -> int:
        """Bytes per stored coordinate (float16 or float32 vectors)."""
        return int(self.segments[0].vectors.dtype.itemsize) if self.segments else 4

    def _exact_scan(self, xq: np.ndarray, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        step = max(1, SCAN_BUDGET // (n + BLOCK))  # queries per pass: (step, n + BLOCK) scores at a time
        if len(xq) > step:
            parts = [self._exact_scan(xq[a : a + step], d, n) for a in range(0, len(xq), step)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        q = truncate(xq, d)  # (nq, d)
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_r = np.full((len(q), 0), -1, np.int64)
        for seg, off in zip(self.segments, self._offsets[:-1]):
            for start in range(0, seg.n, BLOCK):
                s = prefix_cosines(seg.vectors[start : start + BLOCK], q)  # (nq, b)
                s[:, seg.dead[start : start + BLOCK]] = -np.inf
                rows = np.broadcast_to(np.arange(start + off, start + off + s.shape[1]), s.shape)
                best_s, best_r = top_k(np.concatenate([best_s, s], 1), np.concatenate([best_r, rows], 1), n)
        return best_s, best_r

    def _rescore(self, xq: np.ndarray, rows: np.ndarray, d: int) -> np.ndarray:
        """Cosine at the ``d``-prefix of every candidate ``rows`` ``(nq, c)``; -inf where row is -1."""
        nq, c = rows.shape
        out = np.empty((nq, c), np.float32)
        q = truncate(xq, d)  # (nq, d)
        step = max(1, GATHER_ROWS // max(c, 1))
        for a in range(0, nq, step):
            b = min(a + step, nq)
            flat = rows[a:b].ravel()  # (m,) with m = (b - a) * c
            xb = self._gather(flat, d)  # (m, d) float32
            dots = np.matmul(xb.reshape(b - a, c, d), q[a:b, :, None])[..., 0]  # (b - a, c)
            scores = dots / np.maximum(row_norms(xb), 1e-12).reshape(b - a, c)
            out[a:b] = np.where(rows[a:b] >= 0, scores, -np.inf)
        return out

    def _gather(self, flat: np.ndarray, d: int) -> np.ndarray:
        """The ``d``-prefixes of global rows ``flat`` as float32 ``(m, d)`` (zeros for -1)."""
        if len(self.segments) == 1:
            return to_float32(self.segments[0].vectors[np.maximum(flat, 0), :d])
        xb = np.zeros((len(flat), d), np.float32)
        for seg, off in zip(self.segments, self._offsets[:-1]):
            sel = np.flatnonzero((flat >= off) & (flat < off + seg.n))
            if len(sel):
                xb[sel] = to_float32(seg.vectors[flat[sel] - off, :d])
        return xb

    def _row_ids(self, rows: np.ndarray) -> np.ndarray:
        return np.where(rows >= 0, self._ids[np.maximum(rows, 0)], -1).astype(np.int64)

    # ------------------------------------------------------------------ ids
    def keys(self, ids: np.ndarray) -> list[list[str | None]]:
        """The user-facing id of every int64 id in ``ids`` ``(nq, k)`` (``None`` for -1)."""
        ids = np.atleast_2d(np.asarray(ids, dtype=np.int64))
        if self.manifest["id_kind"] == "int":
            return [[str(i) if i >= 0 else None for i in row] for row in ids.tolist()]
        sorted_ids, order = self._id_lookup()
        keys = self._keys()
        pos = np.clip(np.searchsorted(sorted_ids, ids), 0, len(sorted_ids) - 1)
        found = sorted_ids[pos] == ids
        return [[str(keys[order[p]]) if f and i >= 0 else None for p, f, i in zip(prow, frow, irow)]
                for prow, frow, irow in zip(pos, found, ids)]

    def _keys(self) -> np.ndarray:
        """Every row's string key (string-id indexes), built once per snapshot."""
        if self._all_keys is None:
            self._all_keys = np.concatenate([s.keys for s in self.segments])
        return self._all_keys

    def _id_lookup(self) -> tuple[np.ndarray, np.ndarray]:
        """Live ids sorted, and the global row of each."""
        if self._by_id is None:
            live = np.flatnonzero(~self._dead)
            order = live[np.argsort(self._ids[live], kind="stable")]
            self._by_id = (self._ids[order], order)
        return self._by_id

    def _live_rows_of(self, ids: np.ndarray, keys: np.ndarray | None) -> np.ndarray:
        """Global rows of the live entries with these ids (string index: these keys); -1 if absent."""
        if keys is not None:
            all_keys = self._keys()
            live = np.flatnonzero(~self._dead)
            order = live[np.argsort(all_keys[live], kind="stable")]
            sorted_keys = all_keys[order]
            pos = np.clip(np.searchsorted(sorted_keys, keys), 0, max(len(order) - 1, 0))
            hit = (sorted_keys[pos] == keys) if len(order) else np.zeros(len(keys), bool)
        else:
            sorted_ids, order = self._id_lookup()
            pos = np.clip(np.searchsorted(sorted_ids, ids), 0, max(len(order) - 1, 0))
            hit = (sorted_ids[pos] == ids) if len(order) else np.zeros(len(ids), bool)
        return np.where(hit, order[pos] if len(order) else -1, -1)

    # ------------------------------------------------------------------ changes
    def add(self, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray) -> MrlIndex:
        """Upsert: new ids are added, existing ones replaced. Returns the new snapshot."""
        vectors = _check_vectors(vectors, self.dim, "vectors")
        if len(vectors) == 0:
            raise MrlError("vectors: nothing to add (0 rows)")
        if self.adaptor is not None:
            vectors = self.adaptor.transform(vectors)
        m = self.manifest
        int_ids, keys, _, _ = _assign_ids(ids, len(vectors), m["id_kind"], m["next_id"])
        old_rows = self._live_rows_of(int_ids, keys)
        if keys is not None:  # an upserted string id keeps its int64 id
            fresh = old_rows < 0
            int_ids = np.where(fresh, 0, self._ids[np.maximum(old_rows, 0)])
            int_ids[fresh] = m["next_id"] + np.arange(int(fresh.sum()))
            next_id = m["next_id"] + int(fresh.sum())
        else:
            next_id = max(m["next_id"], int(int_ids.max()) + 1)
        with storage.writer_lock(self.root):
            self._check_current("add to")
            entry = write_segment(self.root, vectors, int_ids, keys, self.specs, m["dtype"],
                                  m["hnsw_m"], m["ef_construction"])
            entry.update(dead=None, dead_sha256=None, dead_count=0)
            manifest = self._with_dead(old_rows[old_rows >= 0])
            manifest["segments"].append(entry)
            manifest["count"] = self.count - int((old_rows >= 0).sum()) + len(vectors)
            manifest["next_id"] = next_id
            storage.commit_manifest(self.root, manifest)
        return MrlIndex(self.root, manifest)

    def delete(self, ids: Sequence[int] | Sequence[str] | np.ndarray) -> MrlIndex:
        """Delete by id; every id must exist (nothing changes otherwise)."""
        values = list(ids)
        if not values:
            raise MrlError("delete: no ids given")
        int_ids, keys, _, _ = _assign_ids(values, len(values), self.manifest["id_kind"], 0)
        rows = self._live_rows_of(int_ids, keys)
        missing = [v.item() if isinstance(v, np.generic) else v for v, r in zip(values, rows) if r < 0]
        if missing:
            raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")
        if len(rows) >= self.count:
            raise MrlError(f"delete: removing all {self.count} vectors would leave an empty index; "
                           "build a new one instead")
        with storage.writer_lock(self.root):
            self._check_current("delete from")
            manifest = self._with_dead(rows)
            manifest["count"] = self.count - len(rows)
            storage.commit_manifest(self.root, manifest)
        return MrlIndex(self.root, manifest)

    def compact(self) -> MrlIndex:
        """Rewrite the live vectors as one segment (drops deleted rows, rebuilds first stages).

        Refuses, naming the file, when a file it would read is missing or altered: rewriting damaged
        data with fresh checksums would make the damage permanent and invisible.
        """
        m = self.manifest
        problems = self.verify()
        if problems:
            raise MrlError(f"{self.root}: refusing to compact a damaged index ({'; '.join(problems)}); "
                           "nothing was changed")
        live = np.flatnonzero(~self._dead)
        keys = self._keys()[live] if m["id_kind"] == "str" else None
        with storage.writer_lock(self.root):
            self._check_current()
            vectors = _LiveRows(self, live)
            entry = write_segment(self.root, vectors, self._ids[live], keys, self.specs, m["dtype"],
                                  m["hnsw_m"], m["ef_construction"])
            entry.update(dead=None, dead_sha256=None, dead_count=0)
            manifest = self._next_manifest()
            manifest["segments"] = [entry]
            storage.commit_manifest(self.root, manifest)
        return MrlIndex(self.root, manifest)

    def set_default_cascade(self, cascade: str | Cascade, tuning: dict[str, Any] | None = None,
                            gate: Gate | None = None) -> MrlIndex:
        """Commit a new default cascade (and, for a gated one, the gate fitted for it)."""
        plan = cascade if isinstance(cascade, Cascade) else parse_cascade(cascade, self.dim)
        self._first_spec(plan.kind, plan.first[0], plan.width)  # the first stage must exist and take the width
        if gate is not None and str(parse_cascade(gate.cascade, self.dim)) != str(plan.ungated):
            raise MrlError(f"the gate was fitted for {gate.cascade}, not for {plan.ungated}")
        if plan.gated and gate is None:
            self.gate_for(plan)  # an existing gate must fit it
        with storage.writer_lock(self.root):
            self._check_current("set the default cascade of")
            manifest = self._next_manifest()
            manifest["default_cascade"] = str(plan)
            if tuning is not None:
                manifest["tuning"] = tuning
            if gate is not None:
                manifest["gate"] = storage.write_gate(self.root, gate)
            storage.commit_manifest(self.root, manifest)
        return MrlIndex(self.root, manifest)

    def _check_current(self, what: str | None = None) -> None:
        """Under the writer lock: the snapshot is still the committed one and, for ``what`` (a change
        that rewrites tombstones and ids), the files it rewrites from are intact."""
        if storage.read_manifest(self.root)["generation"] != self.manifest["generation"]:
            raise MrlError(f"{self.root}: the index changed since it was opened; open it again and retry")
        problems = storage.verify_files(self.root, self.manifest, bookkeeping_only=True) if what else []
        if problems:
            raise MrlError(f"{self.root}: refusing to {what} a damaged index ({'; '.join(problems)}); "
                           "nothing was changed (`mrl index verify` lists every problem)")

    def _next_manifest(self) -> dict[str, Any]:
        manifest = {**self.manifest, "segments": [dict(s) for s in self.manifest["segments"]]}
        manifest["generation"] = self.manifest["generation"] + 1
        return manifest

    def _with_dead(self, rows: np.ndarray) -> dict[str, Any]:
        """The next manifest with global ``rows`` marked dead (new tombstone files for touched segments)."""
        manifest = self._next_manifest()
        for i, (seg, off) in enumerate(zip(self.segments, self._offsets[:-1])):
            local = rows[(rows >= off) & (rows < off + seg.n)] - off
            if len(local):
                dead = seg.dead.copy()
                dead[local] = True
                rel, digest = storage.write_dead(self.root, seg.name, manifest["generation"], dead)
                manifest["segments"][i].update(dead=rel, dead_sha256=digest, dead_count=int(dead.sum()))
        return manifest

    # ------------------------------------------------------------------ inspection
    def stats(self) -> dict[str, Any]:
        m = self.manifest
        disk = sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())
        stages = {}
        for spec in self.specs:
            total = sum(seg.resident_bytes(spec) for seg in self.segments)
            stages[str(spec)] = {"resident_bytes": total, "bytes_per_vector": round(total / max(len(self._ids), 1), 1)}
        return {
            "path": str(self.root), "model": m["model"], "count": self.count, "dim": self.dim,
            "dtype": m["dtype"], "metric": m["metric"], "id_kind": m["id_kind"],
            "segments": len(self.segments), "deleted_rows": int(self._dead.sum()),
            "default_cascade": m["default_cascade"], "first_stages": stages, "disk_bytes": disk,
            "generation": m["generation"], "tuning": m.get("tuning"),
            "adaptor": {k: v for k, v in m["adaptor"].items() if k != "files"} if m.get("adaptor") else None,
        }

    def verify(self) -> list[str]:
        """Recompute every checksum; returns the problems (empty when intact)."""
        return storage.verify_files(self.root, self.manifest)


class _LiveRows:
    """Row-block view over the live rows of an index, for compaction without loading everything."""

    def __init__(self, index: MrlIndex, live: np.ndarray) -> None:
        self.index, self.live = index, live
        self.shape = (len(live), index.dim)

    def __getitem__(self, sl: slice) -> np.ndarray:
        rows = self.live[sl]
        out = np.empty((len(rows), self.index.dim), np.float32)
        for seg, off in zip(self.index.segments, self.index._offsets[:-1]):
            sel = np.flatnonzero((rows >= off) & (rows < off + seg.n))
            if len(sel):
                out[sel] = to_float32(seg.vectors[rows[sel] - off])
        return out


def _check_vectors(x: Any, dim: int | None, what: str) -> np.ndarray:
    return check_vectors(x, dim, what, owner="the index's", empty=True, scan=True)


def _assign_ids(
    ids: Any, n: int, id_kind: str | None, next_id: int
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


def _stamp(root: Path) -> tuple[int, int] | None:
    """Identity of the manifest file now in place: every commit renames a new one in."""
    try:
        st = (root / storage.MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def _generation(root: Path) -> int | None:
    try:
        return storage.read_manifest(root)["generation"]
    except MrlError:
        return None


def _initial_cascade(spec: FirstStageSpec, dim: int) -> str:
    if spec.dim < dim or spec.kind != "exact":  # approximate codes of all dims are rescored exactly
        return f"{spec}:100,{dim}:10"
    return f"exact@{dim}:10"
