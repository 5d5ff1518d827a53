"""A parsed filter (:mod:`mrl.index.filters`) in Qdrant's own filter model.

User payloads live under ``"p"`` in a point's payload (the string id rides under ``"key"``), so a
condition on ``section`` becomes one on ``p.section``; Qdrant walks dotted keys into objects and
matches any element of a list, as :func:`mrl.index.filters.evaluate` does. qdrant-edge and
qdrant-client spell the model alike but in their own classes: :class:`Models` names them.

Booleans: qdrant-edge-py 0.x turns ``MatchValue(True)`` into the integer 1 (it then matches
``1``, never ``true``), so every boolean field is also stored as the string ``"true"`` or
``"false"`` under ``"pb"`` (:func:`bool_shadow`), and a boolean match reads that copy; on both
engines, so one collection answers alike whichever client reads it.

Payload indexes (:func:`field_indexes`): every field of one kind gets the index Qdrant's filtered
search uses (a keyword, integer or float index), created before the points that carry it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from mrl.index.filters import Condition, Filter, Match, scalars

PREFIX = "p"  # where user payloads live in a point's payload
BOOLS = "pb"  # the boolean fields of a payload as "true" / "false" strings


def bool_shadow(payload: Any) -> Any:
    """The boolean fields of ``payload`` (dotted paths kept as nesting) as strings; ``None`` when none."""
    if isinstance(payload, bool):
        return "true" if payload else "false"
    if isinstance(payload, list):
        items = [bool_shadow(v) for v in payload if isinstance(v, bool)]
        return items or None
    if isinstance(payload, dict):
        out = {k: v for k, v in ((k, bool_shadow(v)) for k, v in payload.items()) if v is not None}
        return out or None
    return None


@dataclass(frozen=True)
class Models:
    """One engine's filter classes."""

    filter: Any
    field: Any
    value: Any
    any: Any
    range: Any


def to_qdrant(f: Filter, m: Models) -> Any:
    """``f`` as ``m.filter`` (nested filters stay nested)."""
    def part(items: tuple[Condition, ...]) -> list[Any] | None:
        return [_condition(c, m) for c in items] or None

    return m.filter(must=part(f.must), must_not=part(f.must_not), should=part(f.should))


def _path(key: str) -> str:
    """A dotted key in Qdrant's path syntax: a part that is not a plain name is quoted (the grammar
    refuses the quotes and backslashes Qdrant cannot escape)."""
    return ".".join(p if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", p) else f'"{p}"' for p in key.split("."))


def _condition(c: Condition, m: Models) -> Any:
    if isinstance(c, Filter):
        return to_qdrant(c, m)
    key = f"{PREFIX}.{_path(c.key)}"
    if not isinstance(c, Match):
        return m.field(key=key, range=m.range(**c.bounds()))
    # Qdrant's match-any takes strings or integers, not both and no booleans: one condition per group
    groups: list[Any] = []
    strings = [v for v in c.values if isinstance(v, str)]
    ints = [v for v in c.values if isinstance(v, int) and not isinstance(v, bool)]
    for values in (strings, ints):
        if len(values) == 1:
            groups.append(m.field(key=key, match=m.value(value=values[0])))
        elif values:
            groups.append(m.field(key=key, match=m.any(any=values)))
    groups += [m.field(key=f"{BOOLS}.{_path(c.key)}", match=m.value(value="true" if v else "false"))
               for v in dict.fromkeys(v for v in c.values if isinstance(v, bool))]
    return groups[0] if len(groups) == 1 else m.filter(should=groups)


# ---------------------------------------------------------------------------------------- payload indexes
_SCHEMAS = {frozenset({"keyword"}): "keyword", frozenset({"integer"}): "integer", frozenset({"float"}): "float",
            frozenset({"integer", "float"}): "float"}


def field_kinds(payloads: Iterable[Mapping[str, Any] | None],
                into: Mapping[str, Sequence[str]] | None = None) -> dict[str, list[str]]:
    """``{dotted key: sorted kinds}`` of the payloads' fields (``keyword``, ``integer``, ``float``, ``bool``;
    a list's elements count as the field's values), merged into ``into`` when given."""
    out: dict[str, set[str]] = {k: set(v) for k, v in (into or {}).items()}
    for p in payloads:
        for path, x, _ in scalars(p or {}):
            kind = ("bool" if isinstance(x, bool) else "integer" if isinstance(x, int) else
                    "float" if isinstance(x, float) else "keyword" if isinstance(x, str) else None)
            if kind is not None:
                out.setdefault(path, set()).add(kind)
    return {k: sorted(v) for k, v in out.items()}


def field_indexes(kinds: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """The payload indexes Qdrant should hold for fields of these kinds: ``{path: schema}``.

    Strings get a keyword index, integers an integer index (match and range), other numbers a float
    one, booleans a keyword index on their string copy; a field of mixed kinds, or whose key needs
    quoting in Qdrant's path syntax, gets none (its filters still work, by reading the payloads).
    """
    out: dict[str, str] = {}
    for key, found in kinds.items():
        if not all(re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", part) for part in key.split(".")):
            continue
        schema = _SCHEMAS.get(frozenset(found) - {"bool"})
        if schema is not None:
            out[f"{PREFIX}.{key}"] = schema
        if "bool" in found:
            out[f"{BOOLS}.{key}"] = "keyword"
    return out


def index_changes(before: Mapping[str, str], after: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """``(to create, to drop)``: a field whose kind changed is dropped and created again."""
    create = {path: schema for path, schema in after.items() if before.get(path) != schema}
    drop = [path for path in before if path not in after or path in create]
    return create, drop
