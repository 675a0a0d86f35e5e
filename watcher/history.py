"""``pueue-watcher history``: past phases with their checks and gate actions, as a table or JSON.

A read-only command: it never creates a store. A missing one is reported in one line, with exit 1: most often
the command read another configuration than the daemon's (an admin's own ``~/.local/state``), and an empty
store made there would answer "no phases recorded yet" for a fleet that has a history. The table names the
store it read; ``--json`` prints only the document.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import Any

from watcher.config import Settings
from watcher.errors import StoreError, StoreMissing
from watcher.records import CheckRun, GateAction, PhaseRecord
from watcher.render import clean, human_duration
from watcher.runtime import Runtime

EXIT_OK, EXIT_NO_STORE, EXIT_UNUSABLE = 0, 1, 2

# Where the system unit keeps its store (docs/operations.md): the usual answer to a missing one.
SYSTEM_UNIT_HINT = (
    "the system unit's store: sudo -u pueue-watcher pueue-watcher history -c /etc/pueue-watcher/config.toml"
)


@dataclass(frozen=True, slots=True)
class PhaseHistory:
    phase: PhaseRecord
    checks: list[CheckRun]
    gates: list[GateAction]


@dataclass(frozen=True, slots=True)
class History:
    path: str  # the store read, resolved
    entries: list[PhaseHistory]


async def load_history(
    settings: Settings, *, host: str | None, group: str | None
) -> tuple[int, History | None]:
    """The phases of the store at ``watcher.state_path``; or an exit code and None, after one line on stderr:
    1 when there is no store there, 2 when it cannot be used."""
    async with Runtime(settings) as runtime:
        try:
            store = await runtime.read_store()
        except StoreMissing as exc:
            print(f"{exc}: no watcher has recorded there ({SYSTEM_UNIT_HINT})", file=sys.stderr)
            return EXIT_NO_STORE, None
        except StoreError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNUSABLE, None
        phases = await store.phases(host=host, group=group)
        checks = await store.check_runs(host=host)
        gates = await store.gate_actions(host=host)
    entries = [
        PhaseHistory(p, [c for c in checks if c.phase_id == p.id], [g for g in gates if g.phase_id == p.id])
        for p in phases
    ]
    return EXIT_OK, History(store.path, entries)


def history_document(entries: list[PhaseHistory]) -> list[dict[str, Any]]:
    return [
        _phase(e.phase)
        | {
            "checks": [
                (c.result or {}) | {"name": c.check, "status": c.status, "at": c.at and c.at.isoformat()}
                for c in e.checks
            ],
            "gates": [{"start": g.start, "status": g.status, "reason": g.reason} for g in e.gates],
        }
        for e in entries
    ]


def _phase(p: PhaseRecord) -> dict[str, Any]:
    return {
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


def history_text(history: History, *, host: str | None, group: str | None) -> str:
    """The table, under a line naming the store it was read from."""
    return f"state store: {history.path}\n" + (
        history_table(history.entries) if history.entries else _nothing(host, group)
    )


def _nothing(host: str | None, group: str | None) -> str:
    """An empty answer says whether the filters or the store are empty."""
    if host is None and group is None:
        return "no phases recorded yet\n"
    named = [f"{kind} {name!r}" for kind, name in (("host", host), ("group", group)) if name is not None]
    return f"no phases for {', '.join(named)}\n"


def history_table(entries: list[PhaseHistory]) -> str:
    if not entries:
        return "no phases recorded yet\n"
    header = ("HOST", "GROUP", "STARTED (UTC)", "COMPLETED (UTC)", "DURATION", "OUTCOME", "TASKS", "DETAILS")
    rows = [header]
    for entry in entries:
        p = entry.phase
        started = p.first_start or p.opened_at
        completed = p.last_end or p.completed_at
        details = [f"{k}={n}" for k, n in p.counts.items()]
        details += [f"check {c.check}: {c.status}" for c in entry.checks]
        details += [f"gate {clean(g.start, 32)}: {g.status}" for g in entry.gates]  # a pueue group's name
        if p.failed_labels:  # what failed, by the labels the tasks were given (the first few)
            shown = ", ".join(clean(label, 24) for label in p.failed_labels[:3])
            more = len(p.failed_labels) - 3
            details.append(f"failed: {shown}" + (f" and {more} more" if more > 0 else ""))
        rows.append((
            clean(p.host, 32),
            clean(p.group, 32),
            started.strftime("%Y-%m-%d %H:%M"),
            "-" if completed is None or p.status != "completed" else completed.strftime("%Y-%m-%d %H:%M"),
            "-" if p.duration_seconds is None else human_duration(p.duration_seconds),
            p.outcome or p.status,
            str(p.tasks),
            ", ".join(details),
        ))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    return (
        "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"
    )
