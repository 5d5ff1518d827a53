"""Cross-lingual retrieval sets laid out as debian-xling: translated queries over an English BEIR corpus.

::

    XLING/<lang>/queries-<split>.jsonl[.gz]   {"_id": <the English query id>, "text": <translated query>}
    XLING/<lang>/qrels/<split>.tsv            query-id, corpus-id, score (ids of the English corpus)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mrl.data.beir import _records, load_qrels
from mrl.data.io import find_file
from mrl.errors import MrlError


@dataclass(frozen=True)
class CrossLingualSet:
    lang: str
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]


def languages(folder: str | Path, split: str) -> list[str]:
    """The languages of ``folder`` that have queries of ``split``, sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise MrlError(f"cross-lingual folder not found: {folder}")
    found = sorted(p.name for p in folder.iterdir() if p.is_dir() and any(p.glob(f"queries-{split}.jsonl*"))
                   and (p / "qrels" / f"{split}.tsv").is_file())
    if not found:
        raise MrlError(f"{folder}: no <lang>/queries-{split}.jsonl[.gz] with <lang>/qrels/{split}.tsv (the "
                       "debian-xling layout)")
    return found


def load_cross_lingual(folder: str | Path, lang: str, split: str, corpus: dict[str, str]) -> CrossLingualSet:
    """One language's queries and qrels, checked against the English corpus."""
    base = Path(folder) / lang
    if not base.is_dir():
        raise MrlError(f"{folder}: no language {lang!r} (found: {', '.join(languages(folder, split))})")
    path = find_file(base, f"queries-{split}.jsonl")
    qrels = load_qrels(base, split)
    queries = {qid: text for qid, text, _ in _records(path, "query") if qid in qrels}
    missing = [q for q in qrels if q not in queries]
    if missing:
        raise MrlError(f"{base / 'qrels' / f'{split}.tsv'}: {len(missing)} query id(s) not in {path.name}, "
                       f"e.g. {missing[0]!r}")
    unknown = sorted({d for judged in qrels.values() for d in judged if d not in corpus})
    if unknown:
        raise MrlError(f"{base / 'qrels' / f'{split}.tsv'}: {len(unknown)} document id(s) not in the English "
                       f"corpus, e.g. {unknown[0]!r}")
    return CrossLingualSet(lang, queries, qrels)
