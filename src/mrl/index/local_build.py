"""The writes of an mrl index: build, add (upsert), delete, compact. Each returns the manifest it
committed; :class:`~mrl.index.local.MrlIndex` opens the new snapshot on it."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

import numpy as np

from mrl.adapt.base import Adaptor
from mrl.errors import MrlError
from mrl.index import storage
from mrl.index.cascade import FirstStageSpec, parse_cascade
from mrl.index.first_stages.auto import resolve_first_stages
from mrl.index.first_stages.kinds import EF_CONSTRUCTION, HNSW_M, check_hnsw, parse_first_stage
from mrl.index.ids import assign_ids
from mrl.index.manifest import DTYPES, Manifest
from mrl.index.payloads import check_payloads
from mrl.index.segment import write_segment
from mrl.vectors import check_vectors

if TYPE_CHECKING:
    from mrl.index.first_stages.kinds import FirstStageSpec as Spec
    from mrl.index.ids import IdMap
    from mrl.index.segments import LiveRows, SegmentSet

Progress = Callable[[FirstStageSpec], None]
MAX_SEGMENTS = 32  # an add past this many segments merges the smallest ones (descriptors stay bounded)
MERGE = 16  # how many of the smallest segments one merge rewrites


class Snapshot(Protocol):
    """What a write needs of the snapshot it changes (an :class:`~mrl.index.local.MrlIndex`)."""

    root: Path
    manifest: Manifest
    dim: int
    adaptor: Adaptor | None
    specs: list[Spec]
    rows: SegmentSet
    ids: IdMap

    @property
    def count(self) -> int: ...

    def check_current(self, what: str | None = None) -> None: ...

    def verify(self) -> list[str]: ...


def build(path: str | Path, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray | None = None, *,
          model: str | None = None, dtype: str = "float16", first_stages: Sequence[str] | None = None,
          default_cascade: str | None = None, ram_budget: float | None = None, hnsw_m: int = HNSW_M,
          ef_construction: int = EF_CONSTRUCTION, overwrite: bool = False, progress: Progress | None = None,
          adaptor: Adaptor | None = None, payloads: Sequence[dict | None] | None = None) -> tuple[Path, Manifest]:
    """Write a new index at ``path`` from ``vectors`` ``(n, D)`` (any float dtype, may be a memmap).

    ``ids`` are ints or strings (default ``0..n-1``); string ids get int64 ids assigned in order.
    An existing index at ``path`` stays intact unless ``overwrite``, and even then until the
    new one is committed. ``first_stages`` default to ``["auto"]``: chosen for the corpus size and
    ``ram_budget`` (bytes for the first stages, see :mod:`mrl.index.first_stages.auto`). With
    ``adaptor``, the adapted vectors are stored, the adaptor is kept in the index, and every vector
    given later (queries, additions) goes through it. ``payloads``: a JSON object (or ``None``)
    per row, stored with the segment for filtered search (:mod:`mrl.index.filters`).
    """
    root = Path(path)
    vectors = _adapted(check_vectors(vectors, None, "vectors", empty=True, scan=True), adaptor)
    n, dim = vectors.shape
    if n == 0:
        raise MrlError("vectors: the corpus is empty (0 rows); an index needs at least one vector")
    if dtype not in DTYPES:
        raise MrlError(f"dtype {dtype!r}: expected one of {', '.join(DTYPES)}")
    check_hnsw(hnsw_m, ef_construction)
    specs = [parse_first_stage(s, dim) for s in resolve_first_stages(list(first_stages or []) or None, n, dim,
                                                                     ram_budget)]
    if len(set(specs)) != len(specs):
        raise MrlError(f"first stages {[str(s) for s in specs]}: listed twice")
    int_ids, keys, id_kind, next_id = assign_ids(ids, n, None, 0)
    rows_payloads = check_payloads(payloads, n) if payloads is not None else None
    cascade = default_cascade or _initial_cascade(specs[0], dim)
    plan = parse_cascade(cascade, dim)
    if plan.kind not in (None, "exact") and FirstStageSpec(plan.kind, plan.first[0]) not in specs:
        raise MrlError(f"default cascade {cascade}: the build has no {plan.kind}@{plan.first[0]} first stage "
                       f"(it builds: {', '.join(map(str, specs))})")
    with storage.writer_lock(root):
        generation = _next_generation(root, overwrite)
        adaptor_entry = storage.write_adaptor(root, adaptor) if adaptor is not None else None
        entry = write_segment(root, vectors, int_ids, keys, specs, dtype, hnsw_m, ef_construction, progress,
                              rows_payloads)
        manifest = Manifest(generation=generation, dim=dim, count=n, dtype=dtype, default_cascade=cascade,
                            segments=(entry,), first_stages=tuple(str(s) for s in specs), model=model,
                            id_kind=id_kind, next_id=next_id, hnsw_m=hnsw_m, ef_construction=ef_construction,
                            created=time.time(), adaptor=adaptor_entry)
        storage.commit_manifest(root, manifest)
    return root, manifest


def _adapted(vectors: np.ndarray, adaptor: Adaptor | None) -> np.ndarray:
    if adaptor is None:
        return vectors
    if vectors.shape[1] != adaptor.input_dim:
        raise MrlError(f"vectors: dimension {vectors.shape[1]} does not match the adaptor's input "
                       f"dimension {adaptor.input_dim}")
    return adaptor.transform(vectors)


def _next_generation(root: Path, overwrite: bool) -> int:
    """1 for a new folder; past an existing index's (``overwrite`` only), so an open snapshot can tell it is stale."""
    if not (root / storage.MANIFEST).exists():
        return 1
    if not overwrite:
        raise MrlError(f"{root}: an index already exists there (pass overwrite / --overwrite to replace it)")
    previous = storage.generation(root)
    return previous + 1 if previous is not None else 1


def _initial_cascade(spec: FirstStageSpec, dim: int) -> str:
    if spec.dim < dim or spec.kind != "exact":  # approximate codes of all dims are rescored exactly
        return f"{spec}:100,{dim}:10"
    return f"exact@{dim}:10"


def add(index: Snapshot, vectors: np.ndarray, ids: Sequence[int] | Sequence[str] | np.ndarray,
        payloads: Sequence[dict | None] | None = None) -> Manifest:
    """Upsert into ``index``: new ids are added, existing ones replaced (payload and all); the committed manifest."""
    vectors = check_vectors(vectors, index.dim, "vectors", owner="the index's", empty=True, scan=True)
    if len(vectors) == 0:
        raise MrlError("vectors: nothing to add (0 rows)")
    rows_payloads = check_payloads(payloads, len(vectors)) if payloads is not None else None
    if index.adaptor is not None:
        vectors = index.adaptor.transform(vectors)
    m = index.manifest
    int_ids, keys, old_rows, next_id = index.ids.assign(ids, len(vectors), m.next_id)
    with storage.writer_lock(index.root):
        index.check_current("add to")
        entry = write_segment(index.root, vectors, int_ids, keys, index.specs, m.dtype, m.hnsw_m, m.ef_construction,
                              payloads=rows_payloads)
        replaced = old_rows[old_rows >= 0]
        manifest = index.rows.tombstoned(index.root, m.next(), replaced)
        manifest = replace(manifest, segments=(*manifest.segments, entry),
                           count=index.count - len(replaced) + len(vectors), next_id=next_id)
        if len(manifest.segments) > MAX_SEGMENTS:
            manifest = merge_smallest(index.root, manifest)
        storage.commit_manifest(index.root, manifest)
    return manifest


def merge_smallest(root: Path, manifest: Manifest) -> Manifest:
    """``manifest`` with its ``MERGE`` smallest segments (by live rows) rewritten as one.

    Every add makes a segment, and an open snapshot holds a few descriptors per segment: merging
    keeps both bounded (at most ``MAX_SEGMENTS``) whatever the number of adds, at the cost of
    rewriting only small segments (each row is rewritten about log(adds) times, as in an LSM tree).
    """
    from mrl.index.segments import LiveRows, SegmentSet

    order = sorted(range(len(manifest.segments)),
                   key=lambda i: manifest.segments[i].count - manifest.segments[i].dead_count)
    chosen = sorted(order[:MERGE])
    rows = SegmentSet.load(root, replace(manifest, segments=tuple(manifest.segments[i] for i in chosen)))
    live = rows.live_rows()
    keys = rows.keys()[live] if manifest.id_kind == "str" else None
    entry = write_segment(root, LiveRows(rows, live, manifest.dim), rows.ids[live], keys, manifest.specs,
                          manifest.dtype, manifest.hnsw_m, manifest.ef_construction, payloads=rows.payloads(live))
    kept = tuple(s for i, s in enumerate(manifest.segments) if i not in set(chosen))
    return replace(manifest, segments=(*kept, entry))


def delete(index: Snapshot, ids: Sequence[int] | Sequence[str] | np.ndarray) -> Manifest:
    """Delete by id from ``index``; every id must exist (nothing changes otherwise)."""
    values = list(ids)
    if not values:
        raise MrlError("delete: no ids given")
    int_ids, keys, _, _ = assign_ids(values, len(values), index.manifest.id_kind, 0)
    rows = index.ids.live_rows_of(int_ids, keys)
    missing = [v.item() if isinstance(v, np.generic) else v for v, r in zip(values, rows) if r < 0]
    if missing:
        raise MrlError(f"delete: {len(missing)} id(s) not in the index, e.g. {missing[0]!r}; nothing was deleted")
    if len(rows) >= index.count:
        raise MrlError(f"delete: removing all {index.count} vectors would leave an empty index; "
                       "build a new one instead")
    with storage.writer_lock(index.root):
        index.check_current("delete from")
        manifest = index.rows.tombstoned(index.root, index.manifest.next(count=index.count - len(rows)), rows)
        storage.commit_manifest(index.root, manifest)
    return manifest


def compact(index: Snapshot, live: LiveRows) -> Manifest:
    """Rewrite the live rows of ``index`` as one segment; refuses a damaged index, naming the file."""
    problems = index.verify()
    if problems:
        raise MrlError(f"{index.root}: refusing to compact a damaged index ({'; '.join(problems)}); "
                       "nothing was changed")
    m = index.manifest
    keys = index.rows.keys()[live.live] if m.id_kind == "str" else None
    with storage.writer_lock(index.root):
        index.check_current()
        entry = write_segment(index.root, live, index.rows.ids[live.live], keys, index.specs, m.dtype, m.hnsw_m,
                              m.ef_construction, payloads=index.rows.payloads(live.live))
        manifest = m.next(segments=(entry,))
        storage.commit_manifest(index.root, manifest)
    return manifest
