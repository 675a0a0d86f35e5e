"""One host's cycle: poll → phases → commit (phases, events, pending checks and gates: one transaction)
→ checks → gates → hygiene.

The cycle holds no policy of its own; each stage lives in the module named after it. Delivery of the
committed events is the outbox's business (``watcher/outbox.py``), after the cycle.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

import msgspec
import structlog

from checks.probes.health import BreachTracker, assessed, breaches, metrics, rates
from checks.probes.proc import ProbeSample
from watcher.checking import ClickHouseHandles, HostAccess, pending_runs, run_checks
from watcher.config import HostConfig, Settings
from watcher.errors import HostError, StoreError
from watcher.events import (
    check_result,
    gate_action,
    host_down,
    host_up,
    phase_completed,
    probe_change,
    state_cleaned,
)
from watcher.gates import apply, decide, pending_gates
from watcher.hygiene import Hygiene
from watcher.metrics import MetricsState
from watcher.phases.records import Event, PhaseRecord
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import HostPoller, PollResult
from watcher.schedule import next_interval, retry_interval
from watcher.store import CheckRun, CleanRecord, GateAction, Store

log = structlog.get_logger("watcher")


@dataclass(slots=True)
class CycleOutcome:
    result: PollResult
    events: list[Event] = field(default_factory=list)
    phases: list[PhaseRecord] = field(default_factory=list)
    checks: list[CheckRun] = field(default_factory=list)
    gates: list[GateAction] = field(default_factory=list)
    clean: CleanRecord | None = None
    error: str | None = None  # a failure after the poll itself (store, clean)


class HostWatch:
    """Everything the daemon keeps about one host between cycles."""

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
        self.store = store
        self.settings = settings
        self.hygiene = hygiene
        self.clickhouse = clickhouse
        self.access = HostAccess(poller.transport)
        self.interval = settings.watcher.poll_interval
        self.breaches = breaches
        self.metrics = metrics or MetricsState()
        self._probe: tuple[float, ProbeSample] | None = None  # the last sample, for rates
        self._failures = 0  # consecutive failed polls
        self._failing_since: datetime | None = None
        self._down: Event | Literal[False] | None = None  # the host.down event in force; None: not loaded
        self._tracks: dict[str, GroupTrack] | None = None  # loaded from the store at the first cycle
        # Whether the store may hold pending checks or gates of this host: unknown (True) at start, then
        # known; an unchanged cycle asks the store nothing (bench/idle.py: the queries were 10 % of its CPU).
        self._maybe_checks = self._maybe_gates = True
        self._first_sight = False
        # The poller holds a snapshot the tracker has not stepped through (the poll after a clean): the next
        # cycle must look at it even when its poll answers "unchanged".
        self._unobserved = False
        self._store_error: str | None = None  # the store's failure in force, logged once (a full disk)

    async def cycle(self) -> CycleOutcome:
        result = await self.poller.poll()
        self.metrics.observe_poll(result, result.at)
        outcome = CycleOutcome(result)
        try:
            await self._availability(result, outcome)
        except StoreError as exc:
            self._store_failed(outcome, exc)
        if not result.ok or result.snapshot is None:
            self._retry_later(result)
            return outcome
        try:
            await self._health(result, outcome)
            if result.source != "unchanged" or self._tracks is None or self._unobserved:
                await self._observe(result, outcome)
            await self._checks(outcome)
            await self._gates(outcome)
            await self._hygiene(result, outcome)
        except StoreError as exc:
            self._store_failed(outcome, exc)
        except HostError as exc:
            outcome.error = str(exc)
            log.warning("state.clean_failed", host=self.host.name, error=str(exc))
        else:
            if self._store_error is not None:
                log.info("store.recovered", host=self.host.name)
                self._store_error = None
        self.interval = next_interval(result.snapshot, self.settings.watcher, result.at)
        return outcome

    def _store_failed(self, outcome: CycleOutcome, exc: StoreError) -> None:
        """A failed write is retried at the next cycle; it is logged when the store starts failing (or fails
        differently), not at every cycle while the disk stays full."""
        # Nothing of the failed write is in the store. Forget the in-memory tracks: they ran ahead of it, and
        # the next observation starts again from what the store holds (and writes), so no completion is lost.
        self._tracks = None
        self._maybe_checks = self._maybe_gates = True
        outcome.error = str(exc)
        if str(exc) != self._store_error:
            log.error("store.write_failed", host=self.host.name, error=str(exc))
        self._store_error = str(exc)

    async def close(self) -> None:
        await self.poller.close()

    def _retry_later(self, result: PollResult) -> None:
        """Back off while the host fails; each change of the wait is logged (not every failed poll)."""
        if result.ok:
            self.interval = self.settings.watcher.poll_interval
            return
        wait = retry_interval(self._failures, self.settings.watcher)
        if self._failures == 1 or wait != self.interval:
            log.info("poll.backoff", host=self.host.name, failures=self._failures, retry_in=wait)
        self.interval = wait

    async def _availability(self, result: PollResult, outcome: CycleOutcome) -> None:
        """``host.down`` after ``down_after`` failed polls in a row (at the first for a refused host key or
        login), once; ``host.up`` once on recovery."""
        if self._down is None:
            last = await self.store.last_event(self.host.name, ("host.down", "host.up"))
            self._down = last if last is not None and last.event == "host.down" else False
        if result.ok:
            self._failures = 0
            if self._down:
                event = host_up(self.host.name, self._down, result.at)
                await self.store.commit(self.host.name, events=[event])
                outcome.events.append(event)
                self._down = False
            return
        self._failures += 1
        if self._failures == 1:
            self._failing_since = result.at
        # A refused host key or login will not heal by itself, and a changed key may be a man in the middle:
        # say so at once rather than after `down_after` polls.
        at_once = result.permanent
        if not self._down and (at_once or self._failures >= self.settings.watcher.down_after):
            event = host_down(self.host.name, self._failing_since or result.at, self._failures, result.reason,
                              result.error)  # fmt: skip
            await self.store.commit(self.host.name, events=[event])
            outcome.events.append(event)
            self._down = event

    async def _health(self, result: PollResult, outcome: CycleOutcome) -> None:
        """Probe values: rates against the last sample, and breaches that last long enough (reported once)."""
        sample = result.probes
        if sample is None:
            return
        now = time.monotonic()
        previous = self._probe
        rate = rates(previous[1] if previous else None, sample, now - previous[0] if previous else 0.0)
        self._probe = (now, sample)
        self.access.latest = metrics(sample, rate)
        found = breaches(sample, rate, self.settings.probes)
        changes = self.breaches.update(self.host.name, found, assessed(sample, rate))
        events = [probe_change(self.host.name, c.kind, c.key, c.reason, result.at) for c in changes]
        if events:
            await self.store.commit(self.host.name, events=events)
            outcome.events += events

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
        self._unobserved = False
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
            if self.access.latest:  # the host's health at the boundary goes with the phase
                health = dict(self.access.latest)
                stepped.completed = [msgspec.structs.replace(r, probes=health) for r in stepped.completed]
            outcome.phases += stepped.records
            for record in stepped.completed:
                self.metrics.phase_completed(record.host, record.group, record.outcome or "failed", result.at)
            fired = [r for r in stepped.completed if r.fired]
            outcome.events += [phase_completed(r) for r in fired]
            for record in fired:
                outcome.checks += pending_runs(self.settings.checks, record)
                outcome.gates += pending_gates(self.settings.gates, record)
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
            check_runs=outcome.checks,
            gates=outcome.gates,
        )
        self._first_sight = False
        for record in outcome.phases:
            if record.status == "completed":
                log.info("phase.recorded", host=record.host, group=record.group, phase=record.id,
                         outcome=record.outcome, fired=record.fired)  # fmt: skip

    async def _checks(self, outcome: CycleOutcome) -> None:
        """Run this host's pending checks (committed with their phase, now or before a restart)."""
        if not (self._maybe_checks or outcome.checks):
            return
        pending = await self.store.check_runs(host=self.host.name, pending=True)
        self._maybe_checks = False
        if not pending:
            return
        wanted = {r.phase_id for r in pending}
        phases = {p.id: p for p in await self.store.phases(host=self.host.name) if p.id in wanted}
        done = await run_checks(pending, phases, self.settings.checks, self.clickhouse, self.access)
        history = await self.store.check_runs(host=self.host.name)
        events = []
        for run in done:
            if (event := check_result(run, _previous_status(history, run))) is not None:
                events.append(event)
        await self.store.commit(self.host.name, check_runs=done, events=events)
        for run in done:
            violations = (run.result or {}).get("violations")
            self.metrics.check_result(run.host, run.group, run.check, run.status, violations)
        outcome.checks = done
        outcome.events += events

    async def _gates(self, outcome: CycleOutcome) -> None:
        """Act on this host's pending gates whose checks have all finished."""
        if not (self._maybe_gates or outcome.gates):
            return
        pending = await self.store.gate_actions(host=self.host.name, pending=True)
        waiting = False
        configs = {(g.after, g.start): g for g in self.settings.gates if g.host == self.host.name}
        for action in pending:
            runs = await self.store.check_runs(phase_id=action.phase_id)
            gate = configs.get((action.after, action.start))
            if gate is None or any(r.status == "pending" for r in runs):
                waiting = waiting or gate is not None  # checks still to run: look again next cycle
                continue
            phases = await self.store.phases(host=self.host.name, group=action.after)
            phase = next((p for p in phases if p.id == action.phase_id), None)
            start, reason = decide(gate, phase, runs)
            timeout = self.settings.watcher.host_timeout
            done = await apply(self.host, self.poller.transport, action, start, reason, timeout)
            event = gate_action(done)
            await self.store.commit(self.host.name, gates=[done], events=[event] if event else [])
            outcome.gates.append(done)
            outcome.events += [event] if event else []
        self._maybe_gates = waiting

    async def _blocked_groups(self) -> set[str]:
        """Groups whose last completed phase has a check that did not pass (or has not run yet): hygiene
        leaves them alone, so that the evidence stays on the host."""
        latest: dict[str, str] = {}
        for phase in await self.store.phases(host=self.host.name, status="completed"):
            latest.setdefault(phase.group, phase.id)
        runs = await self.store.check_runs(host=self.host.name)
        return {r.group for r in runs if latest.get(r.group) == r.phase_id and r.status != "ok"}

    async def _hygiene(self, result: PollResult, outcome: CycleOutcome) -> None:
        size = result.state_file_bytes
        if (
            self.settings.hygiene.clean == "off"
            or size is None
            or size <= self.settings.hygiene.max_state_bytes
        ):
            return
        blocked = await self._blocked_groups() if self.settings.checks else set()
        plan = self.hygiene.plan(self.host.name, result, self._tracks or {}, result.at, blocked=blocked)
        if plan is None:
            return
        # The record first: what the clean removes is on file before it is gone.
        await self.store.record_clean(plan)
        timeout = self.settings.watcher.host_timeout
        fingerprint = self.poller.fingerprint or ""
        if not await self.hygiene.clean(self.host, self.poller.transport, plan, timeout, fingerprint):
            # A task was added or finished since this cycle's poll: cleaning now could remove one that was
            # never seen. The next cycle sees the change, and plans again.
            await self.store.record_clean(msgspec.structs.replace(plan, deferred=True))
            log.info("state.clean_deferred", host=self.host.name, groups=plan.groups)
            return
        after = await self.poller.poll()
        # That poll may also have caught changes since this cycle's (a task that finished meanwhile): the
        # poller now knows them, so its next poll says "unchanged"; step through them then.
        self._unobserved = True
        done = plan if plan.dry_run else _with_size(plan, after.state_file_bytes)
        await self.store.record_clean(done)
        if not done.dry_run:
            self.metrics.state_cleaned(self.host.name)
            event = state_cleaned(done)
            await self.store.commit(self.host.name, events=[event])
            outcome.events.append(event)
        outcome.clean = done
        log.info("state.cleaned", host=self.host.name, groups=done.groups, dry_run=done.dry_run,
                 bytes_before=done.bytes_before, bytes_after=done.bytes_after)  # fmt: skip


def _with_size(plan: CleanRecord, size: int | None) -> CleanRecord:
    return msgspec.structs.replace(plan, bytes_after=size)


def _previous_status(history: list[CheckRun], run: CheckRun) -> str | None:
    """The status of the same check's latest result for the same group, before this phase."""
    earlier = [
        r
        for r in history
        if (r.group, r.check) == (run.group, run.check) and r.at is not None and r.phase_id != run.phase_id
    ]
    return max(earlier, key=lambda r: r.at or datetime.min.replace(tzinfo=UTC)).status if earlier else None
