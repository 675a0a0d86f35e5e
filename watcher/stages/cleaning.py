"""Stage cleaning: a host's state-file clean, from its plan to its record (policy: ``watcher/hygiene.py``).

A clean runs beside the host's polls (as a task of its own, within ``hygiene.timeout``), at most one at a
time per host. The first cycle whose poll began after the clean ended records what it did (the size after,
what it kept: ``hygiene.settled``); then, if the state file is over ``max_state_bytes`` (or a bulk removal
left a rest), the next clean is planned, recorded, and started. The tasks a clean removed just as they
succeeded are the business of stage vanished (``watcher/stages/vanished.py``), before the observation.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import msgspec
import structlog

from watcher.config import HostConfig, HygieneSection
from watcher.cycle import Cycle, CycleOutcome
from watcher.errors import HostError, HostTimeout, StoreError
from watcher.events import state_cleaned
from watcher.hygiene import (
    Hygiene,
    candidates,
    completed_bulk,
    settled,
    targets,
    with_vanished,
)
from watcher.metrics import MetricsState
from watcher.poll.poller import HostPoller, PollResult
from watcher.records import CleanRecord
from watcher.stages.observe import Observe
from watcher.store import Store

log = structlog.get_logger("watcher")


@dataclass(slots=True)
class _Clean:
    """A clean that runs beside the host's polls, until the first poll after it has been looked at."""

    plan: CleanRecord
    targets: frozenset[str]  # what it means to remove (tracker.key_of)
    sent_at: datetime  # the watcher's clock when the command was sent
    task: asyncio.Task[bool]  # Hygiene.clean: True ran, False deferred
    started: float = field(default_factory=time.monotonic)
    ended: float | None = None  # monotonic, when the command returned (or failed)
    # Tasks it removed that the plan did not name, per group, for the record (hygiene.vanished_successes).
    vanished: dict[str, int] = field(default_factory=dict)
    # Taken up after a restart (Cleaning.recover): the last process started it and never saw its outcome.
    recovered: bool = False


class Cleaning:
    name = "cleaning"
    always = False

    def __init__(self, host: HostConfig, poller: HostPoller, store: Store, settings: HygieneSection,
                 hygiene: Hygiene, observe: Observe, metrics: MetricsState, *,
                 checks: bool) -> None:  # fmt: skip
        self.host = host
        self.poller = poller
        self.store = store
        self.settings = settings
        self.hygiene = hygiene
        self.observe = observe  # whose tracks a plan reads, and vanished tasks are measured against
        self.metrics = metrics
        self.checks = checks  # checks are configured: a group whose checks did not pass is left alone
        self.wake = asyncio.Event()  # set when a clean ends: the loop polls at once, not after its sleep
        self.clean: _Clean | None = None  # the clean in flight
        # Whether the last clean was a bulk removal that went through, whose rest the next plan takes
        # (hygiene.completed_bulk); None: not read from the store yet (a `once` after the bulk's `once`).
        self._follow_up: bool | None = None
        self._recovered = False  # the store's last clean has been looked at (recover)

    def reset(self) -> None:
        """The clean in flight stays: the next cycle settles it (its record is written then)."""

    def settling(self, polled_at: float) -> _Clean | None:
        """The clean that ended before the poll that began at ``polled_at``: that poll shows what it did."""
        clean = self.clean
        return clean if clean is not None and clean.ended is not None and clean.ended <= polled_at else None

    async def run(self, cycle: Cycle) -> None:
        try:
            settling = self.settling(cycle.polled_at)
            if settling is not None:
                await self._settle(settling, cycle.result, cycle.outcome)
            if cycle.clean:
                await self._start(cycle)
        except HostError as exc:
            cycle.outcome.error = str(exc)
            log.warning("state.clean_failed", host=self.host.name, error=str(exc))

    async def _start(self, cycle: Cycle) -> None:
        """Plan a clean when the state file has grown too large; record the plan; start it."""
        result = cycle.result
        size = result.state_file_bytes
        if self.clean is not None or self.settings.clean == "off" or size is None:
            return
        if self._follow_up is None:
            cleans = await self.store.cleans(self.host.name)
            self._follow_up = bool(cleans) and completed_bulk(cleans[-1])
        follow_up = self._follow_up
        if size <= self.settings.max_state_bytes and not follow_up:
            return
        blocked = await self._blocked_groups() if self.checks else set()
        whole_host = self.host.groups == ["*"]  # else the snapshot does not show every group of the host
        plan = self.hygiene.plan(self.host.name, result, self.observe.known, result.at, blocked=blocked,
                                 whole_host=whole_host, follow_up=follow_up)  # fmt: skip
        if plan is None or result.snapshot is None:
            self._follow_up = False  # nothing left to clean
            return
        await self.store.record_clean(plan)  # the record first: what the clean removes is on file before
        budget = self.settings.timeout
        # The guard counts the state file's Done tasks against this poll's (a task finished since: deferred);
        # a bulk removal takes its candidates here, from this poll's snapshot, not from the stored record.
        fingerprint = self.poller.fingerprint or ""
        run = self.hygiene.clean(self.host, self.poller.transport, plan, budget, fingerprint,
                                 done=result.file_done, candidates=candidates(plan, result.snapshot),
                                 tasks=result.file_tasks)  # fmt: skip
        if plan.dry_run:
            await run
            cycle.outcome.clean = plan
            log.info("state.cleaned", host=self.host.name, groups=plan.groups, scope=plan.scope, dry_run=True,
                     bytes_before=plan.bytes_before)  # fmt: skip
            return
        sent = asyncio.ensure_future(run)
        self._track(_Clean(plan, targets(plan, result.snapshot), datetime.now(UTC), sent))
        log.info("state.clean_started", host=self.host.name, scope=plan.scope, groups=len(plan.groups),
                 bytes=plan.bytes_before, budget=budget)  # fmt: skip

    async def recover(self) -> None:
        """Once, before the first observation: the store's last clean of the host, if no poll ever showed
        what it did. The last process recorded its plan and sent it, then was killed (or stopped) while it
        ran; pueued finishes a clean it has received, so it may have removed tasks since, among them tasks
        that succeeded just before (remote/clean.py). It is taken up as in flight until its budget
        (``hygiene.timeout``, from its plan) has run out: stage vanished counts such tasks as the successes
        they were in every snapshot meanwhile (a phase whose last task it was completes, not abandoned), no
        other clean starts, and the first poll after that settles its record."""
        if self._recovered:
            return
        cleans = await self.store.cleans(self.host.name)
        self._recovered = True
        if self._follow_up is None:
            self._follow_up = bool(cleans) and completed_bulk(cleans[-1])
        last = cleans[-1] if cleans else None
        if self.clean is not None or last is None or last.seen or last.deferred or last.dry_run:
            return
        budget = self.settings.timeout
        left = min(budget, max(0.0, budget - (datetime.now(UTC) - last.at).total_seconds()))
        self._track(_Clean(last, frozenset(), last.at, asyncio.ensure_future(_ran_for(left)), recovered=True))
        log.info("state.clean_recovered", host=self.host.name, scope=last.scope, planned=last.at.isoformat(),
                 seconds_left=round(left, 1))  # fmt: skip

    def _track(self, clean: _Clean) -> None:
        """``clean`` is the one in flight; when it ends, the loop polls at once."""
        self.clean = clean

        def ended(_: object) -> None:
            clean.ended = time.monotonic()
            self.wake.set()

        clean.task.add_done_callback(ended)

    async def _blocked_groups(self) -> set[str]:
        """Groups whose last completed phase has a check that did not pass (or has not run yet): hygiene
        leaves them alone, so that the evidence stays on the host."""
        latest: dict[str, str] = {}
        for phase in await self.store.phases(host=self.host.name, status="completed"):
            latest.setdefault(phase.group, phase.id)
        runs = await self.store.check_runs(host=self.host.name)
        return {r.group for r in runs if latest.get(r.group) == r.phase_id and r.status != "ok"}

    async def _settle(self, clean: _Clean, result: PollResult, outcome: CycleOutcome) -> None:
        """Record what the clean did, from this poll: the size after, and what it left (a partial clean is
        no error); or that it was deferred, or failed."""
        self.clean = None
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
            await self.store.record_clean(msgspec.structs.replace(plan, deferred=True, seen=True))
            log.info("state.clean_deferred", host=self.host.name, groups=plan.groups)
            return
        stopped = task.cancelled()
        if clean.recovered:
            seconds = None  # it ran for the last process: how long is not known
        done = settled(plan, clean.targets, result, seconds=seconds, expired=expired, stopped=stopped,
                       restarted=clean.recovered)  # fmt: skip
        await self._record(with_vanished(done, clean.vanished), outcome)
        self._follow_up = completed_bulk(done)

    async def _record(self, done: CleanRecord, outcome: CycleOutcome | None) -> None:
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

    async def finished(self) -> None:
        """Wait for the clean in flight to end (within its budget); the next cycle records its outcome."""
        if self.clean is not None:
            await asyncio.gather(self.clean.task, return_exceptions=True)

    async def stop(self, grace: float) -> None:
        """At shutdown: a clean in flight may finish within ``grace``; then its client is stopped (pueued
        finishes a clean it has received). Either way its outcome is not seen by a poll: it is recorded as
        partial, with what is known, so that the store does not keep a plan that looks as if it never ran."""
        clean = self.clean
        if clean is None:
            return
        if clean.recovered:  # its record stays unseen: the next start takes it up again
            await self.cancel()
            self.clean = None
            return
        if not clean.task.done():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(clean.task), grace)
        await self.cancel()
        self.clean = None
        task = clean.task
        if not task.cancelled() and (task.exception() is not None or not task.result()):
            return  # failed or deferred: nothing was removed
        seconds = None if clean.ended is None else clean.ended - clean.started
        unknown = PollResult(self.host.name, datetime.now(UTC), 0.0)
        done = settled(clean.plan, frozenset(), unknown, seconds=seconds, stopped=True)
        with contextlib.suppress(StoreError):
            await self._record(done, None)

    async def cancel(self) -> None:
        """Stop the clean's client, if it still runs."""
        if self.clean is not None and not self.clean.task.done():
            self.clean.task.cancel()
            await asyncio.gather(self.clean.task, return_exceptions=True)


async def _ran_for(seconds: float) -> bool:
    """A recovered clean's stand-in: it may run (on the host) for ``seconds`` yet."""
    await asyncio.sleep(seconds)
    return True
