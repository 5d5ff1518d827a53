"""Crash-safe file writes, in one place: write under a temporary name, fsync, rename, fsync the folder."""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import numpy as np


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def sha256(path: Path, chunk: int = 1 << 22) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def disk_bytes(root: Path) -> int:
    """Bytes of the files under ``root``; files another process removes meanwhile are not counted."""
    total = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(dirpath, name)).st_size
            except OSError:  # removed by a writer's garbage collection since the listing
                continue
    return total


def temporary_name(path: Path) -> Path:
    """A hidden sibling of ``path`` that no other writer picks: ``.NAME.<uuid>.tmp``."""
    return path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")


def write_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` and fsync it (``path`` is a temporary name until committed)."""
    with open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = temporary_name(path)
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))
