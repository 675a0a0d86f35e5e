"""``kind = "negatives"``: rows where a column that can never be negative is below zero."""

from __future__ import annotations

from checks.clickhouse import queries
from checks.clickhouse.table_check import TableCheck
from checks.config import NegativesConfig


class NegativesCheck(TableCheck):
    kind = "negatives"

    def __init__(self, config: NegativesConfig) -> None:
        super().__init__(config, queries.negatives(config))
