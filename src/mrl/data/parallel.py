"""Parallel sentences (a source text and its translation) for multilingual distillation.

A ``.jsonl[.gz]`` file, one record per line, in either form:

- the debian-xling form: ``{"en": <English source>, "text": <translation>, "id": ..., "lang": ...}``;
- a plain form: ``{"source": <source>, "target": <translation>}`` (``id`` and ``lang`` optional).

The student learns to map both the source and its translation to the teacher's embedding of
the source (Reimers & Gurevych, 2020).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

from mrl.data.io import read_jsonl
from mrl.errors import MrlError

FORMS = (("en", "text"), ("source", "target"))


@dataclass(frozen=True)
class Parallel:
    """Aligned source texts and translations, with the file (and language) of every record."""

    sources: list[str]
    targets: list[str]
    ids: list[str | None]
    langs: list[str]

    def __len__(self) -> int:
        return len(self.sources)

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lang in self.langs:
            out[lang] = out.get(lang, 0) + 1
        return out


def _lang_of(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl"):
        name = name.removesuffix(suffix)
    return name


def load_parallel_file(path: str | Path, limit: int | None = None, seed: int = 0) -> Parallel:
    """One parallel file; ``limit`` keeps a seeded random sample of that many records."""
    path = Path(path)
    if not path.is_file():
        raise MrlError(f"parallel file not found: {path}")
    if not path.name.endswith((".jsonl", ".jsonl.gz")):
        raise MrlError(f"{path}: a parallel file is .jsonl or .jsonl.gz")
    sources, targets, ids, langs = [], [], [], []
    form: tuple[str, str] | None = None
    for lineno, record in read_jsonl(path):
        if form is None:
            form = next((f for f in FORMS if f[0] in record or f[1] in record), None)
            if form is None:
                raise MrlError(f"{path}:{lineno}: a parallel record needs 'en' and 'text' (or 'source' and "
                               f"'target'); found {', '.join(map(repr, record)) or 'no fields'}")
        for column in form:
            value = record.get(column)
            if not isinstance(value, str) or not value.strip():
                raise MrlError(f"{path}:{lineno}: column {column!r} must be a non-empty string, got {value!r}")
        sources.append(record[form[0]])
        targets.append(record[form[1]])
        ids.append(str(record["id"]) if record.get("id") is not None else None)
        langs.append(str(record.get("lang") or _lang_of(path)))
    if not sources:
        raise MrlError(f"{path}: no parallel records (the language {_lang_of(path)!r} would get no training)")
    keep = list(range(len(sources)))
    if limit is not None:
        if limit < 1:
            raise MrlError(f"the parallel limit must be >= 1, got {limit}")
        if limit < len(keep):
            keep = sorted(random.Random(seed).sample(keep, limit))
    return Parallel([sources[i] for i in keep], [targets[i] for i in keep], [ids[i] for i in keep],
                    [langs[i] for i in keep])


def load_parallel(paths: list[str | Path], limit: int | None = None, seed: int = 0) -> Parallel:
    """Several parallel files, concatenated in the order given (``limit`` applies per file)."""
    if not paths:
        raise MrlError("no parallel files given")
    parts = [load_parallel_file(p, limit, seed) for p in paths]
    return Parallel([s for p in parts for s in p.sources], [t for p in parts for t in p.targets],
                    [i for p in parts for i in p.ids], [g for p in parts for g in p.langs])
