"""The plug-in interface of checks: what a check receives, what it returns, and how thresholds decide.

A check is any object with a ``name``, a ``kind`` and ``async def run(ctx) -> CheckResult``. It gets a
frozen :class:`CheckContext` (the host, the group, the phase that completed, and handles for ClickHouse and
for reading the host) and never raises: the runner turns an exception, a timeout or an unreachable database
into status ``error``, never ``ok``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from checks.config import CheckConfig

MAX_SAMPLES = 5


class CheckStatus(StrEnum):
    OK = "ok"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"

    @property
    def severity(self) -> int:
        """0 ok, 1 warn, 2 fail, 3 error: the exit code of ``pueue-watcher check`` and the metric value."""
        return _SEVERITY[self]


_SEVERITY = {CheckStatus.OK: 0, CheckStatus.WARN: 1, CheckStatus.FAIL: 2, CheckStatus.ERROR: 3}


@dataclass(frozen=True, slots=True)
class CheckResult:
    name: str
    kind: str
    status: CheckStatus
    violations: float | None = None
    threshold: Mapping[str, float | None] = field(default_factory=dict)  # {"warn_above": …, "fail_above": …}
    samples: Sequence[Mapping[str, Any]] = ()  # at most MAX_SAMPLES rows
    sql: str | None = None
    duration_seconds: float = 0.0
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The ``check --json`` form."""
        data: dict[str, Any] = {
            "name": self.name,
            "kind": self.kind,
            "status": self.status.value,
            "violations": self.violations,
            "threshold": dict(self.threshold),
            "samples": [dict(s) for s in self.samples],
            "sql": self.sql,
            "duration_seconds": round(self.duration_seconds, 6),
        }
        if self.error is not None:
            data["error"] = self.error
        return data


@dataclass(frozen=True, slots=True)
class QueryResult:
    columns: Sequence[str]
    rows: Sequence[Sequence[Any]]

    def dicts(self, limit: int = MAX_SAMPLES) -> list[dict[str, Any]]:
        return [dict(zip(self.columns, (_plain(v) for v in row), strict=False)) for row in self.rows[:limit]]


class ClickHouse(Protocol):
    """A ClickHouse connection for checks: read-only, bounded in time and threads by configuration."""

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult: ...


class Phase(Protocol):
    """The phase that completed, as a check sees it: the watcher's own phase record conforms (mypy checks it
    where the watcher builds a :class:`CheckContext`). Times are timezone-aware, in UTC."""

    @property
    def id(self) -> str: ...  # stable: the same phase always has the same id

    @property
    def host(self) -> str: ...

    @property
    def group(self) -> str: ...

    @property
    def outcome(self) -> str | None: ...  # "success" (every task Success) or "failed"

    @property
    def counts(self) -> Mapping[str, int]: ...  # tasks per result ("success", "failed", …), plus "removed"

    @property
    def tasks(self) -> int: ...

    @property
    def first_start(self) -> datetime | None: ...  # the earliest start of its tasks

    @property
    def last_end(self) -> datetime | None: ...  # the latest end of its tasks

    @property
    def completed_at(self) -> datetime | None: ...  # when the watcher saw the group complete

    @property
    def failed_labels(self) -> Sequence[str]: ...  # the failed tasks' labels, at most 20

    @property
    def duration_seconds(self) -> float | None: ...  # from first_start to last_end


class HostReader(Protocol):
    """Read-only access to the watched host: the latest probe values, and a command when a check needs it."""

    @property
    def probes(self) -> Mapping[str, float | None]: ...

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]: ...


@dataclass(frozen=True, slots=True)
class CheckContext:
    host: str
    group: str
    phase: Phase | None
    clickhouse: Callable[[str], Awaitable[ClickHouse]]  # by the name of a [[clickhouse]] entry
    host_reader: HostReader

    def params(self) -> dict[str, Any]:
        """Query parameters every check may use in ``where`` or ``sql``: ``%(host)s``, ``%(group)s``,
        ``%(phase_start)s``, ``%(phase_end)s`` (the phase's first task start and last task end)."""
        phase = self.phase
        return {
            "host": self.host,
            "group": self.group,
            "phase_start": None if phase is None else phase.first_start,
            "phase_end": None if phase is None else phase.last_end,
        }


class Check(Protocol):
    name: str
    kind: str

    async def run(self, ctx: CheckContext) -> CheckResult: ...


def evaluate(violations: float, warn_above: float | None, fail_above: float) -> CheckStatus:
    """``fail`` above ``fail_above``, else ``warn`` above ``warn_above`` (if set), else ``ok``."""
    if violations > fail_above:
        return CheckStatus.FAIL
    if warn_above is not None and violations > warn_above:
        return CheckStatus.WARN
    return CheckStatus.OK


def measured(
    check: Check, config: CheckConfig, violations: float, samples: Sequence[Mapping[str, Any]], sql: str,
    started: float,
) -> CheckResult:  # fmt: skip
    """The result of a check that counted ``violations`` (``started``: its ``time.perf_counter()``)."""
    return CheckResult(
        name=check.name,
        kind=check.kind,
        status=evaluate(violations, config.warn_above, config.fail_above),
        violations=violations,
        threshold={"warn_above": config.warn_above, "fail_above": config.fail_above},
        samples=samples,
        sql=sql,
        duration_seconds=time.perf_counter() - started,
    )


def _plain(value: Any) -> Any:
    """A JSON-friendly sample value (dates, decimals and UUIDs as text)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return str(value)
