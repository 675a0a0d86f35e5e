"""What the store keeps besides phases and events: the record of one state-file clean."""

from __future__ import annotations

from datetime import datetime

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
