"""A per-host budget of ``phase.completed`` alerts, so that one host cannot flood everyone's channel.

A host makes and ends its own groups. A compromised or runaway one could complete hundreds of one-task groups
per poll, and each would page people (issue 13, M1). Each host gets ``max_phase_alerts_per_hour``, as a token
bucket: a burst up to the hourly amount passes at once, and the budget refills evenly over the hour. Beyond
it, the phases are still recorded, checked and gated as usual; only their alerts are folded, per poll, into
one ``phase.flood`` event that counts them and names a few. Nothing is lost: every phase is in history.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import datetime

from watcher.records import Event, PhaseRecord

#: The groups a ``phase.flood`` event names, at most (the count covers the rest).
NAMED = 10


class AlertBudget:
    """A token bucket: ``per_hour`` alerts, refilled evenly; times are the poll's ``datetime``."""

    def __init__(self, per_hour: int) -> None:
        self._rate = per_hour / 3600.0
        self._capacity = float(per_hour)
        self._tokens = float(per_hour)
        self._at: datetime | None = None

    def take(self, wanted: int, now: datetime) -> int:
        """How many of ``wanted`` alerts may go out now (the rest are folded)."""
        if self._at is not None:
            elapsed = max(0.0, (now - self._at).total_seconds())
            self._tokens = min(self._capacity, self._tokens + elapsed * self._rate)
        self._at = now
        granted = min(wanted, int(self._tokens))
        self._tokens -= granted
        return granted


def folded(host: str, records: Sequence[PhaseRecord], at: datetime) -> Event:
    """One ``phase.flood`` event standing for the alerts of ``records`` (completed phases of one poll)."""
    outcomes = Counter(r.outcome or "failed" for r in records)
    names = sorted({r.group for r in records})
    shown = ", ".join(names[:NAMED]) + (f" and {len(names) - NAMED} more" if len(names) > NAMED else "")
    counts = ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items()))
    return Event(
        id=f"phase.flood:{records[0].id}",
        event="phase.flood",
        host=host,
        group=None,
        at=at,
        data={
            "severity": "warning",
            "phases": len(records),
            "outcomes": dict(outcomes),
            "groups": names[:NAMED],
            "summary": f"{host}: {len(records)} more phases completed ({counts}) than the alert budget "
            f"allows; their alerts are folded into this one. Groups: {shown}",
        },
    )
