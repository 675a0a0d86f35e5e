"""Keep pueue's state file lean: ``pueue clean`` complete groups when the file grows too large.

pueue rewrites its whole state file after every change, and every ``pueue add`` waits for that: at 50,000
finished tasks the file is about 90 MB and an ``add`` takes over a second instead of 0.1 s. So when a host's
state file exceeds ``hygiene.max_state_bytes``, the watcher runs ``pueue clean [-s] --group=G`` for the
groups that are complete and whose completion it has already recorded (the phase and its summary are committed
before any clean, so history survives), and whose checks passed. It never runs ``pueue reset`` and never
touches a group with unfinished tasks. A group whose name cannot be a command-line argument (pueue accepts any
string: one that holds a NUL, or is tens of kilobytes long) is never cleaned; names beyond one command's
budget wait for the next clean.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Set
from dataclasses import dataclass, field
from datetime import datetime

import structlog

from watcher.config import HostConfig, HygieneSection
from watcher.errors import PueueUnavailable
from watcher.phases.tracker import GroupTrack
from watcher.poll.poller import PollResult
from watcher.poll.remote import CLEAN_DEFERRED, clean_argv, fitting_arguments, pueue_error
from watcher.pueue.model import UNFINISHED_KEYS, Snapshot, count_states
from watcher.store import CleanRecord
from watcher.transport import Transport

log = structlog.get_logger("watcher.hygiene")


@dataclass(slots=True)
class Hygiene:
    settings: HygieneSection
    _last: dict[str, float] = field(default_factory=dict)  # host → monotonic time of its last clean

    def plan(
        self,
        host: str,
        result: PollResult,
        tracks: Mapping[str, GroupTrack],
        now: datetime,
        *,
        blocked: Set[str] = frozenset(),
    ) -> CleanRecord | None:
        """What to clean on ``host`` after this poll, or None. Pure, apart from the cooldown clock."""
        size, snapshot = result.state_file_bytes, result.snapshot
        if self.settings.clean == "off" or snapshot is None or size is None:
            return None
        if size <= self.settings.max_state_bytes:
            return None
        if time.monotonic() - self._last.get(host, float("-inf")) < self.settings.cooldown:
            return None
        groups = fitting_arguments(
            sorted(g for g in snapshot.groups if g not in blocked and _cleanable(snapshot, g, tracks.get(g)))
        )
        if not groups:
            return None
        mode = self.settings.clean
        removed, failed = {}, {}
        for group in groups:
            gone = [t for t in snapshot.group_tasks(group) if mode == "all" or t.state == "success"]
            removed[group] = {k: n for k, n in count_states(gone).items() if n}
            failed[group] = [t.label or f"#{t.id}" for t in gone if t.state != "success"][:20]
        return CleanRecord(
            host=host,
            at=now,
            groups=groups,
            mode=mode,
            dry_run=self.settings.dry_run,
            bytes_before=size,
            bytes_after=None,
            removed=removed,
            failed_labels={g: labels for g, labels in failed.items() if labels},
        )

    async def clean(
        self, host: HostConfig, transport: Transport, plan: CleanRecord, timeout: float, fingerprint: str = ""
    ) -> bool:
        """Run the clean on the host (one round trip for every group), unless the state file is no longer the
        one the plan was made from (``fingerprint``, when known): then nothing is removed and the answer is
        False, and the next cycle plans again from what changed. Raises HostError on failure."""
        previous = self._last.get(host.name)
        self._last[host.name] = time.monotonic()
        if plan.dry_run:
            log.info("state.clean_planned", host=host.name, groups=plan.groups, bytes=plan.bytes_before)
            return True
        argv = clean_argv(host, plan.groups, plan.mode, fingerprint)
        answer = await transport.run(argv, timeout=timeout)
        if answer.exit_status != 0:
            raise PueueUnavailable(
                f"pueue clean failed (exit {answer.exit_status}): {pueue_error(answer.stderr)}"
            )
        if CLEAN_DEFERRED in answer.stdout:
            # Nothing was removed: the cooldown does not start, so the next cycle may clean.
            if previous is None:
                del self._last[host.name]
            else:
                self._last[host.name] = previous
            return False
        return True


def _cleanable(snapshot: Snapshot, group: str, track: GroupTrack | None) -> bool:
    """Complete (tasks, none unfinished), and no phase left open: its completion is on record."""
    tasks = snapshot.group_tasks(group)
    if not tasks or any(t.state in UNFINISHED_KEYS for t in tasks):
        return False
    return track is not None and track.phase is None
