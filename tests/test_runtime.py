"""``watcher/runtime.py``: what a command opens is closed, in the reverse order, however the command ends.

In-process, on a temporary store, with scripted transports: no sshd and no ClickHouse."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tests.harness.fake_transport import FakeTransport
from watcher import runtime as runtime_module
from watcher.clickhouse_handles import ClickHouseHandles
from watcher.config import HostConfig, Settings, WatcherSection, settings_from_mapping
from watcher.daemon import EXIT_CONFIG, EXIT_OK, run_once
from watcher.errors import StoreMissing
from watcher.runtime import Runtime
from watcher.store import Store


class Boom(Exception):
    """What the command's own work raises in these tests."""


def settings_for(tmp_path: Path, hosts: int = 2) -> Settings:
    return settings_from_mapping({
        "watcher": {"state_path": str(tmp_path / "state.db")},
        "metrics": {"listen": ""},
        "hosts": [{"name": f"h{i}", "address": "127.0.0.1"} for i in range(hosts)],
    })  # fmt: skip


@pytest.fixture
def closed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """What was closed, in order: "store", "transport hN", "handles". The transports are scripted ones."""
    order: list[str] = []

    class Recorded(FakeTransport):
        name = ""

        async def close(self) -> None:
            order.append(f"transport {self.name}")
            await super().close()

    def open_transport(host: HostConfig, watcher: WatcherSection) -> FakeTransport:
        transport = Recorded([])
        transport.name = host.name
        return transport

    store_close = Store.close

    async def close_store(store: Store) -> None:
        order.append("store")
        await store_close(store)

    handles_close = ClickHouseHandles.close

    async def close_handles(handles: ClickHouseHandles) -> None:
        order.append("handles")
        await handles_close(handles)

    monkeypatch.setattr(runtime_module, "open_transport", open_transport)
    monkeypatch.setattr(Store, "close", close_store)
    monkeypatch.setattr(ClickHouseHandles, "close", close_handles)
    return order


async def store_transports_handles(settings: Settings) -> None:
    """What ``run`` and ``once`` open, in their order."""
    async with Runtime(settings) as runtime:
        assert await runtime.daemon_store() is not None
        runtime.clickhouse(runtime.transports(settings.hosts))


async def read(settings: Settings) -> None:
    async with Runtime(settings) as runtime:
        await runtime.read_store()


def files(directory: Path) -> list[Path]:
    return list(directory.iterdir())


async def unlocked(settings: Settings) -> bool:
    """The store's lock is free: another ``run`` could start."""
    async with Runtime(settings) as other:
        return await other.daemon_store() is not None


async def test_everything_is_closed_on_success_handles_first_and_the_store_last(
    tmp_path: Path, closed: list[str]
) -> None:
    settings = settings_for(tmp_path)
    async with Runtime(settings) as runtime:
        assert await runtime.daemon_store() is not None
        transports = runtime.transports(settings.hosts)
        runtime.clickhouse(transports)
        assert not closed
    assert closed == ["handles", "transport h0", "transport h1", "store"]
    assert all(isinstance(t, FakeTransport) and t.closed for t in transports.values())
    assert await unlocked(settings)


async def test_everything_is_closed_when_the_command_raises(tmp_path: Path, closed: list[str]) -> None:
    settings = settings_for(tmp_path)

    async def command() -> None:
        async with Runtime(settings) as runtime:
            assert await runtime.daemon_store() is not None
            runtime.clickhouse(runtime.transports(settings.hosts))
            raise Boom

    with pytest.raises(Boom):
        await command()
    assert closed == ["handles", "transport h0", "transport h1", "store"]
    assert await unlocked(settings)


async def test_a_transport_that_cannot_be_made_leaves_the_earlier_ones_and_the_store_closed(
    tmp_path: Path, closed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path, hosts=3)
    made = vars(runtime_module)["open_transport"]  # the fixture's

    def second_fails(host: HostConfig, watcher: WatcherSection) -> Any:
        if host.name == "h1":
            raise Boom
        return made(host, watcher)

    monkeypatch.setattr(runtime_module, "open_transport", second_fails)
    with pytest.raises(Boom):
        await store_transports_handles(settings)
    assert closed == ["transport h0", "store"]
    assert await unlocked(settings)


async def test_handles_that_cannot_be_made_leave_the_transports_and_the_store_closed(
    tmp_path: Path, closed: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = settings_for(tmp_path)

    def refused(*args: object) -> ClickHouseHandles:
        raise Boom

    monkeypatch.setattr(runtime_module, "ClickHouseHandles", refused)
    with pytest.raises(Boom):
        await store_transports_handles(settings)
    assert closed == ["transport h0", "transport h1", "store"]
    assert await unlocked(settings)


async def test_a_store_that_cannot_be_read_leaves_the_transports_and_handles_closed(
    tmp_path: Path, closed: list[str]
) -> None:
    """``check``'s order: transports and handles, then the store (here missing)."""
    settings = settings_for(tmp_path)

    async def check() -> None:
        async with Runtime(settings) as runtime:
            runtime.clickhouse(runtime.transports(settings.hosts))
            await runtime.read_store()

    with pytest.raises(StoreMissing):
        await check()
    assert closed == ["handles", "transport h0", "transport h1"]


async def test_what_the_command_built_on_top_is_closed_first(tmp_path: Path, closed: list[str]) -> None:
    """The daemon (its outbox, its hosts' cleans) closes before the handles and transports it uses."""
    settings = settings_for(tmp_path)

    async def close_daemon() -> None:
        closed.append("daemon")

    async with Runtime(settings) as runtime:
        assert await runtime.daemon_store() is not None
        runtime.clickhouse(runtime.transports(settings.hosts))
        runtime.on_close(close_daemon)
    assert closed == ["daemon", "handles", "transport h0", "transport h1", "store"]


async def test_a_read_only_command_creates_no_store(tmp_path: Path, closed: list[str]) -> None:
    settings = settings_for(tmp_path)
    with pytest.raises(StoreMissing):
        await read(settings)
    assert files(tmp_path) == []
    assert closed == []


async def test_a_read_only_command_reads_beside_a_running_daemon(tmp_path: Path, closed: list[str]) -> None:
    """The daemon's lock does not keep ``history`` or ``health`` out, and they do not take it."""
    settings = settings_for(tmp_path)
    async with Runtime(settings) as daemon:
        assert await daemon.daemon_store() is not None
        async with Runtime(settings) as reader:
            store = await reader.read_store()
            assert await store.phases() == []
        assert closed == ["store"]
    assert closed == ["store", "store"]


async def test_a_second_daemon_is_refused_in_one_line(tmp_path: Path, closed: list[str]) -> None:
    settings = settings_for(tmp_path)
    async with Runtime(settings) as first:
        assert await first.daemon_store() is not None
        with capture_logs() as logs:
            async with Runtime(settings) as second:
                assert await second.daemon_store(asyncio.Event()) is None  # in use: not retried
        assert [(e["event"], e["log_level"]) for e in logs] == [("store.unusable", "error")]
        assert "is in use by pid" in logs[0]["error"]
    assert closed == ["store"]


async def test_once_closes_its_store_and_transports(tmp_path: Path, closed: list[str]) -> None:
    """``once`` with no host to poll: the round runs and everything it opened is closed, the store last."""
    settings = settings_for(tmp_path)
    code, outcomes = await run_once(settings, hosts=[])
    assert (code, outcomes) == (EXIT_OK, [])
    # The daemon closes its handles (after its outbox, before its hosts' transports); the runtime's own close
    # of them, which matters when the daemon could not be built, then finds nothing left to close.
    assert closed == ["handles", "handles", "store"]
    assert await unlocked(settings)


async def test_once_on_a_store_in_use_opens_nothing_else(tmp_path: Path, closed: list[str]) -> None:
    settings = settings_for(tmp_path)
    async with Runtime(settings) as daemon:
        assert await daemon.daemon_store() is not None
        code, outcomes = await run_once(settings)
    assert (code, outcomes) == (EXIT_CONFIG, [])
    assert closed == ["store"]
