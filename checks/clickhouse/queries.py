"""The SQL of the built-in ClickHouse checks, built from their configuration and nothing else.

Each builder returns a :class:`TableQueries`: ``count`` answers one row with one number (the violations),
``samples`` up to ``MAX_SAMPLES`` rows that show where they are (run only when there are violations). Values
never enter the text: the operator's ``where`` keeps its ``%(name)s`` placeholders, filled in by the driver.
Identifiers come from the validated configuration and are always backquoted by :func:`quote`.

The SQL must run on ClickHouse 18.16 (Debian's) as well as on current releases: no ``GROUP BY ALL``, two
arguments at most to ``least``/``greatest``, and aliases only outside the subquery that reads the table, so
that an alias can never shadow a column used by the operator's ``where``.
"""

# ruff: noqa: S608 - this module is where SQL text is built, from validated identifiers only (see above)

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from numbers import Real
from typing import Any

from checks.base import MAX_SAMPLES, QueryResult
from checks.clickhouse.identifiers import quote
from checks.config import DuplicatesConfig, NegativesConfig, NullCoverageConfig


@dataclass(frozen=True, slots=True)
class TableQueries:
    count: str
    samples: str


def negatives(config: NegativesConfig) -> TableQueries:
    """Rows where any column is below zero; samples per ``group_by`` group (most rows first) or, without
    groups, the offending rows themselves (the most negative first)."""
    columns = [quote(c) for c in config.columns]
    negative = "(" + " OR ".join(f"{c} < 0" for c in columns) + ")"
    count = f"SELECT count() FROM {quote(config.table)}{_where(config.where, negative)}"
    if config.group_by:
        groups = ", ".join(quote(g) for g in config.group_by)
        read = ", ".join(dict.fromkeys([*map(quote, config.group_by), *columns]))
        per_column = ", ".join(f"countIf({quote(c)} < 0) AS `{c} < 0`" for c in config.columns)
        samples = (
            f"SELECT {groups}, count() AS `rows`, {per_column}"
            f" FROM (SELECT {read} FROM {quote(config.table)}{_where(config.where, negative)})"
            f" GROUP BY {groups} ORDER BY `rows` DESC, {groups} LIMIT {MAX_SAMPLES}"
        )
    else:
        listed = ", ".join(columns)
        samples = (
            f"SELECT {listed} FROM {quote(config.table)}{_where(config.where, negative)}"
            f" ORDER BY {_nested('least', columns)}, {listed} LIMIT {MAX_SAMPLES}"
        )
    return TableQueries(count=count, samples=samples)


def duplicates(config: DuplicatesConfig) -> TableQueries:
    """Rows beyond the first per key; samples are the most duplicated keys with their number of rows.

    Grouping 10 million (String, DateTime) keys is the slow part, so both queries first keep the rows whose
    64-bit key hash occurs more than once (grouping integers is twice as fast), then count exactly on the
    real keys among them. The filter only ever keeps too much (a hash collision, NULL hashed as the type's
    default), never too little, so the answer is exact. ClickHouse 18.16 cannot hash Nullable values, hence
    ``assumeNotNull``. The key is counted as a tuple, so a NULL in a key is a value like any other (as in
    GROUP BY): a plain ``uniqExact(a, b)`` would skip such rows and count them all as duplicates.
    """
    keys = ", ".join(quote(k) for k in config.key)
    table = quote(config.table)
    hashed = "cityHash64(" + ", ".join(f"assumeNotNull({quote(k)})" for k in config.key) + ")"
    repeated = (
        f"{hashed} IN (SELECT {hashed} FROM {table}{_where(config.where)}"
        f" GROUP BY {hashed} HAVING count() > 1)"
    )
    count = f"SELECT count() - uniqExact(tuple({keys})) FROM {table}{_where(config.where, repeated)}"
    samples = (
        f"SELECT {keys}, count() AS `rows` FROM (SELECT {keys} FROM {table}{_where(config.where, repeated)})"
        f" GROUP BY {keys} HAVING `rows` > 1 ORDER BY `rows` DESC, {keys} LIMIT {MAX_SAMPLES}"
    )
    return TableQueries(count=count, samples=samples)


def null_coverage(config: NullCoverageConfig) -> TableQueries:
    """NULLs in the columns: their total, or with ``ratio`` the worst column's share of the rows (0 when
    there are no rows); samples are one row per column that has NULLs, the most first."""
    columns = [quote(c) for c in config.columns]
    table = quote(config.table)
    nulls = [f"countIf(isNull({c}))" for c in columns]
    if config.ratio:
        value = f"if(count() = 0, 0, {_nested('greatest', nulls)} / count())"
    else:
        value = " + ".join(nulls)
    count = f"SELECT {value} FROM {table}{_where(config.where)}"
    # Validated identifiers hold no quote, so they can be string literals as they are.
    names = "[" + ", ".join(f"'{c}'" for c in config.columns) + "]"
    samples = (
        "SELECT `column`, `nulls`, `rows`, `nulls` / `rows` AS `ratio`"
        f" FROM (SELECT count() AS `rows`, [{', '.join(nulls)}] AS `per_column`, {names} AS `names`"
        f" FROM (SELECT {', '.join(dict.fromkeys(columns))} FROM {table}{_where(config.where)}))"
        " ARRAY JOIN `per_column` AS `nulls`, `names` AS `column`"
        f" WHERE `nulls` > 0 ORDER BY `nulls` DESC, `column` LIMIT {MAX_SAMPLES}"
    )
    return TableQueries(count=count, samples=samples)


def scalar(result: QueryResult) -> float:
    """The number in a one-row, one-column answer (what every ``count`` query returns)."""
    value = single_number(result)
    if value is None:
        shape = f"{len(result.rows)} row(s) of {len(result.columns)} column(s)"
        raise ValueError(f"expected one number, got {shape}")
    return value


def single_number(result: QueryResult) -> float | None:
    """The answer as a number when it is one row with one numeric value, else None.

    NaN (``0 / 0``) is refused: it compares false with every threshold, so it would read as "ok".
    """
    if len(result.rows) != 1 or len(result.columns) != 1 or len(result.rows[0]) != 1:
        return None
    value: Any = result.rows[0][0]
    if not isinstance(value, Real | Decimal):
        return None
    number = float(value)
    if math.isnan(number):
        raise ValueError("the query answered NaN (a division by zero?), not a number of violations")
    return number


def _where(where: str | None, *conditions: str) -> str:
    """`` WHERE a AND (operator's condition)``; the condition gets lines of its own, so that a ``--`` comment
    at its end cannot swallow the closing parenthesis."""
    parts = list(conditions)
    if where is not None and where.strip():
        parts.append(f"(\n{where}\n)")
    return " WHERE " + " AND ".join(parts) if parts else ""


def _nested(function: str, args: Sequence[str]) -> str:
    """``least(a, least(b, c))``: ClickHouse 18.16 takes exactly two arguments."""
    if len(args) == 1:
        return args[0]
    return f"{function}({args[0]}, {_nested(function, args[1:])})"
