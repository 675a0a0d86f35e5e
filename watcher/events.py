"""Events: what the watcher tells people. Built here from state changes; delivered by the outbox."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from watcher.records import CheckRun, CleanRecord, Event, GateAction, PhaseRecord


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
            "severity": "info" if record.outcome == "success" else "warning",
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


def _event(
    kind: str, key: str, host: str, group: str | None, at: datetime, severity: str, summary: str, **data: Any
) -> Event:
    return Event(
        id=f"{kind}:{key}",
        event=kind,
        host=host,
        group=group,
        at=at,
        data={"severity": severity, "summary": summary, **data},
    )


_CHECK_EVENT = {
    "fail": ("check.failed", "critical"),
    "warn": ("check.warned", "warning"),
    "error": ("check.errored", "warning"),
}


def check_result(run: CheckRun, previous: str | None) -> Event | None:
    """``check.failed/warned/errored`` for a result that is not ok; ``check.recovered`` for an ok result
    after one that was not (``previous`` is the status of the same check's last result for that group)."""
    result = run.result or {}
    at = run.at or datetime.now(UTC)
    detail = {
        "check": run.check,
        "status": run.status,
        "phase": run.phase_id,
        "violations": result.get("violations"),
        "threshold": result.get("threshold"),
        "samples": result.get("samples", []),
        "error": result.get("error"),
    }
    where = f"{run.host}/{run.group}"
    if run.status in _CHECK_EVENT:
        kind, severity = _CHECK_EVENT[run.status]
        what = result.get("error") or f"{result.get('violations')} violations"
        return _event(
            kind,
            f"{run.phase_id}:{run.check}",
            run.host,
            run.group,
            at,
            severity,
            f"{where}: check {run.check} {run.status}: {what}",
            **detail,
        )
    if run.status == "ok" and previous not in (None, "ok", "pending"):
        return _event(
            "check.recovered",
            f"{run.phase_id}:{run.check}",
            run.host,
            run.group,
            at,
            "info",
            f"{where}: check {run.check} passes again",
            **detail,
        )
    return None


def host_down(host: str, since: datetime, failures: int, reason: str | None, error: str | None) -> Event:
    return _event(
        "host.down",
        f"{host}:{since.isoformat()}",
        host,
        None,
        since,
        "critical",
        f"{host}: down after {failures} failed poll{'s' if failures != 1 else ''}: {error}",
        failures=failures,
        reason=reason,
        error=error,
    )


def host_up(host: str, down: Event, at: datetime) -> Event:
    return _event(
        "host.up",
        f"{host}:{down.at.isoformat()}",
        host,
        None,
        at,
        "info",
        f"{host}: answering again",
        down_since=down.at.isoformat(),
    )


def probe_change(host: str, kind: str, probe: str, reason: str, at: datetime) -> Event:
    """``probe.breach`` or ``probe.recovered``."""
    name = "probe.breach" if kind == "breach" else "probe.recovered"
    severity = "warning" if kind == "breach" else "info"
    return _event(
        name,
        f"{host}:{probe}:{at.isoformat()}",
        host,
        None,
        at,
        severity,
        f"{host}: {probe} {'breach' if kind == 'breach' else 'recovered'}: {reason}",
        probe=probe,
        reason=reason,
    )


def state_cleaned(record: CleanRecord) -> Event:
    before, after = record.bytes_before, record.bytes_after
    sizes = f"{before} → {after} bytes" if before is not None and after is not None else "size unknown"
    groups = record.groups
    what = f"the whole host ({len(groups)} groups)" if record.scope == "host" else ", ".join(groups)
    partial = f"; partial: {record.note}" if record.partial else ""
    summary = f"{record.host}: cleaned {what} ({sizes}){partial}"
    key = f"{record.host}:{record.at.isoformat()}"
    return _event(
        "state.cleaned",
        key,
        record.host,
        None,
        record.at,
        "info",
        summary,
        groups=record.groups,
        mode=record.mode,
        scope=record.scope,
        bytes_before=before,
        bytes_after=after,
        removed=record.removed,
        partial=record.partial,
        kept=record.kept,
        note=record.note,
        seconds=record.seconds,
    )


def gate_action(action: GateAction) -> Event | None:
    if action.status not in ("started", "held"):
        return None
    kind = f"gate.{action.status}"
    severity = "info" if action.status == "started" else "warning"
    at = action.at or datetime.now(UTC)
    verb = "started" if action.status == "started" else "held"
    summary = f"{action.host}: {action.start} {verb} after {action.after}: {action.reason}"
    return _event(
        kind,
        f"{action.phase_id}:{action.start}",
        action.host,
        action.start,
        at,
        severity,
        summary,
        after=action.after,
        start=action.start,
        reason=action.reason,
        phase=action.phase_id,
    )
