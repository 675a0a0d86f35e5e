"""Configuration of checks (``[[checks]]``).

Each built-in kind has its own model, chosen by ``kind``; identifiers are validated when the configuration is
loaded, so that a malicious table name never gets near a query. A kind that is not built in belongs to a
plug-in (entry-point group ``pueue_watcher.checks``), which validates its own options when it is loaded.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag, field_validator

from checks.clickhouse.identifiers import identifier, table_name
from watcher.units import Duration

BUILT_IN_KINDS = ("negatives", "duplicates", "null_coverage", "sql")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CheckConfig(_Model):
    name: str = Field(description="Shown in output, metrics and alerts.")
    kind: str
    hosts: list[str] = Field(default_factory=lambda: ["*"], description="Globs of the hosts it runs for.")
    groups: list[str] = Field(default_factory=lambda: ["*"], description="Run when a matching group ends.")
    timeout: Duration = Field(120.0, description="Upper bound of one run; then the result is error.")
    warn_above: float | None = Field(None, description="Warn when the violations exceed this.")
    fail_above: float = Field(0, description="Fail when the violations exceed this.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a check name (letters, digits, . _ -; at most 64)")
        return value


class _ClickHouseCheck(CheckConfig):
    clickhouse: str = Field(description="The name of a [[clickhouse]] entry.")
    table: str = Field(description="table or database.table")
    where: str | None = Field(
        None,
        description="An extra SQL condition, written by the operator. It may use the parameters %(host)s, "
        "%(group)s, %(phase_start)s and %(phase_end)s; values are never pasted into SQL.",
    )

    @field_validator("table")
    @classmethod
    def _table(cls, value: str) -> str:
        return table_name(value)


def _identifiers(values: list[str]) -> list[str]:
    if not values:
        raise ValueError("list at least one column")
    return [identifier(v) for v in values]


class NegativesConfig(_ClickHouseCheck):
    """Rows where any of ``columns`` is below zero; ``group_by`` columns make the samples tell which."""

    kind: Literal["negatives"]
    columns: list[str]
    group_by: list[str] = Field(default_factory=list)

    _columns = field_validator("columns")(classmethod(lambda cls, v: _identifiers(v)))
    _group_by = field_validator("group_by")(classmethod(lambda cls, v: [identifier(x) for x in v]))


class DuplicatesConfig(_ClickHouseCheck):
    """Rows beyond the first per ``key`` (inserts are append-only until OPTIMIZE … FINAL)."""

    kind: Literal["duplicates"]
    key: list[str]

    _key = field_validator("key")(classmethod(lambda cls, v: _identifiers(v)))


class NullCoverageConfig(_ClickHouseCheck):
    """NULLs in required ``columns``: their count, or with ``ratio = true`` the worst column's ratio."""

    kind: Literal["null_coverage"]
    columns: list[str]
    ratio: bool = False

    _columns = field_validator("columns")(classmethod(lambda cls, v: _identifiers(v)))


class SqlConfig(CheckConfig):
    """A custom query: one numeric value (the violations), or rows (each row is a violation)."""

    kind: Literal["sql"]
    clickhouse: str
    sql: str = Field(description="SELECT …; the same %(…)s parameters as `where` are available.")

    @field_validator("sql")
    @classmethod
    def _sql(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("the query is empty")
        return value


class PluginCheckConfig(CheckConfig):
    """A check of a kind provided by a plug-in; its options are validated by the plug-in."""

    model_config = ConfigDict(extra="allow", frozen=True)


def _kind(value: Any) -> str:
    kind = value.get("kind") if isinstance(value, dict) else getattr(value, "kind", None)
    return kind if kind in BUILT_IN_KINDS else "plugin"


AnyCheckConfig = Annotated[
    Annotated[NegativesConfig, Tag("negatives")]
    | Annotated[DuplicatesConfig, Tag("duplicates")]
    | Annotated[NullCoverageConfig, Tag("null_coverage")]
    | Annotated[SqlConfig, Tag("sql")]
    | Annotated[PluginCheckConfig, Tag("plugin")],
    Discriminator(_kind),
]
