"""Events: what the watcher tells people. Built here from state changes; delivered by the outbox."""

from __future__ import annotations

from watcher.phases.records import Event, PhaseRecord


def phase_completed(record: PhaseRecord) -> Event:
    """``phase.completed``; its id is derived from the phase id, so it is the same on every retry."""
    assert record.completed_at is not None
    started = record.first_start or record.opened_at
    completed = record.last_end or record.completed_at
    counts = ", ".join(
        f"{n} {k.replace('_', ' ')}" for k, n in sorted(record.counts.items(), key=lambda kv: -kv[1])
    )
    return Event(
        id=f"phase.completed:{record.id}",
        event="phase.completed",
        host=record.host,
        group=record.group,
        at=record.completed_at,
        data={
            "outcome": record.outcome,
            "counts": record.counts,
            "tasks": record.tasks,
            "started": started.isoformat(),
            "completed": completed.isoformat(),
            "duration_seconds": round((completed - started).total_seconds(), 3),
            "failed_labels": record.failed_labels,
            "phase": record.id,
            "probes": record.probes,
            "summary": f"{record.host}/{record.group}: phase {record.outcome}, {record.tasks} tasks "
            f"({counts})",
        },
    )
