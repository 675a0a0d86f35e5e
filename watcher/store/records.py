"""What the store keeps besides phases and events: cleans, check runs and gate actions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import msgspec


class CleanRecord(msgspec.Struct, frozen=True, kw_only=True):
    """One clean of a host's pueue state file, or a dry run of one."""

    host: str
    at: datetime
    groups: list[str]
    mode: str  # "successful" (only Success tasks are removed) or "all" (every finished task)
    dry_run: bool
    bytes_before: int | None  # the state file's size, when it could be read
    bytes_after: int | None
    removed: dict[str, dict[str, int]]  # group -> result -> how many of the removed tasks had it
    failed_labels: dict[str, list[str]]  # group -> labels of the failed tasks the clean removes
    # Not run: a task finished between the plan and the clean (watcher/poll/remote.py CLEAN_SCRIPT), or the
    # host could not run a bulk removal.
    deferred: bool = False
    # "host": one `pueue clean -s` of the whole host (every group's successful tasks: ``removed`` lists the
    # running groups too), then, with mode "all", `pueue clean --group=G` of the complete groups that hold
    # failed tasks; "groups": `pueue clean [-s] --group=G` of each of ``groups``; "bulk": `pueue remove` of
    # the successful tasks of ``groups``, in chunks, on a large host (watcher/hygiene.py). The ids are not
    # stored: they are derived from the plan's snapshot.
    scope: str = "groups"
    # The outcome, known from the first poll after the clean. Partial: some of what the plan meant to remove
    # is still there (``kept``: group -> how many tasks), because the budget (hygiene.timeout) ran out, the
    # watcher stopped meanwhile, or pueue keeps tasks that unfinished ones depend on; ``note`` says which.
    # The body is msgspec JSON: a record written before these fields existed reads with their defaults
    # (scope "groups", complete), so they need no schema migration.
    partial: bool = False
    kept: dict[str, int] = msgspec.field(default_factory=dict)
    note: str | None = None
    seconds: float | None = None  # how long the clean command ran: an upper bound of pueued's lock time


class CheckRun(msgspec.Struct, frozen=True, kw_only=True):
    """One check of one completed phase: ``pending`` until it has run, then its result."""

    phase_id: str
    check: str
    host: str
    group: str
    status: str  # "pending", "ok", "warn", "fail" or "error"
    result: dict[str, Any] | None = None  # CheckResult.to_dict()
    at: datetime | None = None  # when it finished


class GateAction(msgspec.Struct, frozen=True, kw_only=True):
    """What a gate did after a phase: ``pending`` until its checks are done, then ``started`` or ``held``."""

    phase_id: str
    host: str
    after: str
    start: str
    status: str  # "pending", "started", "held" or "error"
    reason: str | None = None
    at: datetime | None = None
