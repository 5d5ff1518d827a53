"""A parsed filter (:mod:`mrl.index.filters`) as a SQL condition on the ``payload jsonb`` column.

Every condition is ``jsonb_path_exists(coalesce(payload, '{}'), %s::jsonpath, %s::jsonb)``: the
path and the values are bound parameters (a key becomes a quoted jsonpath member, a value a
jsonpath variable), so no key or value is ever part of the SQL text. jsonpath's lax mode looks into
lists as Qdrant does (``tags`` matches when any element does), and compares only values of the same
JSON type (the string ``"1"`` never equals the number ``1``, a boolean never a number).
``must`` is ``AND``, ``must_not`` ``NOT``, ``should`` ``OR``; a row without a payload matches no
condition, so a ``must_not`` lets it through, as on every backend.
"""

from __future__ import annotations

import json
from typing import Any

from mrl.index.filters import Condition, Filter, Match

_OPS = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def where_sql(f: Filter) -> tuple[Any, list[Any]]:
    """The condition (a :mod:`psycopg.sql` object with ``%s`` placeholders) and its parameters, in order."""
    from psycopg import sql

    params: list[Any] = []
    parts = []
    for name, joiner in (("must", " AND "), ("must_not", " AND "), ("should", " OR ")):
        items = []
        for c in getattr(f, name):
            text, p = _condition(c)
            items.append(sql.SQL("NOT ({})").format(text) if name == "must_not" else text)
            params += p
        if items:
            parts.append(sql.SQL("({})").format(sql.SQL(joiner).join(items)))
    return (sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")), params


def _condition(c: Condition) -> tuple[Any, list[Any]]:
    from psycopg import sql
    from psycopg.types.json import Jsonb

    if isinstance(c, Filter):
        text, params = where_sql(c)
        return sql.SQL("({})").format(text), params
    member = "$" + "".join("." + json.dumps(part, ensure_ascii=False) for part in c.key.split("."))  # $."meta"."year"
    if isinstance(c, Match):
        test = " || ".join(f"@ == $v{i}" for i in range(len(c.values)))
        values: dict[str, Any] = {f"v{i}": v for i, v in enumerate(c.values)}
    else:
        bounds = c.bounds()
        test = " && ".join(f"@ {_OPS[op]} ${op}" for op in bounds)
        values = dict(bounds)
    text = sql.SQL("jsonb_path_exists(coalesce(payload, '{}'::jsonb), %s::jsonpath, %s::jsonb)")
    return text, [f"{member} ? ({test})", Jsonb(values)]
