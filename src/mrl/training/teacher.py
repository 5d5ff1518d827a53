"""Teacher embeddings for distillation: a model's, encoded once into a cache; or a folder of precomputed ones.

``--teacher`` is either

- a Sentence-Transformers model (folder, ``minilm``, cached hub name): every distinct text the
  run needs is encoded once, at the start, into ``<cache>/<teacher>-<digest>/`` (an ``mrl encode``
  folder keyed by the sha1 of each text; resumable, and reused by a later run with the same
  teacher and texts), never re-encoded per epoch;
- one or more ``mrl encode`` folders, comma-separated (for example API embeddings of the corpus
  and of the training queries), looked up by the data's ids: a BEIR split's query and document
  ids, or a pairs file's ``anchor_id`` / ``positive_id`` columns, or a parallel file's ``id``.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mrl.data import vectors as shards
from mrl.errors import MrlError

if TYPE_CHECKING:
    from mrl.encoders.model import TextKind


def text_key(text: str, kind: str | None = None) -> str:
    """The cache key of a text read as ``kind`` (query or document: a prompted model encodes them
    differently): the sha1 (hex) of the text, or of ``kind`` and the text."""
    data = text if kind is None else f"{kind}\0{text}"
    return hashlib.sha1(data.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True)
class Teacher:
    """Teacher vectors by key (text sha1 for a model teacher, data id for a precomputed one)."""

    name: str
    vectors: np.ndarray  # (n, T) float32
    rows: dict[str, int]
    by_id: bool  # keys are the data's ids (precomputed folders), else text sha1s

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def lookup(self, keys: Sequence[str]) -> np.ndarray:
        return self.vectors[[self.rows[k] for k in keys]]


def is_embeddings_folder(spec: str) -> bool:
    return all((Path(p) / shards.PLAN).is_file() for p in spec.split(","))


def from_folders(spec: str, needed: dict[str, Sequence[str | None]]) -> Teacher:
    """Precomputed teacher vectors from ``mrl encode`` folders, checked against the ids the run needs.

    Args:
        spec: folder[,folder...].
        needed: ``{what: ids}`` per data column (``"anchor ids of data.jsonl"``); a ``None`` id
            means the data names no id for that text.
    """
    parts: list[np.ndarray] = []
    ids: list[str] = []
    for folder in spec.split(","):
        if not Path(folder).is_dir():
            raise MrlError(f"--teacher: folder does not exist: {folder}")
        x, i = shards.load_folder(folder)
        bad = ~np.isfinite(x).all(axis=1)
        if bad.any():
            raise MrlError(f"--teacher {folder}: the vector of id {str(i[np.flatnonzero(bad)[0]])!r} is not finite "
                           f"(NaN or inf; {int(bad.sum())} such rows)")
        if parts and x.shape[1] != parts[0].shape[1]:
            raise MrlError(f"--teacher: {folder} holds {x.shape[1]}-dim vectors, {spec.split(',')[0]} "
                           f"{parts[0].shape[1]}-dim: one teacher has one width")
        parts.append(x)
        ids += [str(k) for k in i.tolist()]
    vectors = np.concatenate(parts).astype(np.float32, copy=False)
    rows: dict[str, int] = {}
    for n, key in enumerate(ids):
        if key in rows and not np.array_equal(vectors[rows[key]], vectors[n]):
            raise MrlError(f"--teacher {spec}: id {key!r} appears twice with different vectors")
        rows.setdefault(key, n)
    for what, wanted in needed.items():
        if any(k is None for k in wanted):
            raise MrlError(f"--teacher {spec}: precomputed teacher vectors are looked up by id, and the {what} "
                           "are not named (BEIR ids, anchor_id/positive_id columns, or 'id' in a parallel file)")
        missing = sorted({k for k in wanted if k is not None and k not in rows})
        if missing:
            raise MrlError(f"--teacher {spec}: {len(missing)} {what} have no teacher vector, e.g. "
                           f"{', '.join(map(repr, missing[:3]))}")
    return Teacher(spec, vectors, rows, by_id=True)


def from_model(name: str, texts: Mapping[TextKind, Sequence[str]], cache: Path, device: str | None = None,
               say: Callable[[str], None] | None = None, barrier: Callable[[], None] | None = None) -> Teacher:
    """Encode every distinct text once per kind (with the teacher's prompt for it), into (or from) the cache.

    Keys are :func:`text_key` of each text and its kind; each kind has a cache folder of its own.
    """
    from mrl.encoders.model import resolve_model_path
    from mrl.encoders.shards import encode_shards

    resolved = resolve_model_path(name)
    parts: list[np.ndarray] = []
    rows: dict[str, int] = {}
    for kind, kind_texts in texts.items():
        unique = list(dict.fromkeys(kind_texts))
        if not unique:
            continue
        keys = [text_key(t, kind) for t in unique]
        digest = hashlib.sha1("\n".join([resolved, *keys]).encode()).hexdigest()[:16]
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", Path(resolved).name or name)[-40:]
        folder = cache / f"{slug}-{kind}-{digest}"
        if say is not None:
            say(f"teacher {name}: {len(unique)} distinct {kind} texts, cached in {folder}")
        encode_shards(resolved, unique, keys, folder, source=f"teacher of {len(unique)} {kind} texts",
                      shard_size=5000, device=device, say=say, kind=kind)
        if barrier is not None:
            barrier()  # under torchrun every rank encodes its shards; all are needed
        vectors, ids = shards.load_folder(folder)
        if not np.isfinite(vectors).all():
            raise MrlError(f"teacher {name}: some of its embeddings are not finite ({folder})")
        offset = sum(len(p) for p in parts)
        rows.update({k: offset + n for n, k in enumerate(ids.tolist())})
        parts.append(vectors)
    if not parts:
        raise MrlError(f"teacher {name}: no text to encode")
    return Teacher(name, np.concatenate(parts), rows, by_id=False)
