"""Cross-lingual training pairs: a translated query and the English document it should find.

Read from any mix of:

- debian-xling's parallel files (``<lang>.jsonl[.gz]``, or their folder): the translated synopsis
  (``synopsis``) is the query, the English long description (``en``) the document (a record
  whose synopsis has no translation, an empty string, is skipped and counted);
- a pairs file with a language column (``.jsonl[.gz]`` or ``.csv``): ``anchor`` (the query in
  its language), ``positive`` (the English document) and ``lang``.

A batch never holds two pairs with the same English document (in-batch negatives would be false
ones), and ``limit`` keeps a seeded sample of at most that many pairs per language, so that one
large language does not drown the small ones.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mrl.data.io import read_jsonl
from mrl.data.pairs import csv_rows
from mrl.errors import MrlError

#: a language tag as debian-xling and BCP 47 write them: de, pt_BR, zh-CN, yue
LANG_TAG = re.compile(r"^[A-Za-z]{2,3}([_-][A-Za-z0-9]{2,8})?$")
#: (query column, document column) of each form; the first one a file's first record matches is its form
FORMS = (("synopsis", "en"), ("anchor", "positive"))


@dataclass(frozen=True)
class CrossLingualPairs:
    """Aligned queries (in their languages) and English documents, with the language of each pair."""

    queries: list[str]
    documents: list[str]
    langs: list[str]
    skipped: int = 0  # debian-xling records without a translated synopsis

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def keys(self) -> list[str]:
        """What keeps duplicates out of a batch: the English document."""
        return self.documents

    def counts(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for lang in self.langs:
            out[lang] = out.get(lang, 0) + 1
        return dict(sorted(out.items()))


def xling_files(paths: list[str | Path]) -> list[Path]:
    """The files ``paths`` name: a folder stands for its ``*.jsonl[.gz]`` files (debian-xling's layout)."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = sorted(q for q in p.iterdir() if q.is_file() and q.name.endswith((".jsonl", ".jsonl.gz")))
            if not found:
                raise MrlError(f"--xling {p}: a folder with no <lang>.jsonl[.gz] files (debian-xling's layout)")
            files += found
        elif p.is_file():
            files.append(p)
        else:
            raise MrlError(f"--xling: file not found: {p}")
    return files


def _lang_of(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".jsonl", ".csv"):
        name = name.removesuffix(suffix)
    return name


def _rows(path: Path) -> list[tuple[int, dict[str, Any]]]:
    if path.name.endswith((".jsonl", ".jsonl.gz")):
        return list(read_jsonl(path))
    if path.name.endswith((".csv", ".csv.gz")):
        return csv_rows(path)
    raise MrlError(f"{path}: a cross-lingual file is .jsonl[.gz] or .csv")


def _read_file(path: Path) -> CrossLingualPairs:
    queries, documents, langs = [], [], []
    rows = _rows(path)
    if not rows:
        raise MrlError(f"{path}: no cross-lingual pairs (its language would get no training)")
    first = rows[0][1]
    form = next((f for f in FORMS if f[0] in first or f[1] in first), None)
    if form is None:
        raise MrlError(f"{path}:{rows[0][0]}: a cross-lingual pair needs 'synopsis' and 'en' (debian-xling) or "
                       f"'anchor', 'positive' and 'lang'; found {', '.join(map(repr, first)) or 'no fields'}")
    skipped = 0
    for lineno, row in rows:
        if form == FORMS[0] and isinstance(row.get(form[1]), str) and row.get(form[0]) == "":
            skipped += 1  # a parallel record whose synopsis has no translation: no query to train on
            continue
        for column in form:
            value = row.get(column)
            if not isinstance(value, str) or not value.strip():
                raise MrlError(f"{path}:{lineno}: column {column!r} must be a non-empty string, got {value!r}")
        lang = row.get("lang") if form == FORMS[1] else row.get("lang") or _lang_of(path)
        if not isinstance(lang, str) or not lang.strip():
            raise MrlError(f"{path}:{lineno}: column 'lang' (the query's language) must be a non-empty string, "
                           f"got {lang!r}")
        if not LANG_TAG.match(lang):
            raise MrlError(f"{path}:{lineno}: unknown language {lang!r} (a tag such as de, pt_BR or zh-CN)")
        queries.append(row[form[0]])
        documents.append(row[form[1]])
        langs.append(lang)
    if not queries:
        raise MrlError(f"{path}: no cross-lingual pairs (every translated synopsis is empty)")
    return CrossLingualPairs(queries, documents, langs, skipped)


def load_xling_pairs(paths: list[str | Path], langs: list[str] | None = None, limit: int | None = None,
                     seed: int = 0) -> CrossLingualPairs:
    """Every pair of ``paths`` (files or debian-xling folders), of the ``langs`` asked for (default: all).

    ``limit`` keeps a seeded random sample of at most that many pairs per language.
    """
    if not paths:
        raise MrlError("no cross-lingual files given")
    if limit is not None and limit < 1:
        raise MrlError(f"--xling-limit must be >= 1, got {limit}")
    parts = [_read_file(f) for f in xling_files(paths)]
    rows = [(q, d, g) for p in parts for q, d, g in zip(p.queries, p.documents, p.langs)]
    found = sorted({g for _, _, g in rows})
    wanted = list(dict.fromkeys(langs)) if langs else found
    unknown = [g for g in wanted if g not in found]
    if unknown:
        raise MrlError(f"--xling-langs: no pairs in language {unknown[0]!r} (found: {', '.join(found)})")
    by_lang: dict[str, list[int]] = {g: [] for g in wanted}
    for i, (_, _, g) in enumerate(rows):
        if g in by_lang:
            by_lang[g].append(i)
    keep: list[int] = []
    for g in wanted:
        idx = by_lang[g]
        if limit is not None and limit < len(idx):
            idx = sorted(random.Random(f"{seed}:{g}").sample(idx, limit))
        keep += idx
    keep.sort()
    return CrossLingualPairs([rows[i][0] for i in keep], [rows[i][1] for i in keep], [rows[i][2] for i in keep],
                             sum(p.skipped for p in parts))
