"""Stage checks: run this host's pending integrity checks (committed with their phase, in this cycle or
before a restart), and commit their results with a ``check.*`` event when a check's status changes."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from checks.config import CheckConfig
from watcher.checking import ClickHouseHandles, HostAccess, run_checks
from watcher.cycle import Cycle
from watcher.events import check_result
from watcher.metrics import MetricsState
from watcher.records import CheckRun
from watcher.store import Store


class Checks:
    name = "checks"
    always = False

    def __init__(self, host: str, store: Store, configs: Sequence[CheckConfig], clickhouse: ClickHouseHandles,
                 access: HostAccess, metrics: MetricsState) -> None:  # fmt: skip
        self.host = host
        self.store = store
        self.configs = configs
        self.clickhouse = clickhouse
        self.access = access  # what a check may read of the host: its probe values and its transport
        self.metrics = metrics
        # Whether the store may hold pending checks of this host: unknown (True) at start, then known; an
        # unchanged cycle asks the store nothing (bench/idle.py: the queries were 10 % of its CPU).
        self._maybe = True

    def reset(self) -> None:
        self._maybe = True

    async def run(self, cycle: Cycle) -> None:
        outcome = cycle.outcome
        if not (self._maybe or outcome.checks):
            return
        pending = await self.store.check_runs(host=self.host, pending=True)
        self._maybe = False
        if not pending:
            return
        wanted = {r.phase_id for r in pending}
        phases = {p.id: p for p in await self.store.phases(host=self.host) if p.id in wanted}
        self.access.latest = cycle.health
        done = await run_checks(pending, phases, self.configs, self.clickhouse, self.access)
        history = await self.store.check_runs(host=self.host)
        events = []
        for run in done:
            if (event := check_result(run, previous_status(history, run))) is not None:
                events.append(event)
        await self.store.commit(self.host, check_runs=done, events=events)
        for run in done:
            violations = (run.result or {}).get("violations")
            self.metrics.check_result(run.host, run.group, run.check, run.status, violations)
        outcome.checks = done
        outcome.events += events


def previous_status(history: Sequence[CheckRun], run: CheckRun) -> str | None:
    """The status of the same check's latest result for the same group, before this phase."""
    earlier = [
        r
        for r in history
        if (r.group, r.check) == (run.group, run.check) and r.at is not None and r.phase_id != run.phase_id
    ]
    return max(earlier, key=lambda r: r.at or datetime.min.replace(tzinfo=UTC)).status if earlier else None
