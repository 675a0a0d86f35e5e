"""One host's cycle: poll, then the stages in order (``watcher/cycle.py`` says what a stage is, and
``watcher/stages/`` holds them). The cycle holds no policy and no state of its own beyond the store failure
in force: each stage owns its state and its store queries. Delivery of the committed events is the outbox's
business (``watcher/outbox.py``), after the cycle.
"""

from __future__ import annotations

import asyncio
import time

import structlog

from watcher.checking import ClickHouseHandles, HostAccess
from watcher.config import HostConfig, Settings
from watcher.cycle import Cycle, CycleOutcome, Stage
from watcher.errors import StoreError
from watcher.hygiene import Hygiene
from watcher.metrics import MetricsState
from watcher.poll.poller import HostPoller
from watcher.probes.health import BreachTracker
from watcher.stages.availability import Availability
from watcher.stages.checks import Checks
from watcher.stages.cleaning import Cleaning
from watcher.stages.gates import Gates
from watcher.stages.observe import Observe
from watcher.stages.probes import Probes
from watcher.stages.schedule import Schedule
from watcher.stages.vanished import Vanished
from watcher.store import Store

__all__ = ["CycleOutcome", "HostWatch"]

log = structlog.get_logger("watcher")


class HostWatch:
    """One host's stages, and the loop over them that is a cycle."""

    def __init__(
        self,
        host: HostConfig,
        poller: HostPoller,
        store: Store,
        settings: Settings,
        hygiene: Hygiene,
        clickhouse: ClickHouseHandles,
        breaches: BreachTracker,
        metrics: MetricsState | None = None,
    ):
        self.host = host
        self.poller = poller
        self.metrics = metrics or MetricsState()
        name, limits = host.name, settings.watcher
        self.availability = Availability(name, store, limits)
        self.probes = Probes(name, store, settings.probes, breaches)
        self.observe = Observe(name, poller, store, settings, self.metrics)
        access = HostAccess(poller.transport)
        self.checks = Checks(name, store, settings.checks, clickhouse, access, self.metrics)
        self.gates = Gates(host, store, settings.gates, poller.transport, limits.host_timeout)
        self.cleaning = Cleaning(host, poller, store, settings.hygiene, hygiene, self.observe, self.metrics,
                                 checks=bool(settings.checks))  # fmt: skip
        self.schedule = Schedule(name, limits, self.availability)
        self.stages: tuple[Stage, ...] = (self.availability, self.probes, Vanished(self.cleaning),
                                          self.observe, self.checks, self.gates, self.cleaning,
                                          self.schedule)  # fmt: skip
        self._store_error: str | None = None  # the store's failure in force, logged once (a full disk)

    @property
    def interval(self) -> float:
        """Seconds until this host's next poll."""
        return self.schedule.interval

    @property
    def wake(self) -> asyncio.Event:
        """Set when a clean ends: the loop polls at once, not after its sleep."""
        return self.cleaning.wake

    @property
    def cleaning_now(self) -> bool:
        """A clean has started and its outcome is not recorded yet (one taken up after a restart is not
        waited for: its record stays unseen until a poll after its budget settles it)."""
        clean = self.cleaning.clean
        return clean is not None and not clean.recovered

    async def cycle(self, *, clean: bool = True) -> CycleOutcome:
        """One poll and everything it leads to. ``clean``: hygiene may start a clean (``once`` asks for none
        in the cycle that only settles the clean it started)."""
        polled_at = time.monotonic()
        await self.observe.before_poll()
        result = await self.poller.poll()
        self.metrics.observe_poll(result, result.at)
        cycle = Cycle(result, polled_at, clean=clean)
        failed = False
        for stage in self.stages:
            if not stage.always and (failed or not cycle.polled):
                continue
            try:
                await stage.run(cycle)
            except StoreError as exc:
                failed = True
                self._store_failed(cycle.outcome, exc)
        if cycle.polled and not failed and self._store_error is not None:
            log.info("store.recovered", host=self.host.name)
            self._store_error = None
        return cycle.outcome

    def _store_failed(self, outcome: CycleOutcome, exc: StoreError) -> None:
        """A failed write is retried at the next cycle; it is logged when the store starts failing (or fails
        differently), not at every cycle while the disk stays full. Nothing of the failed write is in the
        store: every stage forgets what ran ahead of it."""
        for stage in self.stages:
            stage.reset()
        outcome.error = str(exc)
        if str(exc) != self._store_error:
            log.error("store.write_failed", host=self.host.name, error=str(exc))
        self._store_error = str(exc)

    async def clean_finished(self) -> None:
        """Wait for the clean in flight to end (within its budget); the next cycle records its outcome."""
        await self.cleaning.finished()

    async def stop_cleaning(self, grace: float) -> None:
        """At shutdown: see :meth:`Cleaning.stop`."""
        await self.cleaning.stop(grace)

    async def close(self) -> None:
        await self.cleaning.cancel()
        await self.poller.close()
