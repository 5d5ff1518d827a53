"""Line readers that name the file and line of any fault."""

from __future__ import annotations

import gzip
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mrl.errors import MrlError


def find_file(folder: Path, stem: str) -> Path:
    """``folder/stem`` or ``folder/stem.gz``, whichever exists."""
    for name in (stem, stem + ".gz"):
        path = folder / name
        if path.is_file():
            return path
    raise MrlError(f"missing file: {folder / stem} (or {stem}.gz)")


def open_text(path: Path):  # noqa: ANN201  (a text file object)
    # utf-8-sig: a byte-order mark some editors write is not part of the first line (or the first CSV header)
    return gzip.open(path, "rt", encoding="utf-8-sig") if path.suffix == ".gz" else open(path, encoding="utf-8-sig")


def read_jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` for each non-blank line of a (gzipped) JSON-lines file."""
    try:
        with open_text(path) as f:
            for lineno, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as e:
                    raise MrlError(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
                if not isinstance(record, dict):
                    raise MrlError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
                yield lineno, record
    except (OSError, EOFError, UnicodeDecodeError) as e:
        if isinstance(e, MrlError):
            raise
        raise MrlError(f"{path}: cannot be read ({e})") from None


def read_lines(path: Path) -> list[str]:
    """The lines of a UTF-8 text file; a byte sequence that is not UTF-8 is an error naming its line."""
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise MrlError(f"{path}: cannot be read ({e.strerror})") from None
    lines = []
    raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark is not part of the first line
    for lineno, chunk in enumerate(raw.split(b"\n"), start=1):
        try:
            lines.append(chunk.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as e:
            raise MrlError(f"{path}:{lineno}: not UTF-8 text ({e.reason} at byte {e.start} of the line)") from None
    if lines and lines[-1] == "":
        lines.pop()  # the newline that ends the last line
    return lines
