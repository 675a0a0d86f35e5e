"""Which class implements each kind of check: built-in kinds in a table, imported lazily; other kinds from
the entry-point group ``pueue_watcher.checks`` (a plug-in package declares
``[project.entry-points."pueue_watcher.checks"] mykind = "mypackage.module:MyCheck"``).

A check class is built from its configuration: ``MyCheck(config)``, where ``config`` is the validated
``[[checks]]`` entry (a :class:`checks.config.PluginCheckConfig` for plug-ins, extra keys included).
"""

from __future__ import annotations

import importlib
from importlib.metadata import entry_points
from typing import Any, cast

from checks.base import Check
from checks.config import CheckConfig

ENTRY_POINT_GROUP = "pueue_watcher.checks"

BUILT_IN: dict[str, str] = {
    "negatives": "checks.clickhouse.negatives:NegativesCheck",
    "duplicates": "checks.clickhouse.duplicates:DuplicatesCheck",
    "null_coverage": "checks.clickhouse.null_coverage:NullCoverageCheck",
    "sql": "checks.clickhouse.custom_sql:CustomSqlCheck",
}


class UnknownCheckKind(ValueError):
    pass


def build(config: CheckConfig) -> Check:
    """The check object for one ``[[checks]]`` entry."""
    factory = _factory(config.kind)
    return cast(Check, factory(config))


def _factory(kind: str) -> Any:
    target = BUILT_IN.get(kind)
    if target is not None:
        module, _, name = target.partition(":")
        return getattr(importlib.import_module(module), name)
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name == kind:
            return entry.load()
    raise UnknownCheckKind(
        f"no check of kind {kind!r}: built-in kinds are {', '.join(BUILT_IN)}; "
        f"plug-ins register in the entry-point group {ENTRY_POINT_GROUP!r}"
    )
