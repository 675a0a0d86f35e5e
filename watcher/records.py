"""Every record the state store keeps: phases and events (from the phase tracker), check runs, gate actions
and cleans.

They are msgspec structs so that they serialise the same way into SQLite, JSON output and alert payloads.
Their statuses are ``Literal`` types of the very strings that are stored: a value outside them fails to
decode, so adding one is a change of what the store may hold (and older code may refuse it).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

import msgspec

#: ``abandoned``: every task vanished before the group was seen complete.
PhaseStatus = Literal["open", "completed", "abandoned"]
#: ``success``: every task ended Success.
PhaseOutcome = Literal["success", "failed"]
#: ``pending`` until the check has run, then the value of its ``checks.base.CheckStatus``.
CheckRunStatus = Literal["pending", "ok", "warn", "fail", "error"]
#: ``pending`` until the phase's checks are done; ``error``: its start or pause command failed.
GateStatus = Literal["pending", "started", "held", "error"]
#: ``successful``: only Success tasks are removed; ``all``: every finished task.
CleanMode = Literal["successful", "all"]
#: How a clean ran: see :attr:`CleanRecord.scope`.
CleanScope = Literal["host", "groups", "bulk"]
#: One event's delivery to one sink (the ``deliveries`` table): ``failed`` is for good.
DeliveryStatus = Literal["pending", "delivered", "failed"]


class PhaseRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One phase of one group on one host. ``id`` is stable: the same phase always gets the same id."""

    id: str
    host: str
    group: str
    status: PhaseStatus
    opened_at: datetime  # when the watcher first saw the phase active
    completed_at: datetime | None = None  # when the watcher saw it complete
    outcome: PhaseOutcome | None = None  # set once completed
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


class CleanRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One clean of a host's pueue state file, or a dry run of one."""

    host: str
    at: datetime
    groups: list[str]
    mode: CleanMode
    dry_run: bool
    bytes_before: int | None  # the state file's size, when it could be read
    bytes_after: int | None
    removed: dict[str, dict[str, int]]  # group -> result -> how many of the removed tasks had it
    failed_labels: dict[str, list[str]]  # group -> labels of the failed tasks the clean removes
    # Not run: a task finished between the plan and the clean (watcher/remote/clean.py), or the
    # host could not run a bulk removal.
    deferred: bool = False
    # "host": one `pueue clean -s` of the whole host (every group's successful tasks: ``removed`` lists the
    # running groups too), then, with mode "all", `pueue clean --group=G` of the complete groups that hold
    # failed tasks; "groups": `pueue clean [-s] --group=G` of each of ``groups``; "bulk": `pueue remove` of
    # the successful tasks of ``groups``, in chunks, on a large host (watcher/hygiene.py). The ids are not
    # stored: they are derived from the plan's snapshot.
    scope: CleanScope = "groups"
    # The outcome, known from the first poll after the clean. Partial: some of what the plan meant to remove
    # is still there (``kept``: group -> how many tasks), because the budget (hygiene.timeout) ran out, the
    # watcher stopped meanwhile, or pueue keeps tasks that unfinished ones depend on; ``note`` says which.
    # The body is msgspec JSON: a record written before these fields existed reads with their defaults
    # (scope "groups", complete), so they need no schema migration.
    partial: bool = False
    kept: dict[str, int] = msgspec.field(default_factory=dict)
    note: str | None = None
    seconds: float | None = None  # how long the clean command ran: an upper bound of pueued's lock time
    # Whether a poll has shown what the clean did. False on the plan recorded before it runs, and on a clean
    # the watcher stopped during: a host's last record left unseen is taken up again after a restart
    # (watcher/stages/cleaning.py, Cleaning.recover), as a clean that may still run.
    seen: bool = True


class CheckRun(msgspec.Struct, frozen=True, kw_only=True):
    """One check of one completed phase: ``pending`` until it has run, then its result."""

    phase_id: str
    check: str
    host: str
    group: str
    status: CheckRunStatus
    result: dict[str, Any] | None = None  # CheckResult.to_dict()
    at: datetime | None = None  # when it finished


class GateAction(msgspec.Struct, frozen=True, kw_only=True):
    """What a gate did after a phase: ``pending`` until its checks are done, then ``started`` or ``held``."""

    phase_id: str
    host: str
    after: str
    start: str
    status: GateStatus
    reason: str | None = None
    at: datetime | None = None
