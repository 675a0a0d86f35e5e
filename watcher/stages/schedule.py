"""Stage schedule: when to poll the host next (``watcher/schedule.py``: adaptive while a group ends, backoff
while the host fails). Each change of a failing host's wait is logged, not every failed poll."""

from __future__ import annotations

import structlog

from watcher.config import WatcherSection
from watcher.cycle import Cycle
from watcher.schedule import next_interval, retry_interval
from watcher.stages.availability import Availability

log = structlog.get_logger("watcher")


class Schedule:
    name = "schedule"
    always = True

    def __init__(self, host: str, settings: WatcherSection, availability: Availability) -> None:
        self.host = host
        self.settings = settings
        self.availability = availability  # whose count of failed polls sets the backoff
        self.interval = settings.poll_interval  # seconds until the next poll

    def reset(self) -> None:
        """Nothing to forget: the interval is computed afresh each cycle."""

    async def run(self, cycle: Cycle) -> None:
        result = cycle.result
        if cycle.polled:
            self.interval = next_interval(result.snapshot, self.settings, result.at)
        elif result.ok:
            self.interval = self.settings.poll_interval
        else:
            failures = self.availability.failures
            wait = retry_interval(failures, self.settings)
            if failures == 1 or wait != self.interval:
                log.info("poll.backoff", host=self.host, failures=failures, retry_in=wait)
            self.interval = wait
