"""Payloads as they come in: a list with one JSON object (or ``None``) per id, or a JSON-lines
file with an ``id`` key per line; checked by position and line before anything is written."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from mrl.errors import MrlError


def _shown(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def check_payloads(payloads: Any, n: int, where: str = "payloads") -> list[dict[str, Any] | None]:
    """``n`` payloads (each a JSON object or ``None``), checked by position; JSON-serialisable."""
    if payloads is None:
        return [None] * n
    if not isinstance(payloads, (list, tuple)):
        raise MrlError(f"{where}: expected a list of objects, got {type(payloads).__name__}")
    if len(payloads) != n:
        raise MrlError(f"{where}: {len(payloads)} payloads for {n} ids; give one per id (null for none)")
    out: list[dict[str, Any] | None] = []
    for i, p in enumerate(payloads):
        if p is not None and not isinstance(p, Mapping):
            raise MrlError(f"{where}[{i}]: a payload is a JSON object, got {_shown(p)}")
        try:
            json.dumps(p, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise MrlError(f"{where}[{i}]: not storable as JSON ({e})") from None
        out.append(dict(p) if p is not None else None)
    return out


def read_payload_file(path: Any, ids: Sequence[Any]) -> list[dict[str, Any] | None]:
    """Payloads for ``ids`` from a JSON-lines file (one object per line with an ``id`` key; the
    ``id`` is not stored); ids the file does not name get none. An id not in ``ids``, a line that
    is not an object, or an id named twice is an error naming the line."""
    where = {str(v): i for i, v in enumerate(ids)}
    out: list[dict[str, Any] | None] = [None] * len(ids)
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError as e:
        raise MrlError(f"{path}: cannot read the payload file ({e.strerror or e})") from None
    for no, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError as e:
            raise MrlError(f"{path}:{no}: not valid JSON ({e})") from None
        if not isinstance(obj, dict) or "id" not in obj:
            raise MrlError(f"{path}:{no}: a payload line is a JSON object with an \"id\" key, got {_shown(obj)}")
        key = str(obj.pop("id"))
        if key not in where:
            raise MrlError(f"{path}:{no}: id {key!r} is not among the ids given")
        if out[where[key]] is not None:
            raise MrlError(f"{path}:{no}: id {key!r} has a payload on an earlier line")
        out[where[key]] = check_payloads([obj], 1, f"{path}:{no}")[0]
    return out
