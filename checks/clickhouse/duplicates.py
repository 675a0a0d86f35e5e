"""``kind = "duplicates"``: rows beyond the first per key (ClickHouse inserts append; nothing dedupes them
until a merge of a ReplacingMergeTree, or OPTIMIZE … FINAL)."""

from __future__ import annotations

import time

from checks.base import CheckContext, CheckResult, evaluate
from checks.clickhouse import queries
from checks.config import DuplicatesConfig


class DuplicatesCheck:
    kind = "duplicates"

    def __init__(self, config: DuplicatesConfig) -> None:
        self.name = config.name
        self.config = config
        self.queries = queries.duplicates(config)

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
