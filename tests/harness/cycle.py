"""An in-process harness for one host's cycle: a :class:`HostWatch` over a scripted poller (each poll
answers the next :class:`PollResult` the test queued), the fake transport for the commands the stages send
(gates, cleans), a temporary store that can be told to fail, and a ClickHouse that answers a number.

Each scenario here also runs against the real thing elsewhere: the daemon over sshd and a real pueued
(tests/test_daemon_e2e.py, tests/real_pueue/), real ClickHouse (tests/test_checks_e2e.py). This one runs in
milliseconds, so that every branch of a stage can have its test.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from checks.base import QueryResult
from tests.harness import state_db
from tests.harness.fake_transport import FakeTransport
from watcher.config import Settings
from watcher.cycle import CycleOutcome
from watcher.errors import HostError, StoreError
from watcher.hygiene import Hygiene
from watcher.metrics import MetricsState
from watcher.poll.poller import PollResult
from watcher.probes.health import BreachTracker
from watcher.pueue.model import Group, Result, Snapshot, Status, Task
from watcher.store import Store
from watcher.transport.base import CommandResult
from watcher.watch import HostWatch

HOST = "h"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
OK = CommandResult(0, b"", b"")


def task(i: int, group: str, status: Status = Status.RUNNING, result: Result | None = None) -> Task:
    """Task ``i`` of ``group``, created a day before T0; Done tasks ended an hour before T0."""
    end = T0 - timedelta(hours=1) if status is Status.DONE else None
    return Task.of(i, T0 - timedelta(days=1), group, f"{group}-{i}", status, result, None, None, end)


def done(i: int, group: str, result: Result = Result.SUCCESS) -> Task:
    return task(i, group, Status.DONE, result)


def snapshot(*tasks: Task, groups: Mapping[str, str] | None = None) -> Snapshot:
    """The tasks' groups (Running, parallel 1) and ``groups`` (name → status) besides."""
    named = {t.group: "Running" for t in tasks} | dict(groups or {})
    return Snapshot(groups={g: Group(g, s, 1) for g, s in named.items()}, tasks=tuple(tasks), format="v4")


@dataclass
class ScriptedPoller:
    """Stands in for :class:`watcher.poll.poller.HostPoller`: ``poll()`` answers the next queued result."""

    transport: FakeTransport
    results: list[PollResult] = field(default_factory=list)
    keep: frozenset[str] = frozenset()
    fingerprint: str = "fp"
    closed: bool = False

    async def poll(self) -> PollResult:
        return self.results.pop(0)

    async def close(self) -> None:
        self.closed = True


class FlakyStore:
    """The real store, except that the methods named in ``failing`` raise a temporary StoreError."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.failing: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._store, name)
        if name in self.failing:

            async def fail(*args: object, **kwargs: object) -> None:
                raise StoreError("database or disk is full (injected)", permanent=False)

            return fail
        return attribute


class CountingClickHouse:
    """A ClickHouse whose every query answers ``violations`` (one row, one number)."""

    def __init__(self) -> None:
        self.violations = 0
        self.queries: list[str] = []

    async def get(self, name: str) -> CountingClickHouse:
        return self

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        self.queries.append(sql)
        return QueryResult(columns=["violations"], rows=[[self.violations]])

    async def close(self) -> None:
        pass


@dataclass
class Cycles:
    """One host's watch and its scripted surroundings."""

    watch: HostWatch
    poller: ScriptedPoller
    transport: FakeTransport
    store: FlakyStore
    clickhouse: CountingClickHouse
    clock: datetime = T0

    async def cycle(self, answer: Snapshot | HostError | PollResult, *, clean: bool = True,
                    state_file_bytes: int | None = None, source: str = "state") -> CycleOutcome:  # fmt: skip
        """One cycle whose poll answers ``answer``: a snapshot, a failure, or a result as it is. Each poll is
        a minute after the last."""
        self.clock += timedelta(minutes=1)
        if isinstance(answer, Snapshot):
            finished = sum(t.finished for t in answer.tasks)
            result = PollResult(HOST, self.clock, 0.01, snapshot=answer, state_file_bytes=state_file_bytes,
                                source=source, file_done=finished, file_tasks=len(answer.tasks))  # fmt: skip
        elif isinstance(answer, HostError):
            result = PollResult(HOST, self.clock, 0.01, error=str(answer), reason=answer.reason,
                                permanent=not answer.temporary)  # fmt: skip
        else:
            result = answer
        self.poller.results.append(result)
        return await self.watch.cycle(clean=clean)

    def answer(self, *answers: CommandResult | HostError) -> None:
        """What the host answers to the next commands the stages send (a gate's pueue start, a clean)."""
        self.transport.answers.extend(answers)


def settings(**sections: Any) -> Settings:
    """Settings of one local host ``h``; ``sections`` as in config.toml (``gates=[{...}]``, ...)."""
    hosts = sections.pop("hosts", [{"name": HOST, "transport": "local"}])
    return Settings(hosts=hosts, **sections)


@contextlib.asynccontextmanager
async def cycles(tmp_path: Path, config: Settings | None = None) -> AsyncIterator[Cycles]:
    config = config or settings()
    store = await Store.open(tmp_path / "state.db")
    transport = FakeTransport([])
    poller = ScriptedPoller(transport)
    flaky, clickhouse = FlakyStore(store), CountingClickHouse()
    watch = HostWatch(config.hosts[0], poller, flaky, config, Hygiene(config.hygiene), clickhouse,  # type: ignore[arg-type]
                      BreachTracker(config.probes), MetricsState())  # fmt: skip
    try:
        yield Cycles(watch, poller, transport, flaky, clickhouse)
    finally:
        await watch.close()
        await store.close()


async def events(c: Cycles, kind: str | None = None) -> list[str]:
    """The kinds of the events committed so far (of ``kind`` only, if given)."""
    return [e.event for e in state_db.events(c.store.path) if kind is None or e.event == kind]


__all__: Sequence[str] = [
    "HOST",
    "OK",
    "T0",
    "Cycles",
    "cycles",
    "done",
    "events",
    "settings",
    "snapshot",
    "task",
]
