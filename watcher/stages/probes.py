"""Stage probes: the host's probe values (load, memory, swap), rates against the last sample, and breaches
that last long enough, reported once (``watcher/probes/health.py``)."""

from __future__ import annotations

import time
from collections.abc import Mapping

from watcher.config import ProbesConfig
from watcher.cycle import Cycle
from watcher.events import probe_change
from watcher.probes.health import BreachTracker, assessed, breaches, metrics, rates
from watcher.probes.proc import ProbeSample
from watcher.store import Store


class Probes:
    name = "probes"
    always = False

    def __init__(self, host: str, store: Store, settings: ProbesConfig, breaches: BreachTracker) -> None:
        self.host = host
        self.store = store
        self.settings = settings
        self.breaches = breaches  # shared by the hosts: the daemon's view of every breach in force
        self._last: tuple[float, ProbeSample] | None = None  # the last sample, for rates
        self.latest: Mapping[str, float | None] = {}  # the latest values, kept across polls without probes

    def reset(self) -> None:
        """Nothing to forget: the samples are the host's, not the store's."""

    async def run(self, cycle: Cycle) -> None:
        sample = cycle.result.probes
        if sample is not None:
            now = time.monotonic()
            previous = self._last
            rate = rates(previous[1] if previous else None, sample, now - previous[0] if previous else 0.0)
            self._last = (now, sample)
            self.latest = metrics(sample, rate)
            found = breaches(sample, rate, self.settings)
            changes = self.breaches.update(self.host, found, assessed(sample, rate))
            events = [probe_change(self.host, c.kind, c.key, c.reason, cycle.result.at) for c in changes]
            if events:
                await self.store.commit(self.host, events=events)
                cycle.outcome.events += events
        cycle.health = self.latest
