"""The segments of one snapshot as one table of rows: global rows -> segments, and every scan over them.

A *row* is a position in the concatenation of the segments (segment order, then row order);
searches work on rows and the index turns them into ids at the end. :meth:`SegmentSet.split`
is the one loop from global rows to segments.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from mrl.index import storage
from mrl.index.filters import Filter, evaluate, payload_types
from mrl.index.first_stages import structures
from mrl.index.first_stages.kinds import FirstStageSpec
from mrl.index.manifest import Manifest, SegmentEntry
from mrl.index.segment import BLOCK, Segment, prefix_cosines
from mrl.index.work import Work
from mrl.prefix import row_norms, to_float32, top_k, truncate

GATHER_ROWS = 2048  # candidate rows per gather: small buffers stay in cache and skip page faults
SCAN_BUDGET = 1 << 25  # scores held at once by an exact scan (x 12 bytes with their rows)
MASKS_KEPT = 16  # allow-lists of recent filters kept per snapshot (a service sees the same filters again)


class SegmentSet:
    """The pinned segments of a snapshot, their global rows, ids and tombstones."""

    def __init__(self, segments: list[Segment]) -> None:
        self.segments = segments
        self.offsets = np.cumsum([0] + [s.n for s in segments])  # global row -> segment
        self.ids = np.concatenate([s.ids for s in segments]) if segments else np.zeros(0, np.int64)
        self.dead = np.concatenate([s.dead for s in segments]) if segments else np.zeros(0, bool)
        self._keys: np.ndarray | None = None
        self._masks: OrderedDict[Filter, np.ndarray] = OrderedDict()
        self._types: dict[str, dict[str, Any]] | None = None

    @classmethod
    def load(cls, root: Path, manifest: Manifest) -> SegmentSet:
        specs = manifest.specs
        _allow_descriptors(len(manifest.segments) * (2 + len(specs)))
        return cls([Segment.load(root, entry, specs) for entry in manifest.segments])

    @property
    def rows(self) -> int:
        return int(self.offsets[-1])

    @property
    def itemsize(self) -> int:
        """Bytes per stored coordinate (float16 or float32 vectors)."""
        return int(self.segments[0].vectors.dtype.itemsize) if self.segments else 4

    def keys(self) -> np.ndarray:
        """Every row's string key (string-id indexes), built once per snapshot."""
        if self._keys is None:
            self._keys = np.concatenate([s.keys for s in self.segments if s.keys is not None])
        return self._keys

    def live_rows(self) -> np.ndarray:
        return np.flatnonzero(~self.dead)

    # ------------------------------------------------------------------ payloads
    @property
    def has_payloads(self) -> bool:
        return any(s.has_payloads for s in self.segments)

    def payloads(self, rows: np.ndarray) -> list[dict[str, Any] | None] | None:
        """The payloads of global ``rows`` (``None``: no segment has any)."""
        if not self.has_payloads:
            return None
        out: list[dict[str, Any] | None] = [None] * len(rows)
        for i, seg, sel in self.split(rows):
            mine = seg.payloads()
            for pos, r in zip(sel.tolist(), (rows[sel] - self.offsets[i]).tolist()):
                out[pos] = mine[r]
        return out

    def payload_types(self) -> dict[str, dict[str, Any]]:
        """``{key: {type: example}}`` over every stored payload (see :func:`~mrl.index.filters.payload_types`)."""
        if self._types is None:
            types: dict[str, dict[str, Any]] = {}
            for seg in self.segments:
                if seg.has_payloads:
                    payload_types(seg.payloads(), types)
            self._types = types
        return self._types

    def allowed(self, f: Filter) -> np.ndarray:
        """The live rows ``f`` lets through, ``(rows,)`` bool (kept for the last few filters)."""
        mask = self._masks.get(f)
        if mask is None:
            parts = [evaluate(f, seg.payloads(), seg.payload_table()) for seg in self.segments]
            mask = (np.concatenate(parts) if parts else np.zeros(0, bool)) & ~self.dead
            mask.flags.writeable = False
            self._masks[f] = mask
            while len(self._masks) > MASKS_KEPT:
                self._masks.popitem(last=False)
        return mask

    def exact_rows(self, xq: np.ndarray, d: int, n: int, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` of the given global ``rows`` by cosine at the ``d``-prefix: ``(scores, rows)``."""
        step = max(1, SCAN_BUDGET // max(len(rows), 1))
        xb = self.gather(rows, d)  # (m, d)
        xb /= np.maximum(row_norms(xb), 1e-12)[:, None]
        q = truncate(xq, d)  # (nq, d)
        parts = [top_k(q[a : a + step] @ xb.T, np.broadcast_to(rows, (len(q[a : a + step]), len(rows))), n)
                 for a in range(0, len(q), step)]
        if not parts:
            return np.zeros((0, n), np.float32), np.zeros((0, n), np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def split(self, rows: np.ndarray) -> Iterator[tuple[int, Segment, np.ndarray]]:
        """``(i, segment, positions)`` for every segment holding some of ``rows``: ``positions`` index
        ``rows``; ``rows[positions] - offsets[i]`` are that segment's own rows."""
        for i, (seg, off) in enumerate(zip(self.segments, self.offsets[:-1])):
            sel = np.flatnonzero((rows >= off) & (rows < off + seg.n))
            if len(sel):
                yield i, seg, sel

    def gather(self, rows: np.ndarray, d: int) -> np.ndarray:
        """The ``d``-prefixes of global ``rows`` as float32 ``(m, d)`` (zeros for -1)."""
        if len(self.segments) == 1:
            return to_float32(self.segments[0].vectors[np.maximum(rows, 0), :d])
        xb = np.zeros((len(rows), d), np.float32)
        for i, seg, sel in self.split(rows):
            xb[sel] = to_float32(seg.vectors[rows[sel] - self.offsets[i], :d])
        return xb

    def rescore(self, xq: np.ndarray, rows: np.ndarray, d: int) -> np.ndarray:
        """Cosine at the ``d``-prefix of every candidate ``rows`` ``(nq, c)``; -inf where row is -1."""
        nq, c = rows.shape
        out = np.empty((nq, c), np.float32)
        q = truncate(xq, d)  # (nq, d)
        step = max(1, GATHER_ROWS // max(c, 1))
        for a in range(0, nq, step):
            b = min(a + step, nq)
            xb = self.gather(rows[a:b].ravel(), d)  # ((b - a) * c, d) float32
            dots = np.matmul(xb.reshape(b - a, c, d), q[a:b, :, None])[..., 0]  # (b - a, c)
            scores = dots / np.maximum(row_norms(xb), 1e-12).reshape(b - a, c)
            out[a:b] = np.where(rows[a:b] >= 0, scores, -np.inf)
        return out

    def exact_scan(self, xq: np.ndarray, d: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` live rows by cosine at the ``d``-prefix, streamed in blocks: ``(scores, rows)``."""
        step = max(1, SCAN_BUDGET // (n + BLOCK))  # queries per pass: (step, n + BLOCK) scores at a time
        if len(xq) > step:
            parts = [self.exact_scan(xq[a : a + step], d, n) for a in range(0, len(xq), step)]
            return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])
        q = truncate(xq, d)  # (nq, d)
        best_s = np.full((len(q), 0), -np.inf, np.float32)
        best_r = np.full((len(q), 0), -1, np.int64)
        for seg, off in zip(self.segments, self.offsets[:-1]):
            for start in range(0, seg.n, BLOCK):
                s = prefix_cosines(seg.vectors[start : start + BLOCK], q)  # (nq, b)
                s[:, seg.dead[start : start + BLOCK]] = -np.inf
                rows = np.broadcast_to(np.arange(start + off, start + off + s.shape[1]), s.shape)
                best_s, best_r = top_k(np.concatenate([best_s, s], 1), np.concatenate([best_r, rows], 1), n)
        return best_s, best_r

    def first_stage(self, spec: FirstStageSpec, xq: np.ndarray, n: int, width: int | None = None,
                    work: Work | None = None, skip: int = 0, allowed: np.ndarray | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
        """Top-``n`` live rows from every segment's ``spec`` structure, merged: ``(scores, rows)``;
        with ``allowed`` (global rows, bool), only those: a faiss id selector inside each search."""
        q = truncate(xq, spec.dim)  # (nq, d)
        all_scores, all_rows = [], []
        scanned, read = np.zeros(len(q)), np.zeros(len(q))
        for seg, off in zip(self.segments, self.offsets[:-1]):
            keep = ~seg.dead if allowed is None else allowed[off : off + seg.n]
            if seg.n == 0 or seg.n_dead == seg.n or (allowed is not None and not keep.any()):
                continue
            extra, sel = (seg.n_dead, None) if allowed is None else (0, _selector(keep))
            if work is None:
                s, r = structures.search(spec, seg.structure(spec), q, n + extra, width, skip, sel)
            else:
                s, r, codes, size = structures.counted_search(spec, seg.structure(spec), q, n + extra,
                                                              width, skip, sel)
                scanned, read = scanned + codes, read + codes * size
            valid = r >= 0
            valid[valid] &= keep[r[valid]]
            all_scores.append(np.where(valid, s, -np.inf).astype(np.float32))
            all_rows.append(np.where(valid, r + off, -1))
        if work is not None:
            work.record(0, str(spec), spec.dim, scanned, read)
        if not all_scores:
            return top_k(np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64), n)
        return top_k(np.concatenate(all_scores, axis=1), np.concatenate(all_rows, axis=1), n)

    def sample(self, n: int, seed: int = 0) -> np.ndarray:
        """``min(n, live)`` stored vectors of distinct random live rows (sorted by row), float32."""
        rng = np.random.default_rng(seed)
        live = self.live_rows()
        rows = np.sort(rng.choice(live, size=min(n, len(live)), replace=False))
        return self.gather(rows, self.segments[0].vectors.shape[1])

    def max_width(self, spec: FirstStageSpec) -> int:
        """The largest inverted-file list count among the segments' ``spec`` structures (0: none)."""
        return max((getattr(seg.structure(spec), "nlist", 0) for seg in self.segments if seg.n), default=0)

    def resident_bytes(self, spec: FirstStageSpec) -> int:
        return sum(seg.resident_bytes(spec) for seg in self.segments)

    def tombstoned(self, root: Path, manifest: Manifest, rows: np.ndarray) -> Manifest:
        """``manifest`` with global ``rows`` marked dead: a new tombstone file for every touched segment."""
        for i, seg, sel in self.split(rows):
            dead = seg.dead.copy()
            dead[rows[sel] - self.offsets[i]] = True
            rel, digest = storage.write_dead(root, seg.name, manifest.generation, dead)
            entry = manifest.segments[i]
            manifest = manifest.with_segment(i, SegmentEntry(entry.name, entry.count, entry.files, rel, digest,
                                                             int(dead.sum())))
        return manifest


def _selector(keep: np.ndarray) -> Any:
    """A faiss selector of the segment rows where ``keep`` holds (its bitmap rides on it, kept alive)."""
    import faiss

    bits = np.packbits(keep, bitorder="little")
    sel = faiss.IDSelectorBitmap(len(keep), faiss.swig_ptr(bits))
    sel.bits_ref = bits  # type: ignore[attr-defined]  # faiss reads the array: it lives as long as the selector
    return sel


def _allow_descriptors(needed: int) -> None:
    """Raise this process's soft limit of open files toward its hard limit when a snapshot needs more
    (an index written by many adds before merging existed still opens, and can be compacted)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = needed + 256  # beside the index: sockets, models, the interpreter's own files
    if soft != resource.RLIM_INFINITY and soft < want:
        target = want if hard == resource.RLIM_INFINITY else min(want, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, target), hard))


class LiveRows:
    """Row-block view over the live rows of a segment set, for compaction without loading everything."""

    def __init__(self, segments: SegmentSet, live: np.ndarray, dim: int) -> None:
        self.segments, self.live = segments, live
        self.shape = (len(live), dim)

    def __getitem__(self, sl: slice) -> np.ndarray:
        rows = self.live[sl]
        out = np.empty((len(rows), self.shape[1]), np.float32)
        for i, seg, sel in self.segments.split(rows):
            out[sel] = to_float32(seg.vectors[rows[sel] - self.segments.offsets[i]])
        return out
