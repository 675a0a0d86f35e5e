"""``pueue-watcher history``: past phases from the state store, as a table or JSON."""

from __future__ import annotations

from typing import Any

import structlog

from watcher.config import Settings
from watcher.errors import StoreError
from watcher.phases.records import PhaseRecord
from watcher.render import clean, human_duration
from watcher.store import Store

log = structlog.get_logger("watcher")


async def load_history(
    settings: Settings, *, host: str | None, group: str | None
) -> tuple[int, list[PhaseRecord]]:
    try:
        store = await Store.open(settings.watcher.state_path)
    except StoreError as exc:
        import sys

        print(f"error: {exc}", file=sys.stderr)
        return 2, []
    try:
        return 0, await store.phases(host=host, group=group)
    finally:
        await store.close()


def history_document(phases: list[PhaseRecord]) -> list[dict[str, Any]]:
    return [
        {
            "id": p.id,
            "host": p.host,
            "group": p.group,
            "status": p.status,
            "started": (p.first_start or p.opened_at).isoformat(),
            "completed": None if p.completed_at is None else (p.last_end or p.completed_at).isoformat(),
            "duration_seconds": p.duration_seconds,
            "outcome": p.outcome,
            "counts": p.counts,
            "tasks": p.tasks,
            "failed_labels": p.failed_labels,
        }
        for p in phases
    ]


def history_table(phases: list[PhaseRecord]) -> str:
    header = ("HOST", "GROUP", "STARTED", "COMPLETED", "DURATION", "OUTCOME", "TASKS", "COUNTS")
    rows = [header]
    for p in phases:
        started = p.first_start or p.opened_at
        completed = p.last_end or p.completed_at
        rows.append((
            clean(p.host, 32),
            clean(p.group, 32),
            started.strftime("%Y-%m-%d %H:%M"),
            "-" if completed is None or p.status != "completed" else completed.strftime("%Y-%m-%d %H:%M"),
            "-" if p.duration_seconds is None else human_duration(p.duration_seconds),
            p.outcome or p.status,
            str(p.tasks),
            " ".join(f"{k}={n}" for k, n in p.counts.items()),
        ))  # fmt: skip
    if len(rows) == 1:
        return "no phases recorded yet\n"
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return (
        "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"
    )
