"""Training pairs and triplets: from a BEIR split or a jsonl / csv / parquet file.

A file holds an ``anchor`` column, a ``positive`` column and optionally one or more
hard-negative columns (``negative``, ``negative_1``, ``negative_2`` ...).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from mrl.data.beir import load_beir
from mrl.data.io import open_text, read_jsonl
from mrl.errors import MrlError


@dataclass(frozen=True)
class Pairs:
    """Aligned training columns.

    Attributes:
        anchors: query-side texts, length n.
        positives: matched document texts, length n.
        negatives: hard-negative columns, each of length n (empty tuple when none).
        positive_keys: an id per positive, used to keep duplicates out of a batch
            (two anchors with the same positive would be each other's false negatives).
        column_ids: an id per text of every column (anchor, positive, negatives), where the data
            names them (a BEIR split's query and document ids, a file's ``anchor_id`` /
            ``positive_id`` / ``negative_id...`` columns); a precomputed teacher is looked up by them.
    """

    anchors: list[str]
    positives: list[str]
    negatives: tuple[list[str], ...] = ()
    positive_keys: list[str] | None = None
    column_ids: tuple[list[str], ...] | None = None

    def __len__(self) -> int:
        return len(self.anchors)

    @property
    def keys(self) -> list[str]:
        return self.positive_keys if self.positive_keys is not None else self.positives


def _negative_columns(columns: list[str]) -> list[str]:
    names = (c for c in columns if c == "negative" or (c.startswith("negative_") and not c.startswith("negative_id")))
    return sorted(names, key=lambda c: (len(c), c))


def _from_rows(path: Path, rows: list[tuple[int, dict]]) -> Pairs:
    if not rows:
        raise MrlError(f"{path}: no training pairs found")
    columns = list(rows[0][1])
    for needed in ("anchor", "positive"):
        if needed not in columns:
            raise MrlError(f"{path}: missing column {needed!r} (found: {', '.join(columns)})")
    neg_cols = _negative_columns(columns)
    text_cols = ["anchor", "positive", *neg_cols]
    id_cols = [c.replace("negative", "negative_id", 1) if c.startswith("negative") else f"{c}_id" for c in text_cols]
    with_ids = all(c in columns for c in id_cols)
    out: dict[str, list[str]] = {c: [] for c in text_cols + (id_cols if with_ids else [])}
    for lineno, row in rows:
        for c in out:
            value = row.get(c)
            if c in id_cols and isinstance(value, int) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not value.strip():
                raise MrlError(f"{path}:{lineno}: column {c!r} must be a non-empty string, got {value!r}")
            out[c].append(value)
    ids = tuple(out[c] for c in id_cols) if with_ids else None
    return Pairs(out["anchor"], out["positive"], tuple(out[c] for c in neg_cols), column_ids=ids)


def csv_rows(path: Path) -> list[tuple[int, dict]]:
    """``(line, row)`` of a UTF-8 CSV file; a repeated header or another encoding is named."""
    try:
        with open_text(path) as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            repeated = sorted({c for c in header if header.count(c) > 1})
            if repeated:
                raise MrlError(f"{path}:1: column {repeated[0]!r} appears twice in the header; each column once")
            return [(i + 2, row) for i, row in enumerate(reader)]
    except UnicodeDecodeError as e:
        raise MrlError(f"{path}: not UTF-8 text ({e.reason} at byte {e.start}; a latin-1 file?): save it as "
                       "UTF-8") from None


def load_pairs(path: str | Path) -> Pairs:
    """Read pairs or triplets from ``.jsonl[.gz]``, ``.csv`` or ``.parquet``."""
    path = Path(path)
    if not path.is_file():
        raise MrlError(f"pairs file not found: {path}")
    suffixes = "".join(path.suffixes[-2:]) if path.suffix == ".gz" else path.suffix
    if suffixes in (".jsonl", ".jsonl.gz", ".json"):
        return _from_rows(path, list(read_jsonl(path)))
    if suffixes in (".csv", ".csv.gz"):
        return _from_rows(path, csv_rows(path))
    if suffixes == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise MrlError("reading parquet needs pyarrow: pip install 'mrl[parquet]'") from None
        try:
            table = pq.read_table(path).to_pylist()
        except Exception as e:  # pyarrow raises several unrelated types for bad files
            raise MrlError(f"{path}: not a readable parquet file ({e})") from None
        return _from_rows(path, [(i + 1, row) for i, row in enumerate(table)])
    raise MrlError(f"{path}: unknown pairs format {suffixes!r} (use .jsonl, .jsonl.gz, .csv or .parquet)")


def pairs_from_beir(path: str | Path, split: str = "train") -> Pairs:
    """Every (query, relevant document) of a BEIR split as a training pair."""
    ds = load_beir(path, split)
    anchors, positives, keys, qids = [], [], [], []
    for qid, judged in ds.qrels.items():
        for doc_id, rel in judged.items():
            if rel > 0:
                anchors.append(ds.queries[qid])
                positives.append(ds.corpus[doc_id])
                keys.append(doc_id)
                qids.append(qid)
    return Pairs(anchors, positives, (), keys, (qids, keys))


def load_training_data(path: str | Path, split: str = "train") -> Pairs:
    """A BEIR folder (its ``split``) or a pairs/triplets file."""
    return pairs_from_beir(path, split) if Path(path).is_dir() else load_pairs(path)
