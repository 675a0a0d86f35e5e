"""The long poll (issue 16): at a five-minute poll interval, a phase that ends between two polls is reported
within seconds, because the host's poll session waits for the state file to change.

Against the pueue simulator over a real sshd here; the real pueued tier has its own case (to do).
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import SSHFactory
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry, write_config
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "p1", "-p", "2", check=True)
        yield sim


def _daemon(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, transport: str) -> DaemonProcess:
    if transport == "ssh":
        entry = ssh_entry("bigblack", sshd_factory.start(sim_env(host)), host, groups=["p*"])
    else:
        entry = {"name": "bigblack", "transport": "local", "pueue": str(host.pueue_bin), "groups": ["p*"],
                 "pueue_dir": str(host.pueue_dir), "pueue_config": str(host.config_path)}  # fmt: skip
    config = write_config(
        tmp_path / "c.toml",
        [entry],
        watcher={
            "poll_interval": "5m",
            "fast_interval": 0,
            "state_path": str(tmp_path / "state.db"),
        },
        metrics={"listen": ""},
    )
    return DaemonProcess(config, tmp_path / "daemon.log")


def _open_phases(path: Path) -> int:
    if not path.exists():
        return 0
    with contextlib.closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        try:
            return int(db.execute("SELECT count(*) FROM phases WHERE status = 'open'").fetchone()[0])
        except sqlite3.OperationalError:
            return 0


@pytest.mark.parametrize("transport", ["ssh", "local"])
def test_a_phase_that_ends_between_two_polls_is_reported_within_seconds(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, transport: str
) -> None:
    """Three tasks queued behind two slots when the daemon starts: one poll sees them, then nothing is due
    for five minutes. The completion is reported once, within a few seconds of the last task's end (the
    bound is the test's wait, well below the five-minute interval; the figure is printed)."""
    ids = [host.add_gated(f"t{i}", group="p1", label=f"t{i}") for i in range(3)]
    daemon = _daemon(tmp_path, sshd_factory, host, transport).start()
    try:
        daemon.wait_for(lambda: daemon.events("started"))
        daemon.wait_for(lambda: _open_phases(tmp_path / "state.db") == 1, timeout=30)  # the first poll
        for i, task_id in enumerate(ids):
            host.finish(f"t{i}")
            host.wait_for_status(task_id, "Done")
        ended = time.time()
        (event,) = daemon.wait_for(lambda: daemon.events("phase.recorded"), timeout=60)
        assert event["group"] == "p1" and event["outcome"] == "success"
        print(
            f"long poll ({transport}): phase recorded {time.time() - ended:.1f} s after the last task ended"
        )
        time.sleep(3)
        assert len(daemon.events("phase.recorded")) == 1
    finally:
        daemon.stop()
