"""Adaptive polling: when to poll a host next.

Every ``poll_interval`` by default. While one of its watched groups is in its last wave (tasks remain, but
none is waiting to start: they are all running) or its ETA is shorter than the interval, every
``fast_interval``, so that the completion is seen within seconds rather than minutes. An unchanged poll costs
about 2.5 KB on the wire and about 5 ms of the watcher's CPU (bench/idle.py); on the host, the poll script
itself costs about 12 ms of CPU, plus whatever the login shell's startup files do (sshd runs every command
through the user's shell: a ``~/.bashrc`` that runs ``pyenv init`` or ``conda`` setup adds about 100 ms).
"""

from __future__ import annotations

from datetime import datetime

from watcher.config import WatcherSection
from watcher.progress import progress
from watcher.pueue.model import Snapshot

_WAITING = ("queued", "stashed", "locked")


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
