"""BEIR folders: ``corpus.jsonl[.gz]``, ``queries.jsonl[.gz]``, ``qrels/<split>.tsv``."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from mrl.data.io import find_file, read_jsonl, read_lines
from mrl.errors import MrlError


@dataclass(frozen=True)
class BeirDataset:
    """One split of a BEIR folder.

    Attributes:
        corpus: document id -> text ("title text" when a title exists).
        queries: query id -> text, only the queries judged in this split.
        qrels: query id -> {document id: relevance}.
        name: a label for reports (the folder name).
        split: the split read.
    """

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    name: str = ""
    split: str = ""


def _records(path: Path, what: str) -> Iterator[tuple[str, str, dict]]:
    """``(_id, text, record)`` per line, naming file and line when a field is missing or an id repeats."""
    first_line: dict[str, int] = {}
    for lineno, rec in read_jsonl(path):
        rid, text = rec.get("_id"), rec.get("text")
        if not isinstance(rid, str) or not isinstance(text, str):
            raise MrlError(f'{path}:{lineno}: a {what} record needs string "_id" and "text" fields')
        if rid in first_line:
            raise MrlError(f"{path}:{lineno}: {what} id {rid!r} already appears on line {first_line[rid]}; "
                           "ids must be unique")
        first_line[rid] = lineno
        yield rid, text, rec


def load_corpus(folder: str | Path) -> dict[str, str]:
    """``{doc_id: text}`` from a BEIR folder's ``corpus.jsonl[.gz]`` (title and text joined)."""
    path = find_file(Path(folder), "corpus.jsonl")
    corpus: dict[str, str] = {}
    for doc_id, text, rec in _records(path, "corpus"):
        title = rec.get("title") or ""
        corpus[doc_id] = f"{title} {text}".strip() if title else text
    if not corpus:
        raise MrlError(f"{path}: the corpus is empty")
    return corpus


def _load_queries(folder: Path, wanted: set[str] | None) -> dict[str, str]:
    path = find_file(folder, "queries.jsonl")
    queries: dict[str, str] = {}
    for qid, text, _ in _records(path, "query"):
        if wanted is None or qid in wanted:
            queries[qid] = text
    return queries


def _grade(text: str, path: Path, lineno: int) -> int:
    """A relevance grade: an integer, as trec_eval reads them (``2``, ``2.0``); never silently truncated."""
    try:
        value = float(text)
    except ValueError:
        raise MrlError(f"{path}:{lineno}: relevance score {text!r} is not a number") from None
    if not math.isfinite(value) or value != int(value):
        raise MrlError(f"{path}:{lineno}: relevance score {text!r} is not an integer grade (e.g. 0, 1, 2)")
    return int(value)


def load_qrels(folder: Path, split: str) -> dict[str, dict[str, int]]:
    """Read ``qrels/<split>.tsv`` (``query-id  corpus-id  score``, optional header)."""
    path = folder / "qrels" / f"{split}.tsv"
    if not path.is_file():
        found = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
        raise MrlError(f"missing qrels file: {path} (splits found: {', '.join(found) or 'none'})")
    qrels: dict[str, dict[str, int]] = {}
    for lineno, line in enumerate(read_lines(path), start=1):
        cols = line.split("\t")
        if not line.strip() or (lineno == 1 and cols[0] == "query-id"):
            continue
        if len(cols) != 3:
            raise MrlError(f"{path}:{lineno}: expected 3 tab-separated columns, found {len(cols)}")
        qrels.setdefault(cols[0], {})
        if cols[1] in qrels[cols[0]]:
            raise MrlError(f"{path}:{lineno}: query {cols[0]!r} judges document {cols[1]!r} twice")
        qrels[cols[0]][cols[1]] = _grade(cols[2], path, lineno)
    if not any(s > 0 for judged in qrels.values() for s in judged.values()):
        raise MrlError(f"{path}: split {split!r} is empty (no query has a relevant document)")
    return qrels


def load_beir(path: str | Path, split: str = "test") -> BeirDataset:
    """Load one split of a BEIR folder, checking that every judged id exists.

    Raises:
        MrlError: a missing or malformed file, an empty split, or qrels naming unknown ids.
    """
    folder = Path(path)
    if not folder.is_dir():
        raise MrlError(f"BEIR folder not found: {folder}")
    qrels = load_qrels(folder, split)
    corpus = load_corpus(folder)
    queries = _load_queries(folder, set(qrels))
    qrels_path = folder / "qrels" / f"{split}.tsv"
    missing_q = [q for q in qrels if q not in queries]
    if missing_q:
        raise MrlError(
            f"{qrels_path}: {len(missing_q)} query id(s) not in queries.jsonl, e.g. {missing_q[0]!r}"
        )
    missing_d = sorted({d for judged in qrels.values() for d in judged if d not in corpus})
    if missing_d:
        raise MrlError(f"{qrels_path}: {len(missing_d)} document id(s) not in corpus.jsonl, e.g. {missing_d[0]!r}")
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels, name=folder.name, split=split)
