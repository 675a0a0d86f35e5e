"""Stage cleaning.vanished: the cleaning's part before the observation. A snapshot taken while a clean ran,
or the first after it, may lack tasks the tracker saw unfinished that succeeded just before the clean removed
them; they are handed to the observation (``Cycle.vanished``) as the successes they were
(``hygiene.vanished_successes``), and counted in the clean's record. The same holds for a clean the last
process started and never saw end (killed meanwhile): its first cycle takes it up (``Cleaning.recover``)."""

from __future__ import annotations

import structlog

from watcher.cycle import Cycle
from watcher.errors import HostTimeout
from watcher.hygiene import vanished_successes
from watcher.stages.cleaning import Cleaning

log = structlog.get_logger("watcher")


class Vanished:
    """See the module's docstring."""

    name = "cleaning.vanished"
    always = False

    def __init__(self, cleaning: Cleaning) -> None:
        self.cleaning = cleaning

    def reset(self) -> None:
        """Nothing kept: the next cycle measures again, against the tracks reloaded from the store."""

    async def run(self, cycle: Cycle) -> None:
        # A poll that ran while a clean was in flight may already show what the clean removed: the correction
        # for it applies to every snapshot from the clean's start until it is settled.
        await self.cleaning.recover()
        clean = self.cleaning.clean
        snapshot = cycle.result.snapshot
        if clean is None or snapshot is None:
            return
        task = clean.task
        if task.done():
            if task.cancelled():
                return
            error = task.exception()
            # It failed or was deferred, so it removed nothing; but a client that ran out of budget may have
            # handed pueued a clean that pueued finishes.
            if not isinstance(error, HostTimeout) if error is not None else not task.result():
                return
        tracks = await self.cleaning.observe.tracks()
        cycle.vanished = vanished_successes(clean.plan, tracks, snapshot, clean.sent_at)
        for group, tasks in cycle.vanished.items():
            clean.vanished[group] = clean.vanished.get(group, 0) + len(tasks)
        if cycle.vanished:
            log.info("state.clean_vanished_successes", host=self.cleaning.host.name,
                     tasks={g: len(ts) for g, ts in cycle.vanished.items()})  # fmt: skip
