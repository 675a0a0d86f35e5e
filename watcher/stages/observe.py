"""Stage observe: each group's track stepped through the snapshot (``watcher/phases/tracker.py``); the
phases, events, pending checks and gates it leads to committed in one transaction with the tracks.

An unchanged poll is not stepped through (nothing to see) unless a clean's vanished tasks are to be. Phase
alerts beyond ``max_phase_alerts_per_hour`` are folded into one ``phase.flood`` (``watcher/phases/flood.py``);
every phase is still recorded and checked.
"""

from __future__ import annotations

import contextlib

import msgspec
import structlog

from watcher.checking import pending_runs
from watcher.config import Settings
from watcher.cycle import Cycle
from watcher.errors import StoreError
from watcher.events import phase_completed
from watcher.gates import pending_gates
from watcher.metrics import MetricsState
from watcher.phases.flood import AlertBudget, folded
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import HostPoller
from watcher.poll.select import NONE_DROPPED, Dropped
from watcher.records import PhaseRecord
from watcher.store import Store

log = structlog.get_logger("watcher")


class Observe:
    name = "observe"
    always = False

    def __init__(self, host: str, poller: HostPoller, store: Store, settings: Settings,
                 metrics: MetricsState) -> None:  # fmt: skip
        self.host = host
        self.poller = poller
        self.store = store
        self.settings = settings
        self.metrics = metrics
        self._tracks: dict[str, GroupTrack] | None = None  # loaded from the store at the first cycle
        self._first_sight = False
        self._budget = AlertBudget(settings.watcher.max_phase_alerts_per_hour)  # phase alerts (flood.py)
        self._dropped = NONE_DROPPED  # groups left out by the per-host limits at the last poll, as logged

    def reset(self) -> None:
        # The in-memory tracks ran ahead of the store: the next observation starts again from what the store
        # holds (and writes), so no completion is lost.
        self._tracks = None

    @property
    def known(self) -> dict[str, GroupTrack]:
        """The tracks as they stand (empty before the first observation)."""
        return self._tracks or {}

    async def before_poll(self) -> None:
        """The tracked groups come first within the per-host limits (poll/select.py). Only their names: the
        tracks themselves are loaded by the observation, which must run again after a failed commit (a store
        that fails here fails there too, and is reported there)."""
        if self._tracks is None:
            with contextlib.suppress(StoreError):
                self.poller.keep = frozenset(await self.store.load_tracks(self.host))

    async def tracks(self) -> dict[str, GroupTrack]:
        """The tracks, loaded from the store if they are not in memory."""
        if self._tracks is None:
            blobs = await self.store.load_tracks(self.host)
            # A host the store has never seen: groups that are complete already are history, not news.
            self._first_sight = not blobs and self.host not in await self.store.hosts()
            self._tracks = {group: GroupTrack.decode(blob) for group, blob in blobs.items()}
        return self._tracks

    async def run(self, cycle: Cycle) -> None:
        self._report_dropped(cycle.result.dropped)
        if cycle.result.source != "unchanged" or self._tracks is None or cycle.vanished:
            await self._observe(cycle)

    async def _observe(self, cycle: Cycle) -> None:
        result, outcome = cycle.result, cycle.outcome
        snapshot = result.snapshot
        assert snapshot is not None
        tracks = await self.tracks()
        changed: dict[str, bytes | None] = {}
        alerted: list[PhaseRecord] = []
        # A tracked group that the per-host limits leave out (the limit was lowered) is not a removed group.
        for group in sorted((set(snapshot.groups) | set(tracks)) - result.dropped.tracked):
            track = tracks.setdefault(group, GroupTrack())
            stepped = step(
                track,
                self.host,
                group,
                snapshot.group_tasks(group) + tuple(cycle.vanished.get(group, ())),
                result.at,
                first_sight=self._first_sight,
                alert_on_first_sight=self.settings.watcher.alert_on_first_sight,
            )
            if cycle.health:  # the host's health at the boundary goes with the phase
                health = dict(cycle.health)
                stepped.completed = [msgspec.structs.replace(r, probes=health) for r in stepped.completed]
            outcome.phases += stepped.records
            for record in stepped.completed:
                self.metrics.phase_completed(record.host, record.group, record.outcome or "failed", result.at)
            fired = [r for r in stepped.completed if r.fired]
            alerted += fired
            for record in fired:
                outcome.checks += pending_runs(self.settings.checks, record)
                outcome.gates += pending_gates(self.settings.gates, record)
            if group not in snapshot.groups and track.phase is None:
                del tracks[group]  # the group was removed from pueue and nothing of it is pending
                changed[group] = None
            elif stepped.changed:
                changed[group] = track.encode()
        granted = self._budget.take(len(alerted), result.at) if alerted else 0
        outcome.events += [phase_completed(r) for r in alerted[:granted]]
        if alerted[granted:]:
            outcome.events.append(folded(self.host, alerted[granted:], result.at))
        self.poller.keep = frozenset(tracks)
        await self.store.commit(
            self.host,
            digest=self.poller.fingerprint,
            tracks=changed,
            phases=outcome.phases,
            events=outcome.events,
            check_runs=outcome.checks,
            gates=outcome.gates,
        )
        cycle.vanished = {}  # stepped through and committed
        self._first_sight = False
        for record in outcome.phases:
            if record.status == "completed":
                # A failed phase is a warning: it is what an operator reading the log at that level wants.
                emit = log.info if record.outcome == "success" else log.warning
                emit("phase.recorded", host=record.host, group=record.group, phase=record.id,
                     outcome=record.outcome, fired=record.fired)  # fmt: skip

    def _report_dropped(self, dropped: Dropped) -> None:
        """A warning when the per-host limits start (or stop, or change how much they) leave groups out."""
        if dropped == self._dropped:
            return
        limits = self.settings.watcher
        if dropped.total:
            log.warning("host.groups_dropped", host=self.host, over_count=dropped.over_count,
                        long_names=dropped.long_names, max_groups=limits.max_groups,
                        max_group_name=limits.max_group_name)  # fmt: skip
        else:
            log.info("host.groups_within_limits", host=self.host)
        self._dropped = dropped
