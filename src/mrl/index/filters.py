"""Payload filters: the Qdrant-style grammar, parsed once; each backend compiles the parsed form.

>>> f = parse_filter({"must": [{"key": "section", "match": {"value": "utils"}},
...                            {"key": "year", "range": {"gte": 2020}}],
...                   "must_not": [{"key": "lang", "match": {"any": ["de", "fr"]}}]})
>>> mask = evaluate(f, payloads)  # (n,) bool: the rows the filter lets through

A filter holds ``must`` (all hold), ``must_not`` (none holds) and ``should`` (at least one holds,
when given) lists of conditions. A condition is ``{"key": K, "match": {"value": V}}`` (V a
string, integer or boolean), ``{"key": K, "match": {"any": [V, ...]}}``,
``{"key": K, "range": {"gt" | "gte" | "lt" | "lte": number, ...}}``, or a nested filter. A key
is a payload field; dots walk into objects (``"meta.year"``); brackets, double quotes and backslashes
are refused in keys (Qdrant's key paths cannot hold them). A match against a list holds when
any element matches (as in Qdrant); a missing field matches nothing (so ``must_not`` lets it
through).

Where a payload holds a field of another type than a filter compares it with (a range on a
string field, a string match on a number field), the filter is refused naming the key and the
value: :func:`check_types` does this against :func:`payload_types`, the types seen per key,
which every backend records as it stores payloads. A filter on an index that never stored a
payload is refused by name (it could only match nothing, or everything for a ``must_not``).

Backends compile the parsed form themselves: :func:`evaluate` gives the mrl backend and the
test fake a boolean mask over their rows; Qdrant gets its own filter model; Postgres a ``WHERE``
with bound parameters.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mrl.errors import MrlError

Scalar = str | int | bool
RANGE_OPS = ("gt", "gte", "lt", "lte")
CLAUSES = ("must", "must_not", "should")
MAX_DEPTH = 4  # nested must/should: "simple" nesting only
MAX_CONDITIONS = 256


@dataclass(frozen=True)
class Match:
    """``key`` equals one of ``values`` (``match.value`` is one value, ``match.any`` several)."""

    key: str
    values: tuple[Scalar, ...]
    any: bool = False  # written as ``any`` (kept for the way a backend spells it)

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))


@dataclass(frozen=True)
class Range:
    """``key`` is a number within the given bounds (``None``: no bound)."""

    key: str
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None

    @property
    def path(self) -> tuple[str, ...]:
        return tuple(self.key.split("."))

    def bounds(self) -> dict[str, float]:
        return {op: v for op in RANGE_OPS if (v := getattr(self, op)) is not None}


@dataclass(frozen=True)
class Filter:
    """``must`` all hold, no ``must_not`` holds, and (when given) at least one ``should`` holds."""

    must: tuple[Condition, ...] = ()
    must_not: tuple[Condition, ...] = ()
    should: tuple[Condition, ...] = ()

    def conditions(self) -> Iterable[Match | Range]:
        """Every leaf condition, nested ones included."""
        for c in (*self.must, *self.must_not, *self.should):
            if isinstance(c, Filter):
                yield from c.conditions()
            else:
                yield c

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (what :func:`parse_filter` reads)."""
        return {name: [_condition_dict(c) for c in getattr(self, name)] for name in CLAUSES if getattr(self, name)}


Condition = Match | Range | Filter


def _condition_dict(c: Condition) -> dict[str, Any]:
    if isinstance(c, Filter):
        return c.to_dict()
    if isinstance(c, Match):
        return {"key": c.key, "match": {"any": list(c.values)} if c.any else {"value": c.values[0]}}
    return {"key": c.key, "range": c.bounds()}


# ---------------------------------------------------------------------------------------------- parsing
def parse_filter(obj: Any, where: str = "filter") -> Filter | None:
    """The parsed form of a filter given as a dict or a JSON string; ``None`` for no filter (``None``,
    ``{}``, empty clauses). Raises :class:`MrlError` naming the bad part (``filter.must[1].range``)."""
    if obj is None:
        return None
    if isinstance(obj, Filter):
        return obj if (obj.must or obj.must_not or obj.should) else None
    if isinstance(obj, (str, bytes)):
        try:
            obj = json.loads(obj)
        except ValueError as e:
            raise MrlError(f"{where}: not valid JSON ({e})") from None
    parsed = _parse_clauses(obj, where, 0, [0])
    return parsed if (parsed.must or parsed.must_not or parsed.should) else None


def _parse_clauses(obj: Any, where: str, depth: int, count: list[int]) -> Filter:
    if not isinstance(obj, Mapping):
        raise MrlError(f"{where}: expected an object with must, must_not or should, got {_shown(obj)}")
    unknown = [k for k in obj if k not in CLAUSES]
    if unknown:
        raise MrlError(f"{where}: unknown clause {unknown[0]!r} (expected {', '.join(CLAUSES)})")
    if depth > MAX_DEPTH:
        raise MrlError(f"{where}: filters nest at most {MAX_DEPTH} levels deep")
    parts: dict[str, tuple[Condition, ...]] = {}
    for name in CLAUSES:
        items = obj.get(name, [])
        if items is None:
            items = []
        if isinstance(items, Mapping):  # Qdrant takes a single condition too
            items = [items]
        if not isinstance(items, list):
            raise MrlError(f"{where}.{name}: expected a list of conditions, got {_shown(items)}")
        parts[name] = tuple(_parse_condition(c, f"{where}.{name}[{i}]", depth, count) for i, c in enumerate(items))
    return Filter(**parts)


def _parse_condition(obj: Any, where: str, depth: int, count: list[int]) -> Condition:
    count[0] += 1
    if count[0] > MAX_CONDITIONS:
        raise MrlError(f"{where}: a filter holds at most {MAX_CONDITIONS} conditions")
    if isinstance(obj, Mapping) and "key" not in obj and set(obj) & set(CLAUSES):
        return _parse_clauses(obj, where, depth + 1, count)
    if not isinstance(obj, Mapping) or "key" not in obj:
        raise MrlError(f"{where}: a condition is {{\"key\": K, \"match\": ...}} or {{\"key\": K, \"range\": ...}}, "
                       f"got {_shown(obj)}")
    key = _key(obj["key"], where)
    ops = [k for k in obj if k != "key"]
    if len(ops) != 1 or ops[0] not in ("match", "range"):
        bad = next((k for k in ops if k not in ("match", "range")), None)
        what = f"unknown operator {bad!r}" if bad is not None else "needs exactly one of match or range"
        raise MrlError(f"{where} (key {key!r}): {what} (expected match or range)")
    if ops[0] == "match":
        return _parse_match(key, obj["match"], f"{where}.match")
    return _parse_range(key, obj["range"], f"{where}.range")


def _key(key: Any, where: str) -> str:
    if not isinstance(key, str) or not key:
        raise MrlError(f"{where}.key: expected a non-empty string, got {_shown(key)}")
    if any(not part for part in key.split(".")) or any(c in key for c in '[]"\\'):
        raise MrlError(f"{where}.key {key!r}: a key is field names joined by dots (no empty part, no brackets, "
                       "quotes or backslashes: Qdrant's key paths cannot hold them)")
    return key


def _parse_match(key: str, obj: Any, where: str) -> Match:
    if not isinstance(obj, Mapping) or len(obj) != 1 or next(iter(obj)) not in ("value", "any"):
        bad = next((k for k in obj if k not in ("value", "any")), None) if isinstance(obj, Mapping) else None
        what = f"unknown operator {bad!r}" if bad is not None else f"got {_shown(obj)}"
        raise MrlError(f"{where} (key {key!r}): {what}; expected {{\"value\": V}} or {{\"any\": [V, ...]}}")
    if "value" in obj:
        return Match(key, (_scalar(obj["value"], f"{where}.value", key),))
    values = obj["any"]
    if not isinstance(values, list) or not values:
        raise MrlError(f"{where}.any (key {key!r}): expected a non-empty list of values, got {_shown(values)}")
    return Match(key, tuple(_scalar(v, f"{where}.any[{i}]", key) for i, v in enumerate(values)), any=True)


def _scalar(v: Any, where: str, key: str) -> Scalar:
    if isinstance(v, (str, bool)) or (isinstance(v, int) and abs(v) < 2**63):
        return v
    raise MrlError(f"{where} (key {key!r}): a match value is a string, an integer or a boolean, got {_shown(v)} "
                   "(use a range for other numbers)")


def _parse_range(key: str, obj: Any, where: str) -> Range:
    if not isinstance(obj, Mapping) or not obj:
        raise MrlError(f"{where} (key {key!r}): expected an object of {', '.join(RANGE_OPS)}, got {_shown(obj)}")
    bounds: dict[str, float] = {}
    for op, v in obj.items():
        if op not in RANGE_OPS:
            raise MrlError(f"{where} (key {key!r}): unknown operator {op!r} (expected {', '.join(RANGE_OPS)})")
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v):
            raise MrlError(f"{where}.{op} (key {key!r}): a range bound is a finite number, got {_shown(v)}")
        bounds[op] = float(v)
    return Range(key, **bounds)


def _shown(v: Any) -> str:
    text = json.dumps(v, default=str) if not isinstance(v, Filter) else "a filter"
    return text if len(text) <= 80 else text[:77] + "..."


# ---------------------------------------------------------------------------------------------- types
def json_type(v: Any) -> str:
    """The JSON type name of a payload value (``bool`` apart from numbers, as JSON has it)."""
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, str):
        return "string"
    if v is None:
        return "null"
    return "array" if isinstance(v, list) else "object"


def scalars(payload: Mapping[str, Any]) -> Iterator[tuple[str, Any, bool]]:
    """Every scalar value of ``payload``: ``(dotted key, value, whether it sat in a list)``. Objects are
    walked into; a list's scalar elements count as the field's values (objects in lists are not walked)."""
    for k, v in payload.items():
        if isinstance(v, Mapping):
            yield from ((f"{k}.{path}", x, listed) for path, x, listed in scalars(v))
        elif isinstance(v, list):
            yield from ((k, x, True) for x in v if not isinstance(x, (Mapping, list)))
        else:
            yield k, v, False


def payload_types(payloads: Iterable[Mapping[str, Any] | None],
                  into: dict[str, dict[str, Any]] | None = None) -> dict[str, dict[str, Any]]:
    """``{key: {type: an example value}}`` of every field (dotted paths into objects; a list's
    elements count as the field's values), merged into ``into`` when given."""
    out = into if into is not None else {}
    for p in payloads:
        for path, x, _ in scalars(p or {}):
            out.setdefault(path, {}).setdefault(json_type(x), x)
    return out


def check_types(f: Filter | None, types: Mapping[str, Mapping[str, Any]] | None, where: str = "the index") -> None:
    """Refuse ``f`` where it compares a field with a value of another type than the payloads hold
    (naming the key and a stored value), or when the index stores no payloads at all."""
    if f is None:
        return
    if not types:
        raise MrlError(f"filter: {where} stores no payloads, so no filter can apply; build or add with "
                       "--payload (HTTP: \"payloads\" on /upsert) first")
    for c in f.conditions():
        seen = types.get(c.key)
        if not seen:
            continue  # a field no payload has: matches nothing
        wanted = {"number"} if isinstance(c, Range) else {json_type(v) for v in c.values}
        if not wanted & set(seen) and set(seen) - {"null"}:
            have, example = next((t, v) for t, v in seen.items() if t != "null")
            what = f"range {c.bounds()}" if isinstance(c, Range) else f"match {_shown(c.values[0])}"
            raise MrlError(f"filter on key {c.key!r}: {what} compares with a {', '.join(sorted(wanted))}, but "
                           f"the payloads hold {have} values there (e.g. {_shown(example)})")


# ---------------------------------------------------------------------------------------------- evaluation
_MISSING = object()


def _get(payload: Mapping[str, Any] | None, path: tuple[str, ...]) -> Any:
    v: Any = payload
    for part in path:
        if not isinstance(v, Mapping) or part not in v:
            return _MISSING
        v = v[part]
    return v


def _same(x: Any, v: Scalar) -> bool:
    return x == v and isinstance(x, bool) == isinstance(v, bool) and not isinstance(x, float)


def holds(c: Condition, payload: Mapping[str, Any] | None) -> bool:
    """Whether one condition holds for one payload (``None``: a row without a payload)."""
    if isinstance(c, Filter):
        return (all(holds(x, payload) for x in c.must) and not any(holds(x, payload) for x in c.must_not)
                and (not c.should or any(holds(x, payload) for x in c.should)))
    x = _get(payload, c.path)
    items = x if isinstance(x, list) else [x]
    if isinstance(c, Match):
        return any(_same(i, v) for i in items for v in c.values)
    return any(_in_range(c, i) for i in items)


def _in_range(c: Range, x: Any) -> bool:
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return False
    return ((c.gt is None or x > c.gt) and (c.gte is None or x >= c.gte)
            and (c.lt is None or x < c.lt) and (c.lte is None or x <= c.lte))


def evaluate(f: Filter, payloads: Sequence[Mapping[str, Any] | None], table: Table | None = None) -> np.ndarray:
    """The rows of ``payloads`` that ``f`` lets through: ``(n,)`` bool. With ``table`` (the columns of
    the same payloads, kept by the caller), each condition is a numpy comparison on its key's column."""
    if table is None:
        return np.fromiter((holds(f, p) for p in payloads), dtype=bool, count=len(payloads))
    return _mask(f, table)


@dataclass(frozen=True)
class Column:
    """One key's values over every row: numbers, strings and booleans apart; rows holding a list
    (few, as a rule) are evaluated row by row."""

    num: np.ndarray  # float64, NaN where the value is not a number
    whole: np.ndarray  # bool: the value is an integer (a match on a number compares integers only)
    text: np.ndarray  # object: the string, or None
    flag: np.ndarray  # int8: 1 true, 0 false, -1 not a boolean
    lists: np.ndarray  # int64: rows whose value is a list


class Table:
    """The columns of a list of payloads, built per key on first use (a segment keeps one)."""

    def __init__(self, payloads: Sequence[Mapping[str, Any] | None]) -> None:
        self.payloads = payloads
        self._columns: dict[str, Column] = {}

    def column(self, key: str) -> Column:
        if key not in self._columns:
            path = tuple(key.split("."))
            values = [_get(p, path) for p in self.payloads]
            num = np.array([float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else np.nan
                            for v in values])
            whole = np.array([isinstance(v, int) and not isinstance(v, bool) for v in values], bool)
            text = np.array([v if isinstance(v, str) else None for v in values], object)
            flag = np.array([int(v) if isinstance(v, bool) else -1 for v in values], np.int8)
            lists = np.array([i for i, v in enumerate(values) if isinstance(v, list)], np.int64)
            self._columns[key] = Column(num, whole, text, flag, lists)
        return self._columns[key]


_RANGE_OPS = {"gt": np.greater, "gte": np.greater_equal, "lt": np.less, "lte": np.less_equal}


def _mask(c: Condition, table: Table) -> np.ndarray:
    n = len(table.payloads)
    if isinstance(c, Filter):
        out = np.ones(n, bool)
        for x in c.must:
            out &= _mask(x, table)
        for x in c.must_not:
            out &= ~_mask(x, table)
        if c.should:
            out &= np.logical_or.reduce([_mask(x, table) for x in c.should])
        return out
    col = table.column(c.key)
    if isinstance(c, Range):
        with np.errstate(invalid="ignore"):
            out = np.isfinite(col.num)
            for op, bound in c.bounds().items():
                out &= _RANGE_OPS[op](col.num, bound)
    else:
        out = np.zeros(n, bool)
        for v in c.values:
            if isinstance(v, bool):
                out |= col.flag == int(v)
            elif isinstance(v, int):
                out |= col.whole & (col.num == v)
            else:
                out |= col.text == v
    for r in col.lists.tolist():  # a list matches when an element does
        out[r] = holds(c, table.payloads[r])
    return out
