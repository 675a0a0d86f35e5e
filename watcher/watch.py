"""One host's cycle: poll → phases → commit (phases and their events, one transaction) → hygiene.

The cycle holds no policy of its own; each stage lives in the module named after it. Delivery of the
committed events is the outbox's business (``watcher/outbox.py``), after the cycle.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import msgspec
import structlog

from watcher.config import HostConfig, Settings
from watcher.errors import HostError, StoreError
from watcher.events import phase_completed
from watcher.hygiene import Hygiene
from watcher.phases.records import Event, PhaseRecord
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import HostPoller, PollResult
from watcher.schedule import next_interval
from watcher.store import CleanRecord, Store

log = structlog.get_logger("watcher")


@dataclass(slots=True)
class CycleOutcome:
    result: PollResult
    events: list[Event] = field(default_factory=list)
    phases: list[PhaseRecord] = field(default_factory=list)
    clean: CleanRecord | None = None
    error: str | None = None  # a failure after the poll itself (store, clean)


class HostWatch:
    """Everything the daemon keeps about one host between cycles."""

    def __init__(
        self, host: HostConfig, poller: HostPoller, store: Store, settings: Settings, hygiene: Hygiene
    ):
        self.host = host
        self.poller = poller
        self.store = store
        self.settings = settings
        self.hygiene = hygiene
        self.interval = settings.watcher.poll_interval
        self._tracks: dict[str, GroupTrack] | None = None  # loaded from the store at the first cycle
        self._first_sight = False

    async def cycle(self) -> CycleOutcome:
        result = await self.poller.poll()
        outcome = CycleOutcome(result)
        if not result.ok or result.snapshot is None:
            self.interval = self.settings.watcher.poll_interval
            return outcome
        try:
            if result.source != "unchanged" or self._tracks is None:
                await self._observe(result, outcome)
            await self._hygiene(result, outcome)
        except StoreError as exc:
            # Nothing of this cycle was written. Forget the in-memory tracks: they ran ahead of the store,
            # and the next cycle starts again from what the store holds, so no completion is lost.
            self._tracks = None
            outcome.error = str(exc)
            log.error("store.write_failed", host=self.host.name, error=str(exc))
        except HostError as exc:
            outcome.error = str(exc)
            log.warning("state.clean_failed", host=self.host.name, error=str(exc))
        self.interval = next_interval(result.snapshot, self.settings.watcher, result.at)
        return outcome

    async def close(self) -> None:
        await self.poller.close()

    async def _tracks_loaded(self) -> dict[str, GroupTrack]:
        if self._tracks is None:
            blobs = await self.store.load_tracks(self.host.name)
            # A host the store has never seen: groups that are complete already are history, not news.
            self._first_sight = not blobs and self.host.name not in await self.store.hosts()
            self._tracks = {group: GroupTrack.decode(blob) for group, blob in blobs.items()}
        return self._tracks

    async def _observe(self, result: PollResult, outcome: CycleOutcome) -> None:
        snapshot = result.snapshot
        assert snapshot is not None
        tracks = await self._tracks_loaded()
        changed: dict[str, bytes | None] = {}
        for group in sorted(set(snapshot.groups) | set(tracks)):
            track = tracks.setdefault(group, GroupTrack())
            stepped = step(
                track,
                self.host.name,
                group,
                snapshot.group_tasks(group),
                result.at,
                first_sight=self._first_sight,
                alert_on_first_sight=self.settings.watcher.alert_on_first_sight,
            )
            outcome.phases += stepped.records
            outcome.events += [phase_completed(r) for r in stepped.completed if r.fired]
            if group not in snapshot.groups and track.phase is None:
                del tracks[group]  # the group was removed from pueue and nothing of it is pending
                changed[group] = None
            elif stepped.changed:
                changed[group] = track.encode()
        await self.store.commit(
            self.host.name,
            digest=self.poller.fingerprint,
            tracks=changed,
            phases=outcome.phases,
            events=outcome.events,
        )
        self._first_sight = False
        for record in outcome.phases:
            if record.status == "completed":
                log.info("phase.recorded", host=record.host, group=record.group, phase=record.id,
                         outcome=record.outcome, fired=record.fired)  # fmt: skip

    async def _hygiene(self, result: PollResult, outcome: CycleOutcome) -> None:
        plan = self.hygiene.plan(self.host.name, result, self._tracks or {}, result.at)
        if plan is None:
            return
        # The record first: what the clean removes is on file before it is gone.
        await self.store.record_clean(plan)
        await self.hygiene.clean(self.host, self.poller.transport, plan, self.settings.watcher.host_timeout)
        after = await self.poller.poll()
        done = plan if plan.dry_run else _with_size(plan, after.state_file_bytes)
        await self.store.record_clean(done)
        outcome.clean = done
        log.info("state.cleaned", host=self.host.name, groups=done.groups, dry_run=done.dry_run,
                 bytes_before=done.bytes_before, bytes_after=done.bytes_after)  # fmt: skip


def _with_size(plan: CleanRecord, size: int | None) -> CleanRecord:
    return msgspec.structs.replace(plan, bytes_after=size)
