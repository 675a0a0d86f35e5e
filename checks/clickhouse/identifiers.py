"""SQL identifiers from the configuration: validated when the configuration is loaded, quoted when used.

Only plain identifiers are accepted (letters, digits, underscores; a table may be ``database.table``).
Values never go into SQL text: they are query parameters.
"""

from __future__ import annotations

import re

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def identifier(value: str) -> str:
    """Validate a column or database name; raise ValueError with a clear message."""
    if not _IDENTIFIER.fullmatch(value):  # match() would let a trailing newline through ($)
        raise ValueError(f"{_show(value)} is not a plain SQL identifier (letters, digits and _)")
    return value


def table_name(value: str) -> str:
    """Validate ``table`` or ``database.table``."""
    parts = value.split(".")
    if len(parts) > 2 or not all(_IDENTIFIER.fullmatch(part) for part in parts):
        raise ValueError(f"{_show(value)} is not a table name (letters, digits and _; or database.table)")
    return value


def quote(name: str) -> str:
    """Backquote a validated identifier or ``database.table`` for ClickHouse."""
    return ".".join(f"`{part}`" for part in name.split("."))


def _show(value: str) -> str:
    """The value as ASCII, so that a look-alike (a Cyrillic "а" in "bаrs") or an invisible character shows."""
    text = value if len(value) <= 60 else value[:60] + "…"
    return ascii(text)
