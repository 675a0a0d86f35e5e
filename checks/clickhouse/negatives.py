"""``kind = "negatives"``: rows where a column that can never be negative is below zero."""

from __future__ import annotations

import time

from checks.base import CheckContext, CheckResult, evaluate
from checks.clickhouse import queries
from checks.config import NegativesConfig


class NegativesCheck:
    kind = "negatives"

    def __init__(self, config: NegativesConfig) -> None:
        self.name = config.name
        self.config = config
        self.queries = queries.negatives(config)

    async def run(self, ctx: CheckContext) -> CheckResult:
        started = time.perf_counter()
        clickhouse = await ctx.clickhouse(self.config.clickhouse)
        params = ctx.params()
        violations = queries.scalar(await clickhouse.query(self.queries.count, params))
        samples = (await clickhouse.query(self.queries.samples, params)).dicts() if violations > 0 else []
        return CheckResult(
            name=self.name,
            kind=self.kind,
            status=evaluate(violations, self.config.warn_above, self.config.fail_above),
            violations=violations,
            threshold={"warn_above": self.config.warn_above, "fail_above": self.config.fail_above},
            samples=samples,
            sql=self.queries.count,
            duration_seconds=time.perf_counter() - started,
        )
