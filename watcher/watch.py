"""One host's cycle: poll → phases → commit (phases, events, pending checks and gates: one transaction)
→ checks → gates → hygiene.

The cycle holds no policy of its own; each stage lives in the module named after it. Delivery of the
committed events is the outbox's business (``watcher/outbox.py``), after the cycle.
"""

from __future__ import annotations

import asyncio
import contextlib
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
from watcher.errors import HostError, HostTimeout, StoreError
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
from watcher.hygiene import (
    Hygiene,
    candidates,
    completed_bulk,
    settled,
    targets,
    vanished_successes,
    with_vanished,
)
from watcher.metrics import MetricsState
from watcher.phases.flood import AlertBudget, folded
from watcher.phases.records import Event, PhaseRecord
from watcher.phases.tracker import GroupTrack, step
from watcher.poll.poller import HostPoller, PollResult
from watcher.poll.select import NONE_DROPPED, Dropped
from watcher.pueue.model import Task
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


@dataclass(slots=True)
class _Clean:
    """A clean that runs beside the host's polls, until the first poll after it has been looked at."""

    plan: CleanRecord
    targets: frozenset[str]  # what it means to remove (tracker.key_of)
    sent_at: datetime  # the watcher's clock when the command was sent
    task: asyncio.Task[bool]  # Hygiene.clean: True ran, False deferred
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # monotonic, when the command returned (or failed)
    # Tasks it removed that the plan did not name: seen unfinished, they succeeded in the moment before
    # pueued took the clean (hygiene.vanished_successes); per group, for the record.
    vanished: dict[str, int] = field(default_factory=dict)


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
        # Hygiene: the clean in flight (at most one per host), and the tasks that vanished across it as the
        # successes they were, to step through with the next snapshot (hygiene.vanished_successes).
        self._clean: _Clean | None = None
        self._vanished: dict[str, list[Task]] = {}
        # Whether the last clean was a bulk removal that went through, whose rest the next plan takes
        # (hygiene.completed_bulk); None: not read from the store yet (a `once` after the bulk's `once`).
        self._follow_up: bool | None = None
        self.wake = asyncio.Event()  # set when a clean ends: the loop polls at once, not after its sleep
        self._store_error: str | None = None  # the store's failure in force, logged once (a full disk)
        self._budget = AlertBudget(settings.watcher.max_phase_alerts_per_hour)  # phase alerts (flood.py)
        self._dropped = NONE_DROPPED  # groups left out by the per-host limits at the last poll, as logged

    async def cycle(self, *, clean: bool = True) -> CycleOutcome:
        """One poll and everything it leads to. ``clean``: hygiene may start a clean (``once`` asks for none
        in the cycle that only settles the clean it started)."""
        polled_at = time.monotonic()
        if self._tracks is None:
            # The tracked groups come first within the per-host limits (poll/select.py). Only their names:
            # the tracks themselves are loaded by the observation, which must run again after a failed commit
            # (a store that fails here fails there too, and is reported there).
            with contextlib.suppress(StoreError):
                self.poller.keep = frozenset(await self.store.load_tracks(self.host.name))
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
        self._report_dropped(result.dropped)
        try:
            await self._health(result, outcome)
            settling = self._settling(polled_at)
            # A poll that ran while a clean was in flight may already show what the clean removed: the
            # correction for it applies to every snapshot from the clean's start until it is settled.
            cleaning = settling or self._clean
            if cleaning is not None:
                await self._vanished_across(cleaning, result)
            if result.source != "unchanged" or self._tracks is None or self._vanished:
                await self._observe(result, outcome)
            await self._checks(outcome)
            await self._gates(outcome)
            if settling is not None:
                await self._settle(settling, result, outcome)
            if clean:
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

    def _report_dropped(self, dropped: Dropped) -> None:
        """A warning when the per-host limits start (or stop, or change how much they) leave groups out."""
        if dropped == self._dropped:
            return
        limits = self.settings.watcher
        if dropped.total:
            log.warning("host.groups_dropped", host=self.host.name, over_count=dropped.over_count,
                        long_names=dropped.long_names, max_groups=limits.max_groups,
                        max_group_name=limits.max_group_name)  # fmt: skip
        else:
            log.info("host.groups_within_limits", host=self.host.name)
        self._dropped = dropped

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
        if self._clean is not None and not self._clean.task.done():
            self._clean.task.cancel()
            await asyncio.gather(self._clean.task, return_exceptions=True)
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
        changed: dict[str, bytes | None] = {}
        alerted: list[PhaseRecord] = []
        # A tracked group that the per-host limits leave out (the limit was lowered) is not a removed group.
        for group in sorted((set(snapshot.groups) | set(tracks)) - result.dropped.tracked):
            track = tracks.setdefault(group, GroupTrack())
            stepped = step(
                track,
                self.host.name,
                group,
                snapshot.group_tasks(group) + tuple(self._vanished.get(group, ())),
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
            outcome.events.append(folded(self.host.name, alerted[granted:], result.at))
        self.poller.keep = frozenset(tracks)
        await self.store.commit(
            self.host.name,
            digest=self.poller.fingerprint,
            tracks=changed,
            phases=outcome.phases,
            events=outcome.events,
            check_runs=outcome.checks,
            gates=outcome.gates,
        )
        self._vanished = {}  # stepped through and committed
        self._first_sight = False
        for record in outcome.phases:
            if record.status == "completed":
                # A failed phase is a warning: it is what an operator reading the log at that level wants.
                emit = log.info if record.outcome == "success" else log.warning
                emit("phase.recorded", host=record.host, group=record.group, phase=record.id,
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
        """Start a clean when the state file has grown too large. It runs beside the host's polls (as a
        task of its own, within ``hygiene.timeout``), at most one at a time per host; the first cycle whose
        poll began after it ended records what it did (``_settle``)."""
        size = result.state_file_bytes
        if self._clean is not None or self.settings.hygiene.clean == "off" or size is None:
            return
        if self._follow_up is None:
            cleans = await self.store.cleans(self.host.name)
            self._follow_up = bool(cleans) and completed_bulk(cleans[-1])
        follow_up = self._follow_up
        if size <= self.settings.hygiene.max_state_bytes and not follow_up:
            return
        blocked = await self._blocked_groups() if self.settings.checks else set()
        whole_host = self.host.groups == ["*"]  # else the snapshot does not show every group of the host
        tracks = self._tracks or {}
        plan = self.hygiene.plan(
            self.host.name,
            result,
            tracks,
            result.at,
            blocked=blocked,
            whole_host=whole_host,
            follow_up=follow_up,
        )
        if plan is None or result.snapshot is None:
            self._follow_up = False  # nothing left to clean
            return
        # The record first: what the clean removes is on file before it is gone.
        await self.store.record_clean(plan)
        budget = self.settings.hygiene.timeout
        # The guard counts the state file's Done tasks against this poll's (a task finished since: deferred);
        # a bulk removal takes its candidates here, from this poll's snapshot, not from the stored record.
        fingerprint = self.poller.fingerprint or ""
        run = self.hygiene.clean(self.host, self.poller.transport, plan, budget, fingerprint,
                                 done=result.file_done, candidates=candidates(plan, result.snapshot),
                                 tasks=result.file_tasks)  # fmt: skip
        if plan.dry_run:
            await run
            outcome.clean = plan
            log.info("state.cleaned", host=self.host.name, groups=plan.groups, scope=plan.scope, dry_run=True,
                     bytes_before=plan.bytes_before)  # fmt: skip
            return
        clean = _Clean(plan, targets(plan, result.snapshot), datetime.now(UTC), asyncio.ensure_future(run))
        self._clean = clean

        def ended(_: object) -> None:
            clean.ended = time.monotonic()
            self.wake.set()

        clean.task.add_done_callback(ended)
        log.info("state.clean_started", host=self.host.name, scope=plan.scope, groups=len(plan.groups),
                 bytes=plan.bytes_before, budget=budget)  # fmt: skip

    def _settling(self, polled_at: float) -> _Clean | None:
        """The clean that ended before this cycle's poll began: the poll shows what it did."""
        clean = self._clean
        return clean if clean is not None and clean.ended is not None and clean.ended <= polled_at else None

    @property
    def cleaning(self) -> bool:
        """A clean has started and its outcome is not recorded yet."""
        return self._clean is not None

    async def clean_finished(self) -> None:
        """Wait for the clean in flight to end (within its budget); the next cycle records its outcome."""
        if self._clean is not None:
            await asyncio.gather(self._clean.task, return_exceptions=True)

    async def _vanished_across(self, clean: _Clean, result: PollResult) -> None:
        """Before a snapshot taken while a whole-host clean ran, or the first one after it, is stepped
        through: the tasks the tracker saw unfinished that it removed, as the successes they were
        (hygiene.vanished_successes)."""
        task = clean.task
        if result.snapshot is None:
            return
        if task.done():
            if task.cancelled():
                return
            error = task.exception()
            # It failed or was deferred, so it removed nothing; but a client that ran out of budget may have
            # handed pueued a clean that pueued finishes.
            removed_nothing = not isinstance(error, HostTimeout) if error is not None else not task.result()
            if removed_nothing:
                return
        tracks = await self._tracks_loaded()
        self._vanished = vanished_successes(clean.plan, tracks, result.snapshot, clean.sent_at)
        for group, tasks in self._vanished.items():
            clean.vanished[group] = clean.vanished.get(group, 0) + len(tasks)
        if self._vanished:
            log.info("state.clean_vanished_successes", host=self.host.name,
                     tasks={g: len(ts) for g, ts in self._vanished.items()})  # fmt: skip

    async def _settle(self, clean: _Clean, result: PollResult, outcome: CycleOutcome) -> None:
        """Record what the clean did, from this poll: the size after, and what it left (a partial clean is
        no error); or that it was deferred, or failed."""
        self._clean = None
        task, plan = clean.task, clean.plan
        seconds = None if clean.ended is None else clean.ended - clean.started
        expired = None
        if not task.cancelled() and (error := task.exception()) is not None:
            if not isinstance(error, HostTimeout):
                outcome.error = str(error)
                log.warning("state.clean_failed", host=self.host.name, error=str(error))
                return
            expired = str(error)
        elif not task.cancelled() and not task.result():
            # A task finished since the plan's poll: cleaning then could have removed one that was never
            # seen (or the host could not run a bulk removal). This cycle saw it; the next plans again.
            await self.store.record_clean(msgspec.structs.replace(plan, deferred=True))
            log.info("state.clean_deferred", host=self.host.name, groups=plan.groups)
            return
        stopped = task.cancelled()
        done = settled(plan, clean.targets, result, seconds=seconds, expired=expired, stopped=stopped)
        await self._record_cleaned(with_vanished(done, clean.vanished), outcome)
        self._follow_up = completed_bulk(done)

    async def _record_cleaned(self, done: CleanRecord, outcome: CycleOutcome | None) -> None:
        await self.store.record_clean(done)
        self.metrics.state_cleaned(self.host.name)
        event = state_cleaned(done)
        await self.store.commit(self.host.name, events=[event])
        if outcome is not None:
            outcome.events.append(event)
            outcome.clean = done
        log.info("state.cleaned", host=self.host.name, scope=done.scope, groups=len(done.groups),
                 bytes_before=done.bytes_before, bytes_after=done.bytes_after, seconds=done.seconds,
                 partial=done.partial, kept=sum(done.kept.values()), note=done.note)  # fmt: skip

    async def stop_cleaning(self, grace: float) -> None:
        """At shutdown: a clean in flight may finish within ``grace``; then its client is stopped (pueued
        finishes a clean it has received). Either way its outcome is not seen by a poll: it is recorded as
        partial, with what is known, so that the store does not keep a plan that looks as if it never ran."""
        clean = self._clean
        if clean is None:
            return
        if not clean.task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(clean.task), grace)
        if not clean.task.done():
            clean.task.cancel()
            await asyncio.gather(clean.task, return_exceptions=True)
        self._clean = None
        task = clean.task
        if not task.cancelled() and (task.exception() is not None or not task.result()):
            return  # failed or deferred: nothing was removed
        seconds = None if clean.ended is None else clean.ended - clean.started
        unknown = PollResult(self.host.name, datetime.now(UTC), 0.0)
        done = settled(clean.plan, frozenset(), unknown, seconds=seconds, stopped=True)
        with contextlib.suppress(StoreError):
            await self._record_cleaned(done, None)


def _previous_status(history: list[CheckRun], run: CheckRun) -> str | None:
    """The status of the same check's latest result for the same group, before this phase."""
    earlier = [
        r
        for r in history
        if (r.group, r.check) == (run.group, run.check) and r.at is not None and r.phase_id != run.phase_id
    ]
    return max(earlier, key=lambda r: r.at or datetime.min.replace(tzinfo=UTC)).status if earlier else None
