"""Adaptive polling: when to poll a host next.

Every ``poll_interval`` by default. While one of its watched groups is in its last wave (tasks remain, but
none is waiting to start: they are all running) or its ETA is shorter than the interval, every
``fast_interval``, so that the completion is seen within seconds rather than minutes. An unchanged poll costs
about 0.7 KB on the wire and 2 ms of the watcher's CPU, and about 5 ms of the host's CPU, answered by the
host's poll session (bench/fleet.py); a changed one opens an SSH session, which runs the login shell's
startup files (a ``~/.bashrc`` that runs ``pyenv init`` or ``conda`` setup adds about 100 ms).

A host whose polls fail is retried with backoff: after ``poll_interval``, then twice and four times as long
(``BACKOFF_LIMIT``), and no longer than that, so that a dead host costs a fraction of the connection attempts
and its recovery is still seen within a few intervals.
"""

from __future__ import annotations

from datetime import datetime

from watcher.config import WatcherSection
from watcher.progress import progress
from watcher.pueue.model import Snapshot

_WAITING = ("queued", "stashed", "locked")
BACKOFF_LIMIT = 4  # the longest wait between two polls of a failing host, in poll intervals


def next_interval(snapshot: Snapshot | None, settings: WatcherSection, now: datetime) -> float:
    if snapshot is None or not settings.fast_interval:
        return settings.poll_interval
    for group in progress(snapshot, now):
        if not group.remaining or group.status != "Running":
            continue
        last_wave = not any(group.counts[key] for key in _WAITING)
        soon = group.eta_seconds is not None and group.eta_seconds <= settings.poll_interval
        if last_wave or soon:
            return min(settings.fast_interval, settings.poll_interval)
    return settings.poll_interval


def retry_interval(failures: int, settings: WatcherSection) -> float:
    """When to poll a host again after ``failures`` (≥ 1) failed polls in a row: ``poll_interval``, doubled
    after each further failure, up to ``BACKOFF_LIMIT`` intervals."""
    doublings = min(max(failures - 1, 0), 8)
    return settings.poll_interval * min(1 << doublings, BACKOFF_LIMIT)
