"""``kind = "null_coverage"``: NULLs in columns that must be filled: their number, or the worst ratio."""

from __future__ import annotations

from checks.clickhouse import queries
from checks.clickhouse.table_check import TableCheck
from checks.config import NullCoverageConfig


class NullCoverageCheck(TableCheck):
    kind = "null_coverage"

    def __init__(self, config: NullCoverageConfig) -> None:
        super().__init__(config, queries.null_coverage(config))
