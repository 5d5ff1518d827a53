"""Crash-safe layout of an index folder.

::

    IDX/
      manifest.json          the commit point: names every live file and its checksum, and
                             carries a checksum of its own content (an edit or damage is refused)
      segments/<name>/       immutable once committed: vectors.npy, ids.npy, [keys.npy], <kind>-<dim>.faiss
      dead/<name>.<gen>.npy  per-segment tombstones (bool); a change writes a new file, never edits one
      .lock                  writers hold an exclusive lock (filelock: flock on POSIX, msvcrt on Windows)

A change writes new files under temporary names, fsyncs them, renames them into place, then
replaces ``manifest.json`` the same way. Until that last rename, readers (and a restart after a
SIGKILL) see the previous manifest, whose files are never touched; afterwards they see the new
one. Files no manifest names are garbage and are removed by the next writer; only names that
mrl writes are ever removed, so building into a folder never deletes a user's own files.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock, Timeout

from mrl._fs import atomic_write_text, fsync_dir, sha256, write_npy
from mrl.errors import MrlError
from mrl.index.manifest import Manifest, check_header, stamped

__all__ = ["atomic_write_text", "fsync_dir", "sha256", "write_npy"]  # re-exported for the index modules

MANIFEST = "manifest.json"
# the only names garbage collection removes: what new_segment_dir, write_dead and write_adaptor write
_SEGMENT_DIR = re.compile(r"(\.tmp-)?seg-[0-9a-f]{12}")
_DEAD_FILE = re.compile(r"seg-[0-9a-f]{12}\.\d+\.npy|\.seg-[0-9a-f]{12}\.\d+\.[0-9a-f]{32}\.tmp")
_GATE_FILE = re.compile(r"(\.tmp-)?gate-[0-9a-f]{16}\.json(-[0-9a-f]{8})?")
_ADAPTOR_DIR = re.compile(r"(\.tmp-)?adaptor-[0-9a-f]{16}(-[0-9a-f]{8})?")


@contextlib.contextmanager
def writer_lock(root: Path) -> Iterator[None]:
    """One writer at a time per index folder (readers never lock); portable through filelock."""
    root.mkdir(parents=True, exist_ok=True)
    lock = FileLock(root / ".lock", timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise MrlError(f"{root}: another process is changing this index; try again when it is done") from None
    try:
        yield
    finally:
        lock.release()


def new_segment_dir(root: Path) -> tuple[str, Path]:
    """A fresh temporary folder for a segment; :func:`commit_segment_dir` moves it into place."""
    name = f"seg-{uuid.uuid4().hex[:12]}"
    tmp = root / "segments" / f".tmp-{name}"
    tmp.mkdir(parents=True)
    return name, tmp


def commit_segment_dir(root: Path, name: str, tmp: Path) -> dict[str, str]:
    """fsync every file of a finished segment, rename the folder into place; returns checksums."""
    sums = {}
    for f in sorted(tmp.iterdir()):
        with open(f, "rb") as fh:
            os.fsync(fh.fileno())
        sums[f.name] = sha256(f)
    fsync_dir(tmp)
    final = root / "segments" / name
    os.replace(tmp, final)
    fsync_dir(final.parent)
    return sums


def write_dead(root: Path, segment: str, generation: int, dead: np.ndarray) -> tuple[str, str]:
    """Write a segment's tombstones as a new file; returns (relative path, checksum)."""
    folder = root / "dead"
    folder.mkdir(exist_ok=True)
    rel = f"dead/{segment}.{generation}.npy"
    tmp = folder / f".{segment}.{generation}.{uuid.uuid4().hex}.tmp"
    write_npy(tmp, dead.astype(bool))
    os.replace(tmp, root / rel)
    fsync_dir(folder)
    return rel, sha256(root / rel)


def write_adaptor(root: Path, adaptor: Any) -> dict[str, Any]:
    """Store an adaptor in ``root/adaptor-<fingerprint>/`` (immutable, renamed into place); its manifest entry."""
    from mrl.adapt.base import CONFIG, WEIGHTS

    name = f"adaptor-{adaptor.fingerprint[:16]}"
    final = root / name
    if not final.is_dir():
        tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        adaptor.save(tmp)
        fsync_dir(tmp)
        os.replace(tmp, final)
        fsync_dir(root)
    entry = {**adaptor.summary(), "path": name, "files": {f: sha256(final / f) for f in (CONFIG, WEIGHTS)}}
    return entry


def write_gate(root: Path, gate: Any) -> dict[str, Any]:
    """Store a fitted gate as ``root/gate-<digest>.json`` (immutable: named by its content); its manifest entry."""
    text = json.dumps(gate.to_dict(), indent=1) + "\n"
    digest = hashlib.sha256(text.encode()).hexdigest()
    name = f"gate-{digest[:16]}.json"
    if not (root / name).is_file():
        tmp = root / f".tmp-{name}-{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, root / name)
        fsync_dir(root)
    return {"path": name, "sha256": digest, "cascade": gate.cascade, "levels": list(gate.levels),
            "calibration": gate.calibration}


def read_manifest(root: Path) -> Manifest:
    """The committed manifest; raises :class:`MrlError` naming the first problem (see :func:`verify_folder`)."""
    manifest, problems = _load_manifest(Path(root))
    if problems or manifest is None:
        raise MrlError(problems[0])
    return manifest


def _load_manifest(root: Path) -> tuple[Manifest | None, list[str]]:
    """``(manifest, problems)`` without raising; ``manifest`` is ``None`` when it cannot be used at all."""
    path = root / MANIFEST
    if not path.is_file():
        hint = " (the folder exists but holds no committed index)" if root.is_dir() else ""
        return None, [f"{root}: not an mrl index, {MANIFEST} not found{hint}"]
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        return None, [f"{path}: not valid JSON ({e.msg} at line {e.lineno})"]
    except (OSError, UnicodeDecodeError) as e:
        return None, [f"{path}: cannot be read ({e})"]
    problems = check_header(raw, str(path))
    if problems and "checksum mismatch" not in problems[0]:
        return None, problems
    try:
        return Manifest.parse(raw), problems
    except MrlError as e:
        return None, [*problems, f"{path}: {e}"]


def stamp(root: Path) -> tuple[int, int] | None:
    """Identity of the manifest file now in place: every commit renames a new one in."""
    try:
        st = (Path(root) / MANIFEST).stat()
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns


def generation(root: Path) -> int | None:
    """The committed generation, or ``None`` when no readable manifest is there."""
    try:
        return read_manifest(root).generation
    except MrlError:
        return None


def missing_files(root: Path, manifest: Manifest) -> list[str]:
    """Files ``manifest`` names that are not there (the adaptor and gate also checked against their
    checksums: they are small and read whole)."""
    missing = [f"segments/{seg.name}/{f}" for seg in manifest.segments for f in seg.files
               if not (root / "segments" / seg.name / f).is_file()]
    missing += [seg.dead for seg in manifest.segments if seg.dead and not (root / seg.dead).is_file()]
    adaptor = manifest.adaptor or {}
    for f, digest in adaptor.get("files", {}).items():
        path = root / adaptor["path"] / f
        if not path.is_file() or sha256(path) != digest:
            missing.append(f"{adaptor['path']}/{f} (missing or altered)")
    gate = manifest.gate
    if gate and (not (root / gate["path"]).is_file() or sha256(root / gate["path"]) != gate["sha256"]):
        missing.append(f"{gate['path']} (the gate: missing or altered)")
    return missing


def commit_manifest(root: Path, manifest: Manifest) -> None:
    """The commit point of every change (written with its checksum); then drop files no manifest names."""
    atomic_write_text(Path(root) / MANIFEST, json.dumps(stamped(manifest), indent=2) + "\n")
    collect_garbage(Path(root), manifest)


def collect_garbage(root: Path, manifest: Manifest) -> None:
    """Remove segments, tombstones, adaptors and temporary files that ``manifest`` does not name.

    Only names mrl writes are candidates: anything else in the folder is left alone.
    """
    live_segments = {s.name for s in manifest.segments}
    live_dead = {s.dead for s in manifest.segments if s.dead}
    seg_root = root / "segments"
    if seg_root.is_dir():
        for p in seg_root.iterdir():
            if p.is_dir() and p.name not in live_segments and _SEGMENT_DIR.fullmatch(p.name):
                shutil.rmtree(p, ignore_errors=True)
    dead_root = root / "dead"
    if dead_root.is_dir():
        for p in dead_root.iterdir():
            if f"dead/{p.name}" not in live_dead and _DEAD_FILE.fullmatch(p.name):
                p.unlink(missing_ok=True)
    for p in root.glob(f".{MANIFEST}.*.tmp"):
        p.unlink(missing_ok=True)
    live_adaptor = (manifest.adaptor or {}).get("path")
    live_gate = (manifest.gate or {}).get("path")
    for p in root.iterdir():
        if p.is_dir() and p.name != live_adaptor and _ADAPTOR_DIR.fullmatch(p.name):
            shutil.rmtree(p, ignore_errors=True)
        elif p.is_file() and p.name != live_gate and _GATE_FILE.fullmatch(p.name):
            p.unlink(missing_ok=True)


def verify_folder(root: Path) -> list[str]:
    """Every problem of the index at ``root``, without raising: an unreadable, malformed or edited
    manifest, and each missing, truncated or altered file it names. Empty when intact."""
    root = Path(root)
    manifest, problems = _load_manifest(root)
    if manifest is None:
        return problems  # no file list that could be walked
    files = verify_files(root, manifest)
    problems += files
    if not files:
        live = 0
        for seg in manifest.segments:
            folder = root / "segments" / seg.name
            try:
                n = int(np.load(folder / "ids.npy", mmap_mode="r").shape[0])
                shape = np.load(folder / "vectors.npy", mmap_mode="r").shape
            except (OSError, ValueError) as e:
                problems.append(f"segments/{seg.name}: cannot be read ({e})")
                continue
            if shape != (n, manifest.dim):
                problems.append(f"segments/{seg.name}/vectors.npy: shape {shape}, expected ({n}, {manifest.dim})")
            else:
                problems += _non_finite(folder / "vectors.npy", f"segments/{seg.name}/vectors.npy")
            live += n - seg.dead_count
        if live != manifest.count:
            problems.append(f"{MANIFEST}: count {manifest.count} but the segments hold {live} live vectors")
    return problems


def _non_finite(path: Path, rel: str, block: int = 65_536) -> list[str]:
    """The first stored row that is NaN or infinite (nothing non-finite is ever written; this finds damage)."""
    vectors = np.load(path, mmap_mode="r")
    for start in range(0, len(vectors), block):
        bad = ~np.isfinite(np.asarray(vectors[start : start + block])).all(axis=1)
        if bad.any():
            return [f"{rel}: row {start + int(np.argmax(bad))} holds NaN or Inf"]
    return []


def verify_files(root: Path, manifest: Manifest, bookkeeping_only: bool = False) -> list[str]:
    """Recompute the checksums the manifest records; returns the problems found.

    ``bookkeeping_only``: only ids, keys, tombstones and the adaptor (what ``add`` and ``delete``
    rewrite from), not the vectors and first-stage structures (cheap enough for every commit).
    """
    problems = []
    checks = []
    adaptor = manifest.adaptor
    if adaptor:
        checks += [(f"{adaptor['path']}/{f}", s) for f, s in adaptor["files"].items()]
    if manifest.gate:
        checks.append((manifest.gate["path"], manifest.gate["sha256"]))
    for seg in manifest.segments:
        checks += [(f"segments/{seg.name}/{f}", s) for f, s in seg.files.items()
                   if not bookkeeping_only or f in ("ids.npy", "keys.npy")]
        if seg.dead and seg.dead_sha256:
            checks.append((seg.dead, seg.dead_sha256))
    for rel, expected in checks:
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif sha256(path) != expected:
            problems.append(f"{rel}: checksum mismatch")
    return problems
