"""A parsed filter (:mod:`mrl.index.filters`) as a SQL condition on the ``payload jsonb`` column.

Every condition is ``payload @? %s::jsonpath``: one bound parameter holding a jsonpath whose keys
are quoted members and whose values are JSON literals (``$."meta"."year" ? (@ >= 2010)``), so no
key or value is ever part of the SQL text, and the table's GIN index on ``payload``
(``jsonb_path_ops``) answers the equality tests (``match``): the planner then reads the few rows a
selective filter lets through instead of walking the HNSW graph past every row it drops.
jsonpath's lax mode looks into lists as Qdrant does (``tags`` matches when any element does), and
compares only values of the same JSON type (the string ``"1"`` never equals the number ``1``, a
boolean never a number). ``must`` is ``AND``, ``must_not`` ``NOT``, ``should`` ``OR``; a row without
a payload matches no condition (``NULL``, taken as false under ``NOT``), so a ``must_not`` lets it
through, as on every backend.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from typing import Any

from mrl.index.filters import Condition, Filter, Match, json_type, scalars

SCALAR, LIST = "scalar", "list"

_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def number_fields(payloads: Iterable[Mapping[str, Any] | None],
                  into: Mapping[str, str] | None = None) -> dict[str, str]:
    """``{dotted key: "scalar" | "list"}`` of the fields holding numbers, merged into ``into``: ``"list"``
    once any payload held a list of numbers there."""
    out = dict(into or {})
    for p in payloads:
        for path, x, listed in scalars(p or {}):
            if json_type(x) == "number":
                out[path] = LIST if listed or out.get(path) == LIST else SCALAR
    return out


def ranged(fields: Mapping[str, str] | None) -> frozenset[str]:
    """The keys whose ``range`` a B-tree answers: those that only ever held single numbers."""
    return frozenset(k for k, v in (fields or {}).items() if v == SCALAR)


def where_sql(f: Filter, indexed: Collection[str] = ()) -> tuple[Any, list[Any]]:
    """The condition (a :mod:`psycopg.sql` object with ``%s`` placeholders) and its parameters, in order;
    ``indexed``: the keys with a B-tree (:func:`ranged`)."""
    from psycopg import sql

    params: list[Any] = []
    parts = []
    for name, joiner in (("must", " AND "), ("must_not", " AND "), ("should", " OR ")):
        items = []
        for c in getattr(f, name):
            text, p = _condition(c, indexed)
            items.append(sql.SQL("NOT coalesce({}, false)").format(text) if name == "must_not" else text)
            params += p
        if items:
            parts.append(sql.SQL("({})").format(sql.SQL(joiner).join(items)))
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


def _condition(c: Condition, indexed: Collection[str]) -> tuple[Any, list[Any]]:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    if isinstance(c, Filter):
        text, params = where_sql(c, indexed)
        return sql.SQL("({})").format(text), params
    member = "$" + "".join("." + _literal(part) for part in c.key.split("."))  # $."meta"."year"
    if isinstance(c, Match):
        test = " || ".join(f"@ == {_literal(v)}" for v in c.values)
        return sql.SQL("payload @? %s::jsonpath"), [f"{member} ? ({test})"]
    bounds = c.bounds()
    test = " && ".join(f"@ {_OPS[op]} {_literal(v)}" for op, v in bounds.items())
    if c.key not in indexed:
        return sql.SQL("payload @? %s::jsonpath"), [f"{member} ? ({test})"]
    btree = [sql.SQL("(payload #> %s::text[]) {} %s::jsonb").format(sql.SQL(_OPS[op])) for op in bounds]
    params = [x for v in bounds.values() for x in (c.key.split("."), Jsonb(v))]
    return sql.SQL("(payload @? %s::jsonpath AND {})").format(sql.SQL(" AND ").join(btree)), \
        [f"{member} ? ({test})", *params]


def _literal(value: str | int | float | bool) -> str:
    """A key or value as a jsonpath literal: JSON's own spelling (strings quoted and escaped), which
    jsonpath reads the same way."""
    return json.dumps(value, ensure_ascii=False)
