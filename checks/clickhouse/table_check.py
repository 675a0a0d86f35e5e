"""What the built-in table checks share: count the violations, fetch samples only when there are some."""

from __future__ import annotations

import time

from checks.base import CheckContext, CheckResult, measured
from checks.clickhouse import queries
from checks.config import DuplicatesConfig, NegativesConfig, NullCoverageConfig

TableConfig = NegativesConfig | DuplicatesConfig | NullCoverageConfig


class TableCheck:
    """A check over one table, defined by its two queries (``checks/clickhouse/queries.py``)."""

    kind: str

    def __init__(self, config: TableConfig, table_queries: queries.TableQueries) -> None:
        self.name = config.name
        self.config = config
        self.queries = table_queries

    async def run(self, ctx: CheckContext) -> CheckResult:
        started = time.perf_counter()
        clickhouse = await ctx.clickhouse(self.config.clickhouse)
        params = ctx.params()
        violations = queries.scalar(await clickhouse.query(self.queries.count, params))
        samples = (await clickhouse.query(self.queries.samples, params)).dicts() if violations > 0 else []
        return measured(self, self.config, violations, samples, self.queries.count, started)
