"""One immutable segment of an index: full vectors on disk, ids, first-stage structures, tombstones."""

from __future__ import annotations

import errno
import json
import os
import shutil
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Protocol

import numpy as np

from mrl.errors import MrlError
from mrl.index import storage
from mrl.index.filters import Table
from mrl.index.first_stages import structures as first_stage
from mrl.index.first_stages.kinds import FirstStageSpec
from mrl.index.manifest import SegmentEntry
from mrl.prefix import cast_into, row_norms, truncate, unit_rows

PAYLOADS = "payload.jsonl"  # one JSON line per row (an object, or null), only in segments written with payloads
BLOCK = 65_536  # rows per block when streaming vectors
SCAN_ROWS = 4_096  # rows cast to float32 at a time by an exact scan: the buffer stays in cache


def prefix_cosines(vectors: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Cosine of unit queries ``q`` ``(nq, d)`` with the ``d``-prefix of each row of ``vectors``: ``(nq, b)``.

    Rows are cast SCAN_ROWS at a time into one reused float32 buffer, so a scan of a float16
    memmap costs the cast and one pass, with no block-sized copies; a row's prefix norm divides
    its dot product, as in the rescoring of candidates (a zero prefix scores 0).
    """
    b, d = len(vectors), q.shape[1]
    out = np.empty((len(q), b), np.float32)
    buf = np.empty((min(SCAN_ROWS, b), d), np.float32)
    for a in range(0, b, SCAN_ROWS):
        blk = cast_into(vectors[a : a + SCAN_ROWS, :d], buf[: min(SCAN_ROWS, b - a)])  # (r, d)
        out[:, a : a + len(blk)] = (q @ blk.T) / np.maximum(row_norms(blk), 1e-12)
    return out


@dataclass
class Segment:
    """A committed segment as one snapshot sees it.

    Everything is pinned when the segment is loaded: ids, keys and tombstones are read, the
    vectors memory-mapped, and every first-stage file opened (it is read on first use). A writer
    that later removes these files (compaction, a rebuild) cannot break the snapshot: an open
    file outlives its name. (Windows refuses to delete open files; garbage collection then
    leaves them for a later writer.)
    """

    name: str
    root: Path
    vectors: np.ndarray  # (n, D), float16 or float32, memory-mapped, rows unit-normalised
    ids: np.ndarray  # (n,) int64
    keys: np.ndarray | None  # (n,) str when the index uses string ids
    dead: np.ndarray  # (n,) bool
    specs: list[FirstStageSpec]
    _files: dict[FirstStageSpec, BinaryIO] = field(default_factory=dict, repr=False)
    _sizes: dict[FirstStageSpec, int] = field(default_factory=dict, repr=False)
    _structures: dict[FirstStageSpec, Any] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _payload_file: BinaryIO | None = field(default=None, repr=False)
    _payloads: list[dict[str, Any] | None] | None = field(default=None, repr=False)
    _table: Table | None = field(default=None, repr=False)
    n_dead: int = field(init=False)

    def __post_init__(self) -> None:
        # A segment never changes once loaded (a delete commits a new tombstone file), so the
        # count is taken once: summing a 1M-row mask costs ~0.3 ms, more than a whole HNSW search.
        self.dead.flags.writeable = False
        self.n_dead = int(self.dead.sum())

    @property
    def n(self) -> int:
        return len(self.ids)

    def structure(self, spec: FirstStageSpec) -> Any:
        """The faiss structure for ``spec``, read (from the file opened at load) on first use and kept."""
        if spec not in self._structures:
            with self._lock:  # the service's first concurrent searches all arrive here
                if spec not in self._structures:
                    with self._files.pop(spec) as f:
                        self._structures[spec] = first_stage.load(spec, f)
        return self._structures[spec]

    def resident_bytes(self, spec: FirstStageSpec) -> int:
        return self._sizes[spec]

    @property
    def has_payloads(self) -> bool:
        return self._payload_file is not None or self._payloads is not None

    def payloads(self) -> list[dict[str, Any] | None]:
        """Every row's payload (``None``: none), read from the file pinned at load on first use."""
        if self._payloads is None:
            with self._lock:
                if self._payloads is None:
                    self._payloads = _read_payloads(self._payload_file, self.n, self.root / "segments" / self.name)
                    self._payload_file = None
        return self._payloads

    def payload_table(self) -> Table:
        """The payloads' columns (:class:`~mrl.index.filters.Table`), kept with the segment."""
        if self._table is None:
            self._table = Table(self.payloads())
        return self._table

    @classmethod
    def load(cls, root: Path, entry: SegmentEntry, specs: list[FirstStageSpec]) -> Segment:
        folder = root / "segments" / entry.name
        files: dict[FirstStageSpec, BinaryIO] = {spec: open(folder / first_stage.file_name(spec), "rb")
                                                 for spec in specs}
        try:
            sizes = {spec: os.fstat(f.fileno()).st_size for spec, f in files.items()}
            vectors = _read(folder / "vectors.npy", mmap=True)
            ids = _read(folder / "ids.npy")
            keys = _read(folder / "keys.npy") if "keys.npy" in entry.files else None
            dead = _read(root / entry.dead) if entry.dead else np.zeros(len(ids), bool)
            payload_file = open(folder / PAYLOADS, "rb") if PAYLOADS in entry.files else None
        except BaseException:
            for f in files.values():
                f.close()
            raise
        return cls(entry.name, root, vectors, ids, keys, dead, specs, files, sizes, _payload_file=payload_file)

    def close(self) -> None:
        """Close the first-stage files not read yet (also happens when the segment is collected)."""
        for f in self._files.values():
            f.close()
        self._files.clear()
        if self._payload_file is not None:
            self._payload_file.close()
            self._payload_file = None


def _read_payloads(f: BinaryIO | None, n: int, folder: Path) -> list[dict[str, Any] | None]:
    """The rows of a payload file (``None`` for every row of a segment without one)."""
    if f is None:
        return [None] * n
    with f:
        lines = f.read().splitlines()
    try:
        rows = [json.loads(line) for line in lines]
    except ValueError as e:
        rows, problem = [], str(e)
    else:
        problem = "" if len(rows) == n and all(r is None or isinstance(r, dict) for r in rows) else \
            f"{len(rows)} lines for {n} rows"
    if problem:
        raise MrlError(f"{folder / PAYLOADS}: cannot be read ({problem}); the index is damaged "
                       "(`mrl index verify` lists every problem)")
    return rows


def write_payloads(path: Path, payloads: Sequence[dict[str, Any] | None]) -> None:
    """One compact JSON line per row (``null`` for a row without a payload)."""
    with open(path, "w", encoding="utf-8") as f:
        for p in payloads:
            f.write(json.dumps(p, separators=(",", ":"), ensure_ascii=False, allow_nan=False))
            f.write("\n")


def _read(path: Path, mmap: bool = False) -> np.ndarray:
    """A committed .npy file; a damaged one (cut short, overwritten) is an error naming it. A missing one
    raises FileNotFoundError: the caller tells a concurrent writer's cleanup from damage."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (ValueError, OSError, EOFError) as e:
        raise MrlError(f"{path}: cannot be read ({e}); the index is damaged and nothing was changed "
                       "(`mrl index verify` lists every problem)") from None


class RowBlocks(Protocol):
    """Vectors read a block of rows at a time (an array, a memmap, or the live rows of an index)."""

    @property
    def shape(self) -> tuple[int, ...]: ...

    def __getitem__(self, rows: slice) -> np.ndarray: ...


def write_segment(
    root: Path,
    vectors: np.ndarray | RowBlocks,
    ids: np.ndarray,
    keys: np.ndarray | None,
    specs: list[FirstStageSpec],
    dtype: str,
    hnsw_m: int,
    ef_construction: int,
    progress: Any = None,
    payloads: Sequence[dict[str, Any] | None] | None = None,
) -> SegmentEntry:
    """Write a new segment (normalising ``vectors``) and build its first stages; with ``payloads``
    (one per row, any not ``None``), its payload file too (checksummed with the other files).

    Returns:
        Its manifest entry; the segment is in place but only becomes part of the index when a
        manifest naming it is committed.
    """
    name, tmp = storage.new_segment_dir(root)
    try:
        n = _write_vectors(tmp / "vectors.npy", vectors, np.dtype(dtype))
        storage.write_npy(tmp / "ids.npy", np.asarray(ids, dtype=np.int64))
        if keys is not None:
            storage.write_npy(tmp / "keys.npy", np.asarray(keys, dtype=str))
        if payloads is not None and any(p is not None for p in payloads):
            write_payloads(tmp / PAYLOADS, payloads)
        stored = np.load(tmp / "vectors.npy", mmap_mode="r")
        for spec in specs:
            xb = truncate(stored, spec.dim)  # (n, d): what the first stage indexes
            first_stage.save(first_stage.build(spec, xb, hnsw_m, ef_construction), tmp / first_stage.file_name(spec))
            if progress is not None:
                progress(spec)
        del stored
        files = storage.commit_segment_dir(root, name, tmp)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        if no_space(e, tmp):
            raise MrlError(f"{root}: no space left on the device while writing a segment; nothing was changed "
                           "(its partial files were removed)") from None
        raise
    return SegmentEntry(name, n, files)


def _write_vectors(path: Path, vectors: np.ndarray | RowBlocks, dtype: np.dtype) -> int:
    """Renormalised rows in ``dtype`` as a .npy file, written block by block with plain writes (a full disk
    is an ENOSPC error here, not a SIGBUS in a sparse memory map); returns the row count."""
    n, dim = vectors.shape
    with open(path, "wb") as f:
        np.lib.format.write_array_header_1_0(f, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                 "fortran_order": False, "shape": (n, dim)})
        for start in range(0, n, BLOCK):
            rows = unit_rows(vectors[start : start + BLOCK])  # renormalised before the cast to the stored dtype
            if not np.isfinite(rows).all():  # the inputs were checked: this would be a bug, never stored data
                raise MrlError(f"vectors: row {start + int(np.argmax(~np.isfinite(rows).all(axis=1)))} is not "
                               "finite after normalisation; nothing was written")
            f.write(np.ascontiguousarray(rows, dtype=dtype).tobytes())
    return int(n)


def no_space(error: BaseException, where: Path) -> bool:
    """Whether ``error`` came from a full disk (faiss reports it as a RuntimeError of its own)."""
    if isinstance(error, OSError) and error.errno == errno.ENOSPC:
        return True
    if isinstance(error, RuntimeError):
        try:
            return shutil.disk_usage(where.parent).free < 1 << 20
        except OSError:
            return False
    return False
