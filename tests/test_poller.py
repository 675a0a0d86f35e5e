"""The per-host poller with a scripted transport: fingerprints, the cached snapshot, and error mapping."""

from __future__ import annotations

import gzip
import os
from pathlib import Path

import pytest

from tests.harness.fake_transport import FakeTransport, Flood
from watcher.config import HostConfig
from watcher.errors import HostKeyRejected, HostUnreachable
from watcher.poll.poller import HostPoller
from watcher.remote.poll import MARKER
from watcher.transport.base import MAX_STDERR_BYTES, STDERR_TAIL_BYTES, CommandResult, size_text

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


# --- a hostile host (issue 13) -----------------------------------------------------------------------------

LOCAL = HostConfig(name="h", transport="local", groups=["*"])


def handoff_answer(path: Path | str) -> CommandResult:
    return CommandResult(0, MARKER + f"file state.json 10 1.5 7\ndaemon up\nhandoff {path}\n".encode(), b"")


async def test_a_handoff_over_ssh_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    """A remote host that answers with a path on the watcher's machine gets a one-line error, not the file."""
    own = tmp_path / "state.json"
    own.write_bytes((fixtures_dir / "v4_status.json").read_bytes())
    result = await HostPoller(HOST, FakeTransport([handoff_answer(own)]), timeout=5).poll()
    assert (result.ok, result.reason, result.snapshot) == (False, "parse", None)
    assert result.error == "the host answered a local-file handoff over SSH (only the local transport may)"


async def test_the_local_transport_still_hands_off_a_regular_file(tmp_path: Path, fixtures_dir: Path) -> None:
    """On this machine a handoff to the real state file is read as before (mapped, parsed part by part)."""
    own = tmp_path / "state.json"
    own.write_bytes((fixtures_dir / "v4_status.json").read_bytes())
    result = await HostPoller(LOCAL, FakeTransport([handoff_answer(own)]), timeout=5).poll()
    assert result.ok, result.error
    assert (result.source, result.snapshot is not None) == ("handoff", True)


async def test_a_local_handoff_to_a_fifo_or_a_symlink_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    """A FIFO (which would block a worker thread) and a symbolic link are refused; only regular files open."""
    fifo = tmp_path / "fifo" / "state.json"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    link = tmp_path / "link" / "state.json"
    link.parent.mkdir()
    link.symlink_to(fixtures_dir / "v4_status.json")
    fake = FakeTransport([handoff_answer(fifo), handoff_answer(link), handoff_answer("/dev/zero")])
    poller = HostPoller(LOCAL, fake, timeout=5)
    errors = [(await poller.poll()).error for _ in range(3)]
    assert errors == [
        f"cannot read {fifo}: not a regular file",
        f"cannot read {link}: it is a symbolic link",
        "cannot read /dev/zero: not a regular file",
    ]


async def test_a_local_gzip_bomb_is_refused_at_the_limit(tmp_path: Path) -> None:
    """A state.json.gz that inflates past the answer limit is refused there, not decompressed whole."""
    bomb = tmp_path / "state.json.gz"
    bomb.write_bytes(gzip.compress(b"\0" * (64 << 20), compresslevel=9))
    fake = FakeTransport([handoff_answer(bomb)])
    result = await HostPoller(LOCAL, fake, timeout=5, max_answer_bytes=8 << 20).poll()
    assert result.error == "the gzip payload decompresses to more than 8 MiB"


async def test_64_mib_of_header_lines_are_refused_at_the_header_cap() -> None:
    """A header of endless short lines is a one-line error once it passes MAX_HEADER_BYTES."""
    flood = CommandResult(0, MARKER + b"x\n" * (32 << 20), b"")
    result = await HostPoller(HOST, FakeTransport([flood]), timeout=5).poll()
    assert result.error == "the poll header is over 8 KiB (exit 0)"


async def test_a_64_mib_probe_block_is_refused_at_its_cap() -> None:
    """A probe block that never ends is refused once it passes MAX_PROBE_BYTES."""
    flood = CommandResult(0, MARKER + b"probe-begin\n" + b"--x\n" * (16 << 20), b"")
    result = await HostPoller(HostConfig(name="h", probes=True), FakeTransport([flood]), timeout=5).poll()
    assert result.error == "the probe block is over 16 KiB (exit 0): "


async def test_256_mib_of_stderr_is_kept_to_its_cap() -> None:
    """A stderr flood is drained but only its head and tail are kept, and the poll still reads pueue's exit
    code at the very end."""
    status = MARKER + b"file state.json 10 1.5 7\ndaemon down\nstatus none\n"
    floods = [
        Flood(b"", b"\xff\n", 256 << 20),
        Flood(status, b"\xff\n", 256 << 20, b"Error: boom\npueue-watcher-rc 3\n"),
    ]
    fake = FakeTransport(list(floods))
    poller = HostPoller(HOST, fake, timeout=30)
    first, second = await poller.poll(), await poller.poll()
    assert all(len(r.stderr) <= MAX_STDERR_BYTES + STDERR_TAIL_BYTES + 64 for r in fake.results)
    assert first.error is not None
    assert first.error.startswith("unexpected answer from the host (exit 1): �: �")
    assert len(first.error) < 400
    assert second.error is not None
    assert second.error.startswith("pueue status failed (exit 3): �: �")


@pytest.mark.parametrize(
    ("flood", "error"),
    [
        (Flood(MARKER, b"x\n", 64 << 20, exit_status=0), "the poll header is over 8 KiB (exit 0)"),
        (Flood(MARKER + b"probe-begin\n", b"--x\n", 64 << 20, exit_status=0),
         "the probe block is over 16 KiB (exit 0): "),
        (Flood(b"", b"", 0, stdout_flood=b"no marker\n", stdout_flood_bytes=64 << 20, exit_status=0),
         "unexpected answer from the host (exit 0): "),
    ],
)  # fmt: skip
async def test_a_header_that_is_wrong_stops_the_reading_early(flood: Flood, error: str) -> None:
    """64 MiB of header lines, of probe block, or of anything without the marker: the answer is refused
    once its first HEAD_BYTES show it, not after the 64 MiB. The poller's answer cap is 32 MiB here, so an
    answer read to the end would fail on the cap instead."""
    if not flood.stdout_flood:
        flood = Flood(flood.stdout, b"", 0, exit_status=0, stdout_flood=flood.stderr_chunk,
                      stdout_flood_bytes=flood.stderr_bytes)  # fmt: skip
    host = HostConfig(name="h", probes=True)
    result = await HostPoller(host, FakeTransport([flood]), timeout=5, max_answer_bytes=32 << 20).poll()
    assert result.error == error


async def test_an_answer_over_the_cap_is_refused(fixtures_dir: Path) -> None:
    """watcher.max_answer_bytes bounds both what is read and what a payload decompresses to."""
    payload = (fixtures_dir / "v4_status.json").read_bytes()
    plain = CommandResult(0, MARKER + b"file state.json 1 1.5 7\ndaemon up\nstate none\n" + payload, b"")
    small = len(payload) // 2
    read = await HostPoller(HOST, FakeTransport([plain]), timeout=5, max_answer_bytes=small).poll()
    inflated = await HostPoller(HOST, FakeTransport([state_answer(payload)]), timeout=5,
                                max_answer_bytes=small).poll()  # fmt: skip
    assert read.error == f"the host's answer is larger than {size_text(small)}"
    assert inflated.error == f"the gzip payload decompresses to more than {size_text(small)}"
