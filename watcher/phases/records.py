"""What the phase tracker produces and the state store keeps: phase records and events.

Both are msgspec structs so that they serialise the same way into SQLite, JSON output and alert payloads.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class PhaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One phase of one group on one host. ``id`` is stable: the same phase always gets the same id."""

    id: str
    host: str
    group: str
    status: str  # "open", "completed" or "abandoned" (every task vanished before the group was seen complete)
    opened_at: datetime  # when the watcher first saw the phase active
    completed_at: datetime | None = None  # when the watcher saw it complete
    outcome: str | None = None  # "success" (every task Success) or "failed"
    counts: dict[str, int] = msgspec.field(default_factory=dict)  # per result, plus "removed"
    tasks: int = 0
    first_start: datetime | None = None  # the earliest start of its tasks
    last_end: datetime | None = None  # the latest end of its tasks
    failed_labels: list[str] = msgspec.field(default_factory=list)  # up to 20
    fired: bool = False  # False when recorded silently (complete at the very first sight)
    probes: dict[str, float | None] = msgspec.field(default_factory=dict)  # the host's health at completion

    @property
    def duration_seconds(self) -> float | None:
        if self.first_start is None or self.last_end is None:
            return None
        return (self.last_end - self.first_start).total_seconds()


class Event(msgspec.Struct, frozen=True, kw_only=True):
    """Something to tell people. ``id`` is the idempotency key: the same on every retry and restart."""

    id: str
    event: str  # "phase.completed", later "check.failed", "host.down", …
    host: str
    group: str | None
    at: datetime
    data: dict[str, Any] = msgspec.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The flat JSON form: ``{"id", "event", "host", "group", "at", **data}``."""
        flat: dict[str, Any] = msgspec.to_builtins(self.data)
        head = {"id": self.id, "event": self.event, "host": self.host, "group": self.group,
                "at": self.at.isoformat()}  # fmt: skip
        return head | flat
