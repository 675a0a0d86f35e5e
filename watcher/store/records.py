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
    # Not run: the state file changed between the plan and the clean (watcher/poll/remote.py CLEAN_SCRIPT).
    deferred: bool = False


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
