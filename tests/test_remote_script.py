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
from watcher.remote.poll import MARKER, poll_argv, read_output
from watcher.remote.pueue import ERROR_BYTES, pueue_error
from watcher.transport.base import MAX_STDERR_BYTES, STDERR_TAIL_BYTES
from watcher.transport.local import LocalTransport


def run_script(
    host: HostConfig, known: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(poll_argv(host, known), capture_output=True, check=False, env=env)


@pytest.fixture
def pueue_dir(tmp_path: Path, fixtures_dir: Path, pueued_pid: int) -> Path:
    """A pueue directory whose daemon is "alive" (pueue.pid names a live pueued) with a v4 state file: the
    plain layout, a daemon started without $XDG_RUNTIME_DIR."""
    directory = tmp_path / "pueue"
    directory.mkdir()
    shutil.copy(fixtures_dir / "v4_status.json", directory / "state.json")
    (directory / "pueue.pid").write_text(str(pueued_pid))  # pueue writes the bare pid, no newline
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
    state = read_output(*_out(proc), local=True)
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

    from watcher.remote.payload import decompress

    zeros = b"\0" * (32 << 20)
    if encoding == "zstd":
        compressor = zstandard.ZstdCompressor(write_content_size=False).compressobj()
    else:
        compressor = zlib.compressobj(9, wbits=31)
    bomb = compressor.compress(zeros) + compressor.flush()
    assert len(bomb) < 64 << 10
    with pytest.raises(BadPollOutput, match="decompresses to more than 8 MiB"):
        decompress(memoryview(bomb), encoding, limit=8 << 20)
    assert bytes(decompress(memoryview(bomb), encoding, limit=32 << 20)) == zeros


async def test_an_endless_answer_is_cut_at_the_limit() -> None:
    """A host that prints without end cannot grow the watcher's buffer past the limit."""
    from watcher.transport.base import read_stream

    class Endless:
        async def read(self, n: int = -1) -> bytes:
            return b"x" * 65536

    with pytest.raises(BadPollOutput, match="larger than 1 MiB"):
        await read_stream(Endless(), limit=1 << 20)


# Where pueue keeps its files: the script finds them as pueue does (pueue_lib/src/settings.rs).


def _lay_out(root: Path, fixtures_dir: Path, pueue: Path, pid_dir: Path, pid: int) -> None:
    pueue.mkdir(parents=True, exist_ok=True)
    pid_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(fixtures_dir / "v4_status.json", pueue / "state.json")
    (pid_dir / "pueue.pid").write_text(str(pid))


def _poll_in(home: Path, extra_env: dict[str, str] | None = None, **host: object) -> tuple[str, bool]:
    """(the state file's name or "", daemon up?) of one poll run with HOME=home."""
    env = {"HOME": str(home), "PATH": os.environ["PATH"], **(extra_env or {})}
    config = HostConfig.model_validate({"name": "h", "pueue": "/nonexistent/pueue", "probes": False, **host})
    proc = subprocess.run(poll_argv(config, ""), capture_output=True, check=False, env=env)
    header = proc.stdout.split(b"\nstate ")[0].split(b"\nstatus ")[0].decode()
    up = "daemon up" in header
    name = next((line.split()[1] for line in header.splitlines() if line.startswith("file ")), "")
    return name, up


def test_the_pid_file_is_found_in_the_runtime_directory(
    tmp_path: Path, fixtures_dir: Path, pueued_pid: int
) -> None:
    """With $XDG_RUNTIME_DIR (a systemd user service, an SSH login), pueue.pid lives there, not beside
    the state file."""
    home, run = tmp_path / "home", tmp_path / "run"
    _lay_out(tmp_path, fixtures_dir, home / ".local/share/pueue", run, pueued_pid)
    assert _poll_in(home, {"XDG_RUNTIME_DIR": str(run)}) == ("state.json", True)
    assert _poll_in(home) == ("state.json", False)  # a login without it cannot know: pueue could not either


def test_a_pid_file_beside_the_state_still_counts_when_the_login_has_a_runtime_directory(
    tmp_path: Path, fixtures_dir: Path, pueued_pid: int
) -> None:
    """A daemon started without $XDG_RUNTIME_DIR (cron, nohup) is found beside state.json from any login."""
    home = tmp_path / "home"
    _lay_out(tmp_path, fixtures_dir, home / ".local/share/pueue", home / ".local/share/pueue", pueued_pid)
    (tmp_path / "run").mkdir()
    assert _poll_in(home, {"XDG_RUNTIME_DIR": str(tmp_path / "run")}) == ("state.json", True)


def test_a_reused_pid_is_not_a_daemon(tmp_path: Path, fixtures_dir: Path) -> None:
    """A stale pid file whose pid now belongs to another live process reads as "down", not "up"."""
    home = tmp_path / "home"
    _lay_out(tmp_path, fixtures_dir, home / ".local/share/pueue", home / ".local/share/pueue", os.getpid())
    assert _poll_in(home) == ("state.json", False)


@pytest.mark.parametrize("how", ["default", "pueue_config", "PUEUE_CONFIG_PATH"])
def test_the_directories_come_from_pueues_configuration(
    tmp_path: Path, fixtures_dir: Path, pueued_pid: int, how: str
) -> None:
    """shared.pueue_directory and shared.runtime_directory in pueue.yml (block YAML, as pueue writes it)."""
    home = tmp_path / "home"
    _lay_out(tmp_path, fixtures_dir, tmp_path / "data", tmp_path / "rt", pueued_pid)
    yml = (
        "client:\n  status_datetime_format: |-\n    %Y-%m-%d\n    %H:%M:%S\n"
        f"shared:\n  pueue_directory: '{tmp_path}/data'   # a comment\n"
        f'  runtime_directory: "{tmp_path}/rt"\n'
        "  pid_path: null\nprofiles: {}\n"
    )
    where = {"default": home / ".config/pueue/pueue.yml", "pueue_config": tmp_path / "p.yml",
             "PUEUE_CONFIG_PATH": tmp_path / "env.yml"}[how]  # fmt: skip
    where.parent.mkdir(parents=True, exist_ok=True)
    where.write_text(yml)
    env = {"PUEUE_CONFIG_PATH": str(where)} if how == "PUEUE_CONFIG_PATH" else {}
    host = {"pueue_config": str(where)} if how == "pueue_config" else {}
    assert _poll_in(home, env, **host) == ("state.json", True)


def test_a_profile_replaces_the_shared_section(tmp_path: Path, fixtures_dir: Path, pueued_pid: int) -> None:
    """--profile NAME: the profile's `shared` section alone decides the paths (settings.rs load_profile)."""
    home = tmp_path / "home"
    _lay_out(tmp_path, fixtures_dir, tmp_path / "gpu", tmp_path / "gpu", pueued_pid)
    yml = home / ".config/pueue/pueue.yml"
    yml.parent.mkdir(parents=True)
    yml.write_text(
        f"shared:\n  pueue_directory: {tmp_path}/main\nprofiles:\n  cpu:\n    shared:\n"
        f"      pueue_directory: {tmp_path}/cpu\n  gpu:\n    daemon:\n      callback: null\n    shared:\n"
        f"      pueue_directory: {tmp_path}/gpu\n"
    )
    assert _poll_in(home, pueue_profile="gpu") == ("state.json", True)
    assert _poll_in(home) == ("", False)


def test_pid_path_and_home_relative_directories(tmp_path: Path, fixtures_dir: Path, pueued_pid: int) -> None:
    """shared.pid_path names the pid file; '~/…' in pueue.yml expands to the host's HOME (shellexpand)."""
    home = tmp_path / "home"
    _lay_out(tmp_path, fixtures_dir, home / "q", home / "pids", pueued_pid)
    (home / "pids" / "pueue.pid").rename(home / "pids" / "daemon.pid")
    yml = home / ".config/pueue/pueue.yml"
    yml.parent.mkdir(parents=True)
    yml.write_text("shared:\n  pueue_directory: ~/q\n  pid_path: ~/pids/daemon.pid\n")
    assert _poll_in(home) == ("state.json", True)


def test_the_macos_default_directory(tmp_path: Path, fixtures_dir: Path, pueued_pid: int) -> None:
    """On macOS (Homebrew pueue) everything lives in ~/Library/Application Support/pueue."""
    home = tmp_path / "home"
    mac = home / "Library" / "Application Support" / "pueue"
    _lay_out(tmp_path, fixtures_dir, mac, mac, pueued_pid)
    assert _poll_in(home) == ("state.json", True)


# A hostile host (issue 13): what it may make the reader open, hold or decode.


def test_a_handoff_is_accepted_only_from_the_local_transport(pueue_dir: Path) -> None:
    """The same handoff answer is refused unless the caller says it came from this machine."""
    out = MARKER + f"daemon up\nhandoff {pueue_dir / 'state.json'}\n".encode()
    with pytest.raises(BadPollOutput, match=r"^the host answered a local-file handoff over SSH"):
        read_output(out, b"", 0)
    assert read_output(out, b"", 0, local=True).kind == "handoff"


def test_noise_before_the_marker_is_looked_at_only_up_to_its_cap() -> None:
    """A marker hidden behind 64 MiB of banner is not searched for: the answer is refused."""
    with pytest.raises(BadPollOutput, match=r"^unexpected answer from the host"):
        read_output(b"x" * (64 << 20) + MARKER + b"unchanged\n", b"", 0)


def test_pueue_error_reads_only_the_head_of_a_flood() -> None:
    """pueue_error of a 32 MiB flood is that of its first ERROR_BYTES."""
    flood = b"Error: boom\n" + b"\xff\n" * (16 << 20)
    assert pueue_error(flood) == pueue_error(flood[:ERROR_BYTES])
    assert pueue_error(flood).startswith("boom: �")


async def test_the_local_transport_keeps_256_mib_of_stderr_to_its_cap() -> None:
    """A command that writes 256 MiB to stderr runs to its end, and only the head and tail are kept."""
    script = "head -c 268435456 /dev/zero >&2; echo tail-line >&2; echo done"
    result = await LocalTransport().run(["sh", "-c", script], timeout=60)
    assert (result.exit_status, bytes(result.stdout)) == (0, b"done\n")
    assert len(result.stderr) <= MAX_STDERR_BYTES + STDERR_TAIL_BYTES + 64
    assert result.stderr.endswith(b"\0tail-line\n")
    assert b"bytes dropped" in result.stderr
