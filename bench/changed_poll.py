"""The watcher's CPU for one poll that finds the 53,000-task state changed (bench/status_large.py's state).

What the daemon does then for a local host, in one process and in order: the parse (``poller._parse`` of a
``handoff``: map, decode, build the snapshot), the poller's count of Done tasks, ``staleness.suspect``, then
one tracker ``step`` per group (and the encoding of each changed track), the previous snapshot being dropped
as the new one replaces it. A first poll (``first_sight``) sets the tracks up; then POLLS polls of the same
file are timed, each phase by ``time.process_time`` (the CPU the watcher takes from the cores it shares
with pueued), and the median is reported. The store and the network are left out.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime
from itertools import pairwise
from typing import Any

from bench.common import save, table
from bench.status_large import large_state

POLLS = 9


def run() -> dict[str, Any]:
    from watcher.phases.tracker import GroupTrack, step
    from watcher.poll.poller import _parse
    from watcher.pueue.model import Snapshot, Status
    from watcher.pueue.staleness import suspect
    from watcher.remote.poll import RemoteState
    from watcher.transport.base import MAX_ANSWER_BYTES

    state = large_state() / "state.json"
    path = str(state).encode()
    remote = RemoteState(
        "handoff", memoryview(path), "none", "", "state.json", state.stat().st_size, True, True, 0
    )
    tracks: dict[str, GroupTrack] = {}
    previous: Snapshot | None = None
    phases: dict[str, list[float]] = {"parse": [], "count": [], "suspect": [], "steps": [], "total": []}

    for poll in range(POLLS + 1):
        at = datetime.now(UTC)
        clock = [time.process_time()]
        snapshot = _parse(remote, MAX_ANSWER_BYTES)
        previous = None  # the poller drops the last snapshot as it keeps the new one
        clock.append(time.process_time())
        counts = (sum(t.status is Status.DONE for t in snapshot.tasks), len(snapshot.tasks))
        clock.append(time.process_time())
        reason = suspect(snapshot, snapshot.groups)
        clock.append(time.process_time())
        changed = 0
        for group in sorted(set(snapshot.groups) | set(tracks)):
            track = tracks.setdefault(group, GroupTrack())
            stepped = step(track, "bench", group, snapshot.group_tasks(group), at, first_sight=poll == 0)
            if stepped.changed:
                track.encode()
                changed += 1
        clock.append(time.process_time())
        previous = snapshot
        if poll:
            for name, (a, b) in zip(phases, pairwise(clock), strict=False):
                phases[name].append(b - a)
            phases["total"].append(clock[-1] - clock[0])
    assert previous is not None
    open_members = sum(len(t.phase.members) for t in tracks.values() if t.phase is not None)
    medians = {name: statistics.median(values) for name, values in phases.items()}
    figures = {
        "tasks": counts[1],
        "done": counts[0],
        "groups": len(previous.groups),
        "open_phase_members": open_members,
        "suspect": reason,
        "polls": POLLS,
        "cpu_seconds_median": medians,
        "cpu_seconds_all": phases,
    }
    print(f"state: {counts[1]} tasks in {len(previous.groups)} groups, {open_members} in open phases; "
          f"median of {POLLS} changed polls, CPU seconds (process_time)")  # fmt: skip
    rows = [("phase", "CPU s (median)", "min", "max")]
    for name, values in phases.items():
        rows.append((name, f"{medians[name]:.3f}", f"{min(values):.3f}", f"{max(values):.3f}"))
    print(table(rows))
    print(f"results: {save('changed_poll', figures)}")
    return figures
