"""Gates between phases: when ``after`` completes and its checks pass, ``pueue start -g start``.

A gate decision is ``pending`` from the moment its phase completes (committed with it) until every check of
that phase has a result. Then: every check ok and the phase succeeded → start the next group; anything else
(a check that warns, fails or errs, or failed tasks) → keep the next group paused, pausing it if it runs,
unless ``on_fail = "start"``. The action and its reason are recorded, and ``history`` shows them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import msgspec
import structlog

from watcher.config import GateConfig, HostConfig
from watcher.errors import HostError
from watcher.records import CheckRun, GateAction, PhaseRecord
from watcher.remote.pueue import command_error, pueue_argv
from watcher.transport import Transport

log = structlog.get_logger("watcher.gates")


def pending_gates(gates: Sequence[GateConfig], phase: PhaseRecord) -> list[GateAction]:
    return [
        GateAction(phase_id=phase.id, host=phase.host, after=g.after, start=g.start, status="pending")
        for g in gates
        if g.host == phase.host and g.after == phase.group
    ]


def decide(gate: GateConfig, phase: PhaseRecord | None, runs: Sequence[CheckRun]) -> tuple[bool, str]:
    """(start?, why). Call only when no run is pending."""
    problems = [f"check {r.check} {r.status}" for r in runs if r.status != "ok"]
    if phase is not None and phase.outcome != "success":
        failed = sum(n for k, n in phase.counts.items() if k not in ("success", "removed"))
        problems.append(f"phase {phase.group} {phase.outcome} ({failed} tasks did not succeed)")
    if not problems:
        passed = f"{len(runs)} checks passed" if runs else "no checks configured"
        return True, f"{gate.after} complete, {passed}"
    reason = "; ".join(problems)
    if gate.on_fail == "start":
        return True, f"{reason}; starting anyway (on_fail = start)"
    return False, reason


async def apply(
    host: HostConfig, transport: Transport, action: GateAction, start: bool, reason: str, timeout: float
) -> GateAction:
    """Run ``pueue start --group=G`` or ``pueue pause --wait --group=G`` (one separate, quoted argument).

    A hold is ``pause --wait``: plain ``pause -g`` also SIGSTOPs the group's running tasks, and a gate must
    only keep new tasks from starting, never freeze work in progress (a task stopped mid-write to ClickHouse
    holds its connection and its locks until someone notices)."""
    verb = ["start"] if start else ["pause", "--wait"]
    try:
        # --group=NAME: pueue would read a name that starts with "-" as an option of its own.
        answer = await transport.run(pueue_argv(host, *verb, f"--group={action.start}"), timeout=timeout)
        if answer.exit_status != 0:
            why = command_error(answer.stdout, answer.stderr)
            raise HostError(f"pueue {verb[0]} failed (exit {answer.exit_status}): {why}")
    except HostError as exc:
        log.warning("gate.error", host=host.name, after=action.after, start=action.start, error=str(exc))
        failed = f"{reason}; {exc}"
        return msgspec.structs.replace(action, status="error", reason=failed, at=datetime.now(UTC))
    status = "started" if start else "held"
    log.info(f"gate.{status}", host=host.name, after=action.after, start=action.start, reason=reason)
    return msgspec.structs.replace(action, status=status, reason=reason, at=datetime.now(UTC))
