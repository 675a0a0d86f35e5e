"""What the metrics endpoint exports, kept in memory: the daemon writes it, scrapes read it.

The daemon calls the writers from the asyncio thread; scrapes read from the HTTP server's threads. Every
writer builds a new immutable :class:`StateView` and swaps it in under a lock (writers may also come from
other threads, such as the store's); a reader takes :meth:`MetricsState.view` once, one reference read that
is atomic, and sees a consistent whole without ever waiting for the daemon.

Hosts: after :meth:`MetricsState.set_hosts`, only the configured hosts are kept, in configuration order, and
an observation of any other host (a poll still in flight when its host was removed) is ignored. Before the
first ``set_hosts`` every observed host is kept, in order of first sight.

A failed poll keeps the host's last known gauges (task counts, state file size, probes): ``host_up`` says
whether they are current and ``last_success_at`` how old they are.
"""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from watcher.errors import (
    AuthenticationFailed,
    BadPollOutput,
    HostError,
    HostKeyRejected,
    HostTimeout,
    HostUnreachable,
    PueueUnavailable,
)
from watcher.metrics.loop_lag import LoopLag
from watcher.poll.poller import PollResult
from watcher.poll.select import Dropped
from watcher.probes.health import metrics as probe_metrics
from watcher.probes.health import rates
from watcher.probes.proc import ProbeSample
from watcher.progress import GroupProgress, progress

#: Upper bounds of the poll-duration histogram, in seconds: an unchanged poll over a LAN takes tens of
#: milliseconds, a full 74 MB state about a second, and ``host_timeout`` defaults to 60 s.
POLL_DURATION_BUCKETS: tuple[float, ...] = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0,
)  # fmt: skip

#: Every ``PollResult.reason`` the poller produces; each starts at 0 for every host, so that ``rate()`` and
#: ``increase()`` see a host's first failure. An unknown reason still gets its own series.
POLL_FAILURE_REASONS: tuple[str, ...] = tuple(
    dict.fromkeys(
        cls.reason
        for cls in (
            HostError,
            HostUnreachable,
            HostTimeout,
            HostKeyRejected,
            AuthenticationFailed,
            PueueUnavailable,
            BadPollOutput,
        )
    )
)

#: The outcomes of a completed phase (PhaseRecord.outcome); each starts at 0 for every group in view.
PHASE_OUTCOMES: tuple[str, ...] = ("success", "failed")

#: ``pueue_check_status`` values; "pending" (not run yet) is not a result and leaves the gauge as it was.
CHECK_STATUS_CODES: Mapping[str, int] = {"ok": 0, "warn": 1, "fail": 2, "error": 3}


@dataclass(frozen=True, slots=True)
class PollDurations:
    """A histogram of poll durations: ``cumulative[i]`` counts the polls that took at most bucket ``i``."""

    cumulative: tuple[int, ...] = (0,) * len(POLL_DURATION_BUCKETS)
    count: int = 0
    total: float = 0.0

    def observed(self, seconds: float) -> PollDurations:
        return PollDurations(
            tuple(
                n + (seconds <= bound)
                for n, bound in zip(self.cumulative, POLL_DURATION_BUCKETS, strict=True)
            ),
            self.count + 1,
            self.total + seconds,
        )


@dataclass(frozen=True, slots=True)
class CheckValue:
    code: int  # CHECK_STATUS_CODES
    violations: float | None


@dataclass(frozen=True, slots=True)
class HostMetrics:
    """Everything exported about one host. Never mutated: each change builds a new one.

    The mappings are fresh dicts that nobody mutates after construction.
    """

    name: str
    up: bool | None = None  # None until the first poll
    last_success_at: float | None = None  # Unix time of the last successful poll
    state_file_bytes: int | None = None
    groups: tuple[GroupProgress, ...] = ()
    probes: Mapping[str, float | None] = field(default_factory=dict)  # watcher.probes.health.metrics()
    durations: PollDurations = PollDurations()
    failures: Mapping[str, int] = field(default_factory=lambda: dict.fromkeys(POLL_FAILURE_REASONS, 0))
    completions: Mapping[tuple[str, str], int] = field(default_factory=dict)  # (group, outcome) → count
    last_completion_at: Mapping[str, float] = field(default_factory=dict)  # group → Unix time
    cleans: int = 0
    checks: Mapping[tuple[str, str], CheckValue] = field(default_factory=dict)  # (group, check) → value
    dropped: Dropped | None = None  # groups the per-host limits left out at the last poll (poll/select.py)
    # The last probe sample and when it was taken, for swap rates; not exported.
    probe_sample: tuple[datetime, ProbeSample] | None = None


@dataclass(frozen=True, slots=True)
class StateView:
    """One consistent picture of everything exported, as a scrape reads it."""

    hosts: Mapping[str, HostMetrics] = field(default_factory=dict)  # in configuration order
    configured: bool = False  # set_hosts() was called: unknown hosts are ignored
    outbox_depth: int | None = None
    delivery_failures: Mapping[str, int] = field(default_factory=dict)
    heartbeat: float | None = None  # the clock's value at the last heartbeat
    heartbeat_at: float | None = None  # the same moment, Unix time

    @property
    def hosts_up(self) -> int:
        return sum(1 for h in self.hosts.values() if h.up)


def _pruned(host: HostMetrics) -> HostMetrics:
    """Without the series of groups no longer in view (removed from pueue, or left out by the limits): they
    would otherwise be exported for ever, one more set per group a host ever had."""
    names = {g.name for g in host.groups}
    if all(g in names for g, _ in host.completions) and all(g in names for g in host.last_completion_at) \
            and all(g in names for g, _ in host.checks):  # fmt: skip
        return host
    return dataclasses.replace(
        host,
        completions={k: n for k, n in host.completions.items() if k[0] in names},
        last_completion_at={g: at for g, at in host.last_completion_at.items() if g in names},
        checks={k: v for k, v in host.checks.items() if k[0] in names},
    )


def _bump(counts: Mapping[Any, int], key: Any) -> dict[Any, int]:
    return {**counts, key: counts.get(key, 0) + 1}


class MetricsState:
    """The exported state; see the module docstring. ``clock`` (monotonic seconds) serves the heartbeat."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._started = clock()
        self._lock = threading.Lock()
        self._view = StateView()
        #: The event loop's lateness (loop_lag.py), set by the daemon; scrapes read its floats directly.
        self.loop_lag = LoopLag()

    def view(self) -> StateView:
        """The current picture: immutable, so a scrape may read it at leisure."""
        return self._view

    # -- writers (the daemon) -------------------------------------------------------------------------------

    def set_hosts(self, names: Sequence[str]) -> None:
        """The configured hosts. A removed host disappears from every per-host metric, counters included;
        a host added later starts from zero."""
        with self._lock:
            old = self._view.hosts
            hosts = {name: old.get(name) or HostMetrics(name) for name in dict.fromkeys(names)}
            self._view = dataclasses.replace(self._view, hosts=hosts, configured=True)

    def observe_poll(self, result: PollResult, now: datetime) -> None:
        """One poll of one host: up, duration, failures by reason, and when it succeeded, the state file
        size, every group's progress (ETA as of ``now``) and the probe values (swap rates are computed
        against the host's previous sample)."""
        # The expensive part (counting tens of thousands of tasks) runs before the lock is taken.
        groups = tuple(progress(result.snapshot, now)) if result.ok and result.snapshot is not None else None

        def update(host: HostMetrics) -> HostMetrics:
            durations = host.durations.observed(result.duration)
            if not result.ok:
                failures = _bump(host.failures, result.reason or HostError.reason)
                return dataclasses.replace(host, up=False, durations=durations, failures=failures)
            sample = result.probes
            if sample is None:
                probes: Mapping[str, float | None] = {}
                probe_sample = None
            else:
                previous = host.probe_sample
                seconds = (result.at - previous[0]).total_seconds() if previous else 0.0
                probes = probe_metrics(sample, rates(previous[1] if previous else None, sample, seconds))
                probe_sample = (result.at, sample)
            kept = groups if groups is not None else host.groups
            return _pruned(
                dataclasses.replace(
                    host,
                    up=True,
                    last_success_at=now.timestamp(),
                    state_file_bytes=result.state_file_bytes,
                    groups=kept,
                    probes=probes,
                    probe_sample=probe_sample,
                    durations=durations,
                    dropped=result.dropped,
                )
            )

        self._update(result.host, update)

    def observe_probes(self, host: str, metrics: Mapping[str, float | None]) -> None:
        """Replace the host's probe values with ones computed elsewhere (``watcher.probes.health.metrics``);
        not needed when :meth:`observe_poll` is given the PollResult with its probes."""
        values = dict(metrics)
        self._update(host, lambda h: dataclasses.replace(h, probes=values))

    def phase_completed(self, host: str, group: str, outcome: str, at: datetime) -> None:
        """A phase of ``group`` completed (``outcome`` "success" or "failed") at ``at``."""

        def update(h: HostMetrics) -> HostMetrics:
            last = {**h.last_completion_at, group: max(at.timestamp(), h.last_completion_at.get(group, 0.0))}
            return dataclasses.replace(
                h, completions=_bump(h.completions, (group, outcome)), last_completion_at=last
            )

        self._update(host, update)

    def state_cleaned(self, host: str) -> None:
        """``pueue clean`` ran on the host (not counted for a dry run: call it only for a real clean)."""
        self._update(host, lambda h: dataclasses.replace(h, cleans=h.cleans + 1))

    def check_result(self, host: str, group: str, check: str, status: str, violations: float | None) -> None:
        """The result of a check after a phase of ``group``: "ok", "warn", "fail" or "error" (anything else
        but "pending" counts as "error"); ``violations`` None when the check could not count them."""
        if status == "pending":
            return
        value = CheckValue(CHECK_STATUS_CODES.get(status, CHECK_STATUS_CODES["error"]), violations)
        self._update(host, lambda h: dataclasses.replace(h, checks={**h.checks, (group, check): value}))

    def outbox(self, depth: int) -> None:
        """The number of committed events not delivered yet."""
        with self._lock:
            self._view = dataclasses.replace(self._view, outbox_depth=depth)

    def delivery_failed(self, sink: str) -> None:
        """One failed delivery attempt to ``sink``."""
        with self._lock:
            failures = _bump(self._view.delivery_failures, sink)
            self._view = dataclasses.replace(self._view, delivery_failures=failures)

    def heartbeat(self) -> None:
        """The daemon's loop is alive; call it at every iteration. ``/healthz`` turns 503 when it stops."""
        with self._lock:
            self._view = dataclasses.replace(self._view, heartbeat=self._clock(), heartbeat_at=time.time())

    # -- readers --------------------------------------------------------------------------------------------

    def last_cycle_age(self, view: StateView | None = None) -> float:
        """Seconds since the last heartbeat, or since this state was created when there was none yet."""
        if view is None:
            view = self._view
        since = view.heartbeat if view.heartbeat is not None else self._started
        return max(0.0, self._clock() - since)

    def health(self, stale_after: float) -> tuple[bool, dict[str, Any]]:
        """(healthy, the ``/healthz`` document): healthy while the last heartbeat is at most ``stale_after``
        seconds old."""
        view = self._view
        age = self.last_cycle_age(view)
        healthy = age <= stale_after
        return healthy, {
            "status": "ok" if healthy else "stale",
            "hosts": len(view.hosts),
            "hosts_up": view.hosts_up,
            "last_cycle_age_seconds": round(age, 3),
        }

    def _update(self, host: str, change: Callable[[HostMetrics], HostMetrics]) -> None:
        with self._lock:
            view = self._view
            current = view.hosts.get(host)
            if current is None:
                if view.configured:
                    return  # not (or no longer) configured
                current = HostMetrics(host)
            self._view = dataclasses.replace(view, hosts={**view.hosts, host: change(current)})
