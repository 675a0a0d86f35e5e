"""``kind = "sql"``: the operator's own SELECT, run as written with the check parameters.

One row holding one number is the number of violations (``SELECT count() FROM … WHERE bad``). Any other
answer is a list of violations, one per row (``SELECT id, reason FROM … WHERE bad``), and its first rows are
the samples. Every row is read into memory: a query that may return many rows should count them instead.
"""

from __future__ import annotations

import time

from checks.base import CheckContext, CheckResult, QueryResult, measured
from checks.clickhouse import queries
from checks.config import SqlConfig


class CustomSqlCheck:
    kind = "sql"

    def __init__(self, config: SqlConfig) -> None:
        self.name = config.name
        self.config = config

    async def run(self, ctx: CheckContext) -> CheckResult:
        started = time.perf_counter()
        clickhouse = await ctx.clickhouse(self.config.clickhouse)
        result = await clickhouse.query(self.config.sql, ctx.params())
        violations, samples = interpret(result)
        return measured(self, self.config, violations, samples, self.config.sql, started)


def interpret(result: QueryResult) -> tuple[float, list[dict[str, object]]]:
    """(violations, samples): one number is the count itself; otherwise each row is a violation."""
    number = queries.single_number(result)
    if number is not None:
        return number, []
    return float(len(result.rows)), result.dicts()
