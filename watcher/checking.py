"""Checks at phase boundaries: which checks a completed phase gets, and running them (with the ClickHouse
handles of ``clickhouse_handles.py``).

When a phase completes, one ``pending`` check run per matching check is committed with it (same
transaction). The host's cycle then runs every pending run of the host concurrently, each within its own
timeout, and stores the results. A restart in the middle finds the pending runs again and runs them; a run
with a result is never run twice.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from fnmatch import fnmatchcase

import structlog

from checks.base import CheckContext, CheckResult, CheckStatus
from checks.config import CheckConfig
from checks.registry import build
from checks.runner import run_check
from watcher.clickhouse_handles import ClickHouseHandles as ClickHouseHandles  # the cycle imports it here
from watcher.config import Settings
from watcher.records import CheckRun, PhaseRecord
from watcher.transport import Transport

log = structlog.get_logger("watcher.checks")


def matching(checks: Sequence[CheckConfig], host: str, group: str) -> list[CheckConfig]:
    """The checks whose ``hosts`` and ``groups`` globs match."""
    return [
        c
        for c in checks
        if any(fnmatchcase(host, g) for g in c.hosts) and any(fnmatchcase(group, g) for g in c.groups)
    ]


def pending_runs(checks: Sequence[CheckConfig], phase: PhaseRecord) -> list[CheckRun]:
    return [
        CheckRun(phase_id=phase.id, check=c.name, host=phase.host, group=phase.group, status="pending")
        for c in matching(checks, phase.host, phase.group)
    ]


class HostAccess:
    """The :class:`checks.base.HostReader` of one host: its latest probe values and its transport."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self.latest: Mapping[str, float | None] = {}

    @property
    def probes(self) -> Mapping[str, float | None]:
        return self.latest

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        result = await self._transport.run(argv, timeout=timeout)
        return result.exit_status, bytes(result.stdout), bytes(result.stderr)


async def run_checks(
    runs: Sequence[CheckRun],
    phases: Mapping[str, PhaseRecord],
    configs: Sequence[CheckConfig],
    handles: ClickHouseHandles,
    host: HostAccess,
) -> list[CheckRun]:
    """Run the pending ``runs`` concurrently; return them with their results (a vanished check is error)."""
    by_name = {c.name: c for c in configs}

    async def one(run: CheckRun) -> CheckRun:
        config = by_name.get(run.check)
        if config is None:
            result = _error(run.check, "?", "no longer in the configuration")
        else:
            ctx = CheckContext(run.host, run.group, phases.get(run.phase_id), handles.get, host)
            try:
                check = build(config)
            except Exception as exc:  # an unknown kind or a broken plug-in is this check's error only
                result = _error(config.name, config.kind, str(exc))
            else:
                result = await run_check(check, ctx, config.timeout)
        log.info("check.result", host=run.host, group=run.group, check=run.check, status=result.status.value,
                 violations=result.violations, error=result.error)  # fmt: skip
        return CheckRun(
            phase_id=run.phase_id,
            check=run.check,
            host=run.host,
            group=run.group,
            status=result.status.value,
            result=result.to_dict(),
            at=datetime.now(UTC),
        )

    return list(await asyncio.gather(*(one(r) for r in runs)))


def _error(name: str, kind: str, message: str) -> CheckResult:
    return CheckResult(name=name, kind=kind, status=CheckStatus.ERROR, error=message)


async def check_now(settings: Settings, host_name: str, group: str) -> list[CheckResult]:
    """``pueue-watcher check``: run the checks matching ``host_name``/``group`` once, now. The phase is the
    group's last completed one in the store, when there is a store and such a phase."""
    from watcher.runtime import Runtime

    host = next(h for h in settings.hosts if h.name == host_name)
    configs = matching(settings.checks, host_name, group)
    async with Runtime(settings) as runtime:
        transports = runtime.transports(settings.hosts)
        handles = runtime.clickhouse(transports)
        phase = await _last_phase(settings, host_name, group) if configs else None
        access = HostAccess(transports[host.name])
        runs = [CheckRun(phase_id=phase.id if phase else "", check=c.name, host=host_name, group=group,
                         status="pending") for c in configs]  # fmt: skip
        phases = {phase.id: phase} if phase else {}
        done = await run_checks(runs, phases, configs, handles, access)
    return [_result_of(run) for run in done]


async def _last_phase(settings: Settings, host: str, group: str) -> PhaseRecord | None:
    from watcher.errors import StoreError
    from watcher.runtime import Runtime

    async with Runtime(settings) as runtime:  # the store only for this: closed before any check runs
        try:
            store = await runtime.read_store()  # `check` only reads it
        except StoreError:
            return None
        phases = await store.phases(host=host, group=group, status="completed", limit=1)
    return phases[0] if phases else None


def _result_of(run: CheckRun) -> CheckResult:
    data = run.result or {}
    return CheckResult(
        name=run.check,
        kind=str(data.get("kind", "?")),
        status=CheckStatus(run.status),
        violations=data.get("violations"),
        threshold=data.get("threshold", {}),
        samples=data.get("samples", []),
        sql=data.get("sql"),
        duration_seconds=float(data.get("duration_seconds", 0.0)),
        error=data.get("error"),
    )
