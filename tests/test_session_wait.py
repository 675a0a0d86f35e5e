"""The poll session's long poll, run as the host runs it (``sh -c SESSION_SCRIPT``) against the pueue
simulator's directory, on each of its three ways to wait:

* ``inotify``: ``inotifywait`` on the pueue directory (the host has inotify-tools);
* ``newer``: no ``inotifywait``; a reference file from ``mktemp``, touched when a wait begins, and the shell's
  builtin ``[ FILE -nt REF ]`` every 2 s (a ``stat`` every 10 s besides);
* ``stat``: neither (``mktemp`` fails): the fingerprint, by ``stat``, once a second.

Each way: a state file that pueue rewrites wakes a wait at once, and so does pueue's callback touching the
wake marker, even between two waits (the marker's fingerprint travels with the request); a wait with no
change answers "unchanged" when its time is up; the reference file goes with the session. The waits asked
for are a minute long: an answer within the test's 30 s is a wake, not the end of the wait.
"""

from __future__ import annotations

import os
import secrets
import select
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.harness.fleet import sim_host
from tests.pueue_sim.scenario import SimHost
from watcher.config import HostConfig, Settings
from watcher.remote.poll import RemoteState, read_output
from watcher.remote.session import SESSION_END, WAKE_MARKER, session_argv, session_request

WAYS = ("inotify", "newer", "stat")
LONG = 60  # seconds asked for: far beyond the test's wait for an answer


class Session:
    """One poll session, as the watcher's transport would hold it open."""

    def __init__(self, host: HostConfig, env: dict[str, str]) -> None:
        self.host = host
        self.proc = subprocess.Popen(session_argv(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
        self.mark = ""

    def ask(self, known: str, wait: int = 0, timeout: float = 30) -> RemoteState:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        token = secrets.token_hex(8)
        request = session_request(self.host, known, token, wait, self.mark if wait else "")
        assert request is not None
        self.proc.stdin.write(request)
        self.proc.stdin.flush()
        end = SESSION_END + token.encode() + b"\n"
        answer = bytearray()
        while not answer.endswith(end):
            ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
            assert ready, f"no answer within {timeout} s to a wait of {wait} s"
            chunk = os.read(self.proc.stdout.fileno(), 65536)
            assert chunk, "the session ended"
            answer += chunk
        state = read_output(bytes(answer), b"", 0, pueue=self.host.pueue)
        self.mark = state.wake or self.mark
        return state

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


@pytest.fixture
def sim(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as host:
        host.pueue("group", "add", "p1", check=True)
        yield host


def _env(tmp_path: Path, way: str) -> dict[str, str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    if way != "inotify":
        shadow = tmp_path / "bin"  # everything on PATH but inotifywait
        shadow.mkdir()
        for directory in os.environ["PATH"].split(os.pathsep):
            if not os.path.isdir(directory):
                continue
            for entry in os.scandir(directory):
                if entry.name != "inotifywait" and not (shadow / entry.name).exists():
                    (shadow / entry.name).symlink_to(entry.path)
        env["PATH"] = str(shadow)
    if way == "stat":
        env["TMPDIR"] = str(tmp_path / "missing")  # mktemp fails: no reference file
    return env


def _host(sim: SimHost) -> HostConfig:
    entry = {"name": "h", "transport": "local", "pueue": str(sim.pueue_bin), "pueue_dir": str(sim.pueue_dir),
             "pueue_config": str(sim.config_path)}  # fmt: skip
    return Settings(hosts=[entry]).hosts[0]


@pytest.fixture(params=WAYS)
def session(request: pytest.FixtureRequest, tmp_path: Path, sim: SimHost) -> Iterator[Session]:
    way = request.param
    if way == "inotify" and shutil.which("inotifywait") is None:
        pytest.fail("inotifywait is not installed (./dev installs inotify-tools)")
    session = Session(_host(sim), _env(tmp_path, way))
    try:
        yield session
    finally:
        session.close()


def test_a_rewritten_state_file_wakes_the_wait(session: Session, sim: SimHost) -> None:
    first = session.ask("")
    assert first.kind == "changed" and first.fingerprint  # the session answers "changed"; SCRIPT fetches
    sim.add("true", group="p1")  # pueue saves its state: the file is replaced
    woken = session.ask(first.fingerprint, LONG)
    assert woken.kind != "unchanged"


def test_the_callback_marker_wakes_the_wait_even_when_touched_between_two_waits(
    session: Session, sim: SimHost
) -> None:
    known = session.ask("").fingerprint
    marker = sim.pueue_dir / WAKE_MARKER
    marker.touch()  # before any wait: the first wait has no marker fingerprint, and reads it as it is now
    session.mark = ""
    assert session.ask(known, 2).kind == "unchanged"
    assert session.mark not in ("", "none")
    os.utime(marker, ns=(marker.stat().st_atime_ns, marker.stat().st_mtime_ns + 1_000_000_000))
    assert session.ask(known, LONG).kind != "unchanged"  # touched between two waits: at once


def test_a_wait_without_a_change_answers_unchanged_when_its_time_is_up(session: Session) -> None:
    known = session.ask("").fingerprint
    assert session.ask(known, 2).kind == "unchanged"
    assert session.ask(known, 0).kind == "unchanged"


def test_the_reference_file_goes_with_the_session(tmp_path: Path, sim: SimHost) -> None:
    session = Session(_host(sim), _env(tmp_path, "newer"))
    known = session.ask("").fingerprint
    assert session.ask(known, 2).kind == "unchanged"
    assert len(os.listdir(tmp_path / "tmp")) == 1  # the reference, while the session lives
    session.close()
    assert os.listdir(tmp_path / "tmp") == []
