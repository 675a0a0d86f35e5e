"""The per-host poller with a scripted transport: fingerprints, the cached snapshot, and error mapping."""

from __future__ import annotations

import gzip
from pathlib import Path

from tests.harness.fake_transport import FakeTransport
from watcher.config import HostConfig
from watcher.errors import HostKeyRejected, HostUnreachable
from watcher.poll.poller import HostPoller
from watcher.poll.remote import MARKER
from watcher.transport.base import CommandResult

HOST = HostConfig(name="h", groups=["btc-*", "default"])


def state_answer(payload: bytes, fingerprint: str = "100 1.5 7") -> CommandResult:
    header = MARKER + f"file state.json {fingerprint}\ndaemon up\nstate gzip\n".encode()
    return CommandResult(0, header + gzip.compress(payload), b"")


UNCHANGED = CommandResult(0, MARKER + b"file state.json 100 1.5 7\ndaemon up\nunchanged\n", b"")


async def test_unchanged_state_is_not_transferred_twice(fixtures_dir: Path) -> None:
    """The second poll sends the fingerprint; an 'unchanged' answer reuses the parsed snapshot."""
    fake = FakeTransport([state_answer((fixtures_dir / "v4_status.json").read_bytes()), UNCHANGED])
    poller = HostPoller(HOST, fake, timeout=5)
    first = await poller.poll()
    second = await poller.poll()
    assert first.ok
    assert second.ok
    assert first.snapshot is not None
    assert second.snapshot is first.snapshot
    assert (first.source, second.source) == ("state", "unchanged")
    assert fake.calls[0][6] == ""  # no fingerprint known yet
    assert fake.calls[1][6] == "100 1.5 7"
    assert set(first.snapshot.groups) == {"btc-yearly", "default"}  # the globs filter groups
    assert {t.group for t in first.snapshot.tasks} == {"btc-yearly", "default"}
    assert first.state_file_bytes == 100


async def test_a_failure_forgets_the_fingerprint(fixtures_dir: Path) -> None:
    """After an error the next poll asks for the full state again (the host may have rebooted)."""
    payload = (fixtures_dir / "v3_status.json").read_bytes()
    fake = FakeTransport(
        [state_answer(payload), HostUnreachable("h:22: connection refused"), state_answer(payload)]
    )
    poller = HostPoller(HOST, fake, timeout=5)
    await poller.poll()
    failed = await poller.poll()
    assert (failed.ok, failed.reason, failed.error) == (False, "unreachable", "h:22: connection refused")
    assert failed.snapshot is None
    await poller.poll()
    assert fake.calls[2][6] == ""


async def test_bad_json_is_a_host_error_not_a_crash() -> None:
    fake = FakeTransport([state_answer(b'{"tasks": {"1": {"id": 1')])
    result = await HostPoller(HOST, fake, timeout=5).poll()
    assert result.reason == "parse"
    assert result.error is not None
    assert result.error.startswith("bad pueue JSON: pueue JSON is truncated at byte")


async def test_host_key_errors_keep_their_reason() -> None:
    fake = FakeTransport([HostKeyRejected("h:22: host key verification failed")])
    result = await HostPoller(HOST, fake, timeout=5).poll()
    assert result.reason == "host_key"
