"""Per-group progress: counts by state, what is left, and an ETA from the recent completion rate."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from watcher.pueue.model import UNFINISHED_KEYS, Group, Snapshot, Task, count_states

# The rate is measured over the completions of the last RATE_WINDOW, or, when fewer than two tasks finished
# in it, over the group's last RATE_SAMPLES completions.
RATE_WINDOW = timedelta(hours=1)
RATE_SAMPLES = 20


@dataclass(frozen=True, slots=True)
class GroupProgress:
    name: str
    status: str
    parallel: int
    counts: dict[str, int]
    total: int
    finished: int
    remaining: int
    eta_seconds: float | None

    @property
    def failed(self) -> int:
        return self.finished - self.counts["success"]


def progress(snapshot: Snapshot, now: datetime) -> list[GroupProgress]:
    """One entry per group of the snapshot, sorted by name."""
    return [_group(group, snapshot.group_tasks(name), now) for name, group in sorted(snapshot.groups.items())]


def _group(group: Group, tasks: tuple[Task, ...], now: datetime) -> GroupProgress:
    counts = count_states(tasks)
    remaining = sum(counts[key] for key in UNFINISHED_KEYS)
    total = len(tasks)
    eta = None
    if remaining and group.status == "Running":
        rate = _completion_rate([t.end for t in tasks if t.end is not None], now)
        eta = remaining / rate if rate else None
    return GroupProgress(
        name=group.name,
        status=group.status,
        parallel=group.parallel,
        counts=counts,
        total=total,
        finished=total - remaining,
        remaining=remaining,
        eta_seconds=eta,
    )


def _completion_rate(ends: list[datetime], now: datetime) -> float | None:
    """Completions per second, or None when there is not enough history to tell."""
    recent = [end for end in ends if now - end <= RATE_WINDOW]
    if len(recent) >= 2:
        span = (now - min(recent)).total_seconds()
        return len(recent) / span if span > 0 else None
    ends = sorted(ends)[-RATE_SAMPLES:]
    if len(ends) < 2:
        return None
    span = (ends[-1] - ends[0]).total_seconds()
    return (len(ends) - 1) / span if span > 0 else None
