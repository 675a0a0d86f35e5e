"""Stage availability: ``host.down`` after ``down_after`` failed polls in a row (at the first for a refused
host key or login), once; ``host.up`` once on recovery."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from watcher.config import WatcherSection
from watcher.cycle import Cycle
from watcher.events import host_down, host_up
from watcher.records import Event
from watcher.store import Store


class Availability:
    name = "availability"
    always = True

    def __init__(self, host: str, store: Store, settings: WatcherSection) -> None:
        self.host = host
        self.store = store
        self.settings = settings
        self.failures = 0  # consecutive failed polls
        self._failing_since: datetime | None = None
        self._down: Event | Literal[False] | None = None  # the host.down event in force; None: not loaded

    def reset(self) -> None:
        """Nothing runs ahead of the store here: ``_down`` changes only after its event is committed."""

    async def run(self, cycle: Cycle) -> None:
        result = cycle.result
        if self._down is None:
            last = await self.store.last_event(self.host, ("host.down", "host.up"))
            self._down = last if last is not None and last.event == "host.down" else False
        if result.ok:
            self.failures = 0
            if self._down:
                event = host_up(self.host, self._down, result.at)
                await self.store.commit(self.host, events=[event])
                cycle.outcome.events.append(event)
                self._down = False
            return
        self.failures += 1
        if self.failures == 1:
            self._failing_since = result.at
        # A refused host key or login will not heal by itself, and a changed key may be a man in the middle:
        # say so at once rather than after `down_after` polls.
        if not self._down and (result.permanent or self.failures >= self.settings.down_after):
            event = host_down(self.host, self._failing_since or result.at, self.failures, result.reason,
                              result.error)  # fmt: skip
            await self.store.commit(self.host, events=[event])
            cycle.outcome.events.append(event)
            self._down = event
