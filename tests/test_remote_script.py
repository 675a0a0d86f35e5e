"""The one-round-trip poll script, run by a real /bin/sh against pueue directories laid out as pueue does."""

from __future__ import annotations

import gzip
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from watcher.config import HostConfig
from watcher.errors import BadPollOutput, PueueUnavailable
from watcher.poll.remote import MARKER, poll_argv, read_output


def run_script(
    host: HostConfig, known: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(poll_argv(host, known), capture_output=True, check=False, env=env)


@pytest.fixture
def pueue_dir(tmp_path: Path, fixtures_dir: Path) -> Path:
    """A pueue directory whose daemon is "alive" (pueue.pid names a live process) with a v4 state file."""
    directory = tmp_path / "pueue"
    directory.mkdir()
    shutil.copy(fixtures_dir / "v4_status.json", directory / "state.json")
    (directory / "pueue.pid").write_text(str(os.getpid()))  # pueue writes the bare pid, no newline
    return directory


def host_for(directory: Path, **extra: object) -> HostConfig:
    # The script runs here either way; "ssh" makes it send the state through the pipe, as it would remotely.
    return HostConfig.model_validate({"name": "h", "transport": "ssh", "pueue": "/nonexistent/pueue",
                                      "pueue_dir": str(directory), **extra})  # fmt: skip


def test_reads_the_state_file_then_skips_it_when_unchanged(pueue_dir: Path) -> None:
    """First poll transfers the state; the next, with the fingerprint, transfers only the header."""
    host = host_for(pueue_dir, compression="gzip")
    first = run_script(host)
    state = read_output(first.stdout, first.stderr, first.returncode)
    assert state.kind == "state"
    assert bytes(state.payload()) == (pueue_dir / "state.json").read_bytes()
    assert state.state_file_bytes == (pueue_dir / "state.json").stat().st_size
    assert state.daemon_up
    assert not state.pueue_found
    second = run_script(host, state.fingerprint)
    again = read_output(second.stdout, second.stderr, second.returncode)
    assert again.kind == "unchanged"
    assert again.body == b""
    assert len(second.stdout) < 800  # the probe block is about 300 bytes


def test_an_atomic_rewrite_changes_the_fingerprint(pueue_dir: Path) -> None:
    """pueue writes state.json.partial and renames it; even the same bytes get a new fingerprint."""
    host = host_for(pueue_dir)
    first = read_output(*_out(run_script(host)))
    partial = pueue_dir / "state.json.partial"
    partial.write_bytes((pueue_dir / "state.json").read_bytes())
    partial.rename(pueue_dir / "state.json")
    assert read_output(*_out(run_script(host, first.fingerprint))).kind == "state"


def test_local_transport_reads_the_file_itself(pueue_dir: Path) -> None:
    """On the watcher's own machine the script only names the file: no 76 MB through a pipe."""
    proc = run_script(host_for(pueue_dir, transport="local"))
    state = read_output(*_out(proc))
    assert state.kind == "handoff"
    assert len(proc.stdout) < 900
    assert bytes(state.payload()) == (pueue_dir / "state.json").read_bytes()


def test_prefers_the_newer_compressed_state(pueue_dir: Path) -> None:
    """v4 with compress_state_file writes state.json.gz; an old state.json may stay behind."""
    old = pueue_dir / "state.json"
    os.utime(old, (1_000_000, 1_000_000))
    (pueue_dir / "state.json.gz").write_bytes(gzip.compress(b'{"tasks": {}, "groups": {}}'))
    state = read_output(*_out(run_script(host_for(pueue_dir))))
    assert state.state_file == "state.json.gz"
    assert bytes(state.payload()) == b'{"tasks": {}, "groups": {}}'


@pytest.mark.parametrize("compression", ["gzip", "zstd", "none"])
def test_each_compression_round_trips(pueue_dir: Path, compression: str) -> None:
    state = read_output(*_out(run_script(host_for(pueue_dir, compression=compression))))
    assert bytes(state.payload()) == (pueue_dir / "state.json").read_bytes()


def test_dead_daemon_falls_back_to_pueue_status(pueue_dir: Path, tmp_path: Path) -> None:
    """A stale pid file means the daemon is down: the file is not trusted, and pueue's own error is shown."""
    (pueue_dir / "pueue.pid").write_text("999999999")
    fake = tmp_path / "fake-pueue"
    fake.write_text("#!/bin/sh\necho 'Error: Failed to connect to the daemon. Is it running?' >&2\nexit 1\n")
    fake.chmod(0o755)
    proc = run_script(host_for(pueue_dir, pueue=str(fake)))
    with pytest.raises(
        PueueUnavailable, match=r"pueue status failed \(exit 1\): Failed to connect to the daemon"
    ):
        read_output(*_out(proc))


def test_missing_pueue_is_reported(tmp_path: Path) -> None:
    proc = run_script(host_for(tmp_path / "nothing-here"))
    with pytest.raises(PueueUnavailable, match="pueue client was not found"):
        read_output(*_out(proc))


def test_home_relative_paths_expand_on_the_host(pueue_dir: Path, tmp_path: Path) -> None:
    """'~/…' is expanded by the remote shell, from the remote $HOME, not by the watcher."""
    home = pueue_dir.parent
    env = {"HOME": str(home), "PATH": os.environ["PATH"]}
    state = read_output(*_out(run_script(host_for(Path("~/pueue")), env=env)))
    assert state.kind == "state"


def test_noise_before_the_marker_is_ignored() -> None:
    """A login shell that prints a banner on stdout does not confuse the reader."""
    out = b"Welcome to bigblack!\n" + MARKER + b"daemon up\nfile state.json 10 1.5 7\nunchanged\n"
    state = read_output(out, b"", 0)
    assert (state.kind, state.fingerprint, state.state_file_bytes) == ("unchanged", "10 1.5 7", 10)


@pytest.mark.parametrize(
    "out",
    [b"", b"garbage", MARKER + b"daemon up\n", MARKER + b"state gzip\nnot gzip at all"],
)
def test_unreadable_output_is_a_clear_error(out: bytes) -> None:
    with pytest.raises(BadPollOutput):
        read_output(out, b"sh: 1: something odd\n", 2).payload()


def _out(proc: subprocess.CompletedProcess[bytes]) -> tuple[bytes, bytes, int]:
    return proc.stdout, proc.stderr, proc.returncode


@pytest.mark.parametrize("encoding", ["zstd", "gzip"])
def test_a_compression_bomb_is_refused_after_the_limit(encoding: str) -> None:
    """A payload that inflates past the limit is a BadPollOutput, stopped there rather than buffered whole."""
    import zlib

    import zstandard

    from watcher.poll.remote import _decompress

    zeros = b"\0" * (32 << 20)
    if encoding == "zstd":
        compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    else:
        compressor = zlib.compressobj(9, wbits=31)
    bomb = compressor.compress(zeros) + compressor.flush()
    assert len(bomb) < 64 << 10
    with pytest.raises(BadPollOutput, match="decompresses to more than 8 MiB"):
        _decompress(memoryview(bomb), encoding, limit=8 << 20)
    assert bytes(_decompress(memoryview(bomb), encoding, limit=32 << 20)) == zeros


async def test_an_endless_answer_is_cut_at_the_limit() -> None:
    """A host that prints without end cannot grow the watcher's buffer past the limit."""
    from watcher.transport.base import read_stream

    class Endless:
        async def read(self, n: int = -1) -> bytes:
            return b"x" * 65536

    with pytest.raises(BadPollOutput, match="larger than 1 MiB"):
        await read_stream(Endless(), limit=1 << 20)
