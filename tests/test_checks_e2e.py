"""End to end: checks and gates at a phase boundary, with a real ClickHouse server, real sshd and the pueue
simulator; probes read through sshd; the `check` command's exit codes."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.fleet import sim_env, sim_host, ssh_entry, watcher, write_config
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration


def sql(server: ClickHouseServer, *statements: str) -> None:
    from clickhouse_driver import Client

    client = Client("127.0.0.1", port=server.port)
    for statement in statements:
        client.execute(statement)
    client.disconnect()


def seed(server: ClickHouseServer, database: str, negatives: int) -> None:
    """A bars table with ``negatives`` rows of negative volume among 100."""
    sql(
        server,
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE {database}.bars (symbol String, ts DateTime, volume Float64) "
        "ENGINE = MergeTree ORDER BY (symbol, ts)",
        f"INSERT INTO {database}.bars SELECT 'BTC', toDateTime(1700000000 + number), "
        f"if(number < {negatives}, -1.0, 1.0) FROM system.numbers LIMIT 100",
    )


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "p1", check=True)
        sim.pueue("group", "add", "p2", check=True)
        sim.pueue("pause", "-g", "p2", check=True)
        sim.add("true", group="p2", label="p2-job")
        yield sim


def _write(
    tmp_path: Path, server: Any, sim: SimHost, clickhouse: ClickHouseServer, database: str, **ch: Any
) -> Path:
    """A configuration: the host, ClickHouse (``ch`` overrides), a negatives check on p1, a gate p1 → p2."""
    entry = ssh_entry("bigblack", server, sim)
    lines = [
        "[watcher]",
        f'state_path = "{tmp_path / "state.db"}"',
        "[metrics]",
        'listen = ""',
        "[[hosts]]",
        *(f"{k} = {json.dumps(v)}" for k, v in entry.items()),
        "[[clickhouse]]",
        'name = "main"',
        f"port = {ch.get('port', clickhouse.port)}",
        *(f"{k} = {json.dumps(v)}" for k, v in ch.items() if k != "port"),
        "[[checks]]",
        'name = "volume-not-negative"',
        'kind = "negatives"',
        'clickhouse = "main"',
        f'table = "{database}.bars"',
        'columns = ["volume"]',
        'group_by = ["symbol"]',
        'groups = ["p1"]',
        "[[gates]]",
        'host = "bigblack"',
        'after = "p1"',
        'start = "p2"',
    ]
    path = tmp_path / "c.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def run_phase_p1(sim: SimHost, config: Path) -> list[dict[str, Any]]:
    """p1 is active at the first cycle, complete at the second; return that cycle's events."""
    task = sim.add_gated("p1-job", group="p1", label="p1-job")
    first = watcher("once", "--json", "-c", str(config))
    assert first.returncode == 0, first.stdout + first.stderr
    sim.finish("p1-job")
    sim.wait_for_status(task, "Done")
    second = watcher("once", "--json", "-c", str(config))
    assert second.returncode == 0, second.stdout + second.stderr
    events: list[dict[str, Any]] = json.loads(second.stdout)
    return events


def history(config: Path) -> list[dict[str, Any]]:
    proc = watcher("history", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_checks_pass_and_the_gate_starts_the_next_phase(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    seed(clickhouse, "passing", negatives=0)
    server = sshd_factory.start(sim_env(host))
    config = _write(tmp_path, server, host, clickhouse, "passing")
    events = run_phase_p1(host, config)
    assert [e["event"] for e in events] == ["phase.completed", "gate.started"]
    assert events[0]["group"] == "p1"
    (phase,) = [p for p in history(config) if p["group"] == "p1"]
    assert [(c["name"], c["status"], c["violations"]) for c in phase["checks"]] == [
        ("volume-not-negative", "ok", 0)
    ]
    assert [(g["start"], g["status"]) for g in phase["gates"]] == [("p2", "started")]
    assert host.status()["groups"]["p2"]["status"] == "Running"


def test_a_failing_check_holds_the_next_phase(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    seed(clickhouse, "failing", negatives=7)
    server = sshd_factory.start(sim_env(host))
    config = _write(tmp_path, server, host, clickhouse, "failing")
    events = run_phase_p1(host, config)
    assert [e["event"] for e in events] == ["phase.completed", "check.failed", "gate.held"]
    assert events[1]["check"] == "volume-not-negative"
    assert events[1]["severity"] == "critical"
    (phase,) = [p for p in history(config) if p["group"] == "p1"]
    (check,) = phase["checks"]
    assert (check["status"], check["violations"]) == ("fail", 7)
    assert check["samples"][0]["symbol"] == "BTC"
    (gate,) = phase["gates"]
    assert gate["status"] == "held"
    assert "check volume-not-negative fail" in gate["reason"]
    assert host.status()["groups"]["p2"]["status"] == "Paused"
    table = watcher("history", "-c", str(config)).stdout
    assert "gate p2: held" in table


def test_unreachable_clickhouse_is_an_error_and_holds(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    from tests.harness.services import free_port

    server = sshd_factory.start(sim_env(host))
    config = _write(tmp_path, server, host, clickhouse, "nowhere", port=free_port(), connect_timeout="2s")
    run_phase_p1(host, config)
    (phase,) = [p for p in history(config) if p["group"] == "p1"]
    (check,) = phase["checks"]
    assert check["status"] == "error"
    assert "connect" in check["error"].lower()
    assert phase["gates"][0]["status"] == "held"


def test_via_host_reaches_clickhouse_through_an_ssh_tunnel(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer, client_keys: Any
) -> None:
    """ClickHouse listens on loopback only; the check reaches it through the watched host's SSH connection."""
    from tests.harness.sshd import SSHServer

    seed(clickhouse, "tunnelled", negatives=2)
    server = SSHServer(tmp_path / "sshd-debug", client_keys, sim_env(host), log_level="DEBUG1").start()
    try:
        config = _write(
            tmp_path, server, host, clickhouse, "tunnelled", host="127.0.0.1", via_host="bigblack"
        )
        proc = watcher("check", "--host", "bigblack", "--group", "p1", "--json", "-c", str(config))
    finally:
        server.stop()
    assert proc.returncode == 2, proc.stdout + proc.stderr  # fail
    (result,) = json.loads(proc.stdout)
    assert result["violations"] == 2
    log = (server.root / "sshd.log").read_text()
    assert f"target 127.0.0.1 port {clickhouse.port}" in log  # the connection went through the tunnel


def test_check_command_exit_codes(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    """0 ok, 1 warn, 2 fail, 3 error: the worst result decides."""
    seed(clickhouse, "codes", negatives=3)
    server = sshd_factory.start(sim_env(host))
    base = _write(tmp_path, server, host, clickhouse, "codes").read_text()
    cases = {
        "fail_above = 10\n": 0,
        "warn_above = 1\nfail_above = 10\n": 1,
        "": 2,
    }
    for extra, code in cases.items():
        config = tmp_path / "codes.toml"
        config.write_text(base.replace('groups = ["p1"]\n', f'groups = ["p1"]\n{extra}'))
        proc = watcher("check", "--host", "bigblack", "--group", "p1", "-c", str(config))
        assert proc.returncode == code, (extra, proc.stdout, proc.stderr)
    writes = base + (
        '[[checks]]\nname = "sneaky"\nkind = "sql"\nclickhouse = "main"\n'
        'sql = "INSERT INTO codes.bars VALUES (\'X\', now(), 1)"\ngroups = ["p1"]\n'
    )
    config.write_text(writes)
    proc = watcher("check", "--host", "bigblack", "--group", "p1", "--json", "-c", str(config))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    sneaky = next(r for r in json.loads(proc.stdout) if r["name"] == "sneaky")
    assert sneaky["status"] == "error"
    assert "readonly" in sneaky["error"].lower()


def test_malicious_table_name_is_rejected_at_load(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text(
        '[[clickhouse]]\nname = "main"\n[[checks]]\nname = "x"\nkind = "duplicates"\nclickhouse = "main"\n'
        'table = "bars; DROP TABLE bars"\nkey = ["id"]\n'
    )
    proc = watcher("status", "-c", str(config))
    assert proc.returncode == 2
    assert "checks[0].table: 'bars; DROP TABLE bars' is not a table name" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_probes_are_read_through_sshd(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost) -> None:
    """Load, CPUs, memory, swap counters and disk come back with the poll, from the host's /proc."""
    server = sshd_factory.start(sim_env(host))
    config = write_config(tmp_path / "p.toml", [ssh_entry("bigblack", server, host)])
    proc = watcher("status", "--json", "-c", str(config))
    assert proc.returncode == 0, proc.stderr
    probes = json.loads(proc.stdout)["hosts"][0]["probes"]
    assert probes["supported"] is True
    assert probes["cpus"] == os.cpu_count()
    assert probes["memory_total_bytes"] > probes["memory_available_bytes"] > 0
    assert probes["load1"] >= 0
    assert probes["disk_available_bytes"] > 0


def test_a_restart_mid_check_reruns_it_once(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    """kill -9 while a check runs: the next cycle runs it; the one after does not run it again."""
    import signal
    import subprocess
    import sys
    import time

    from tests.harness.fleet import REPO

    server = sshd_factory.start(sim_env(host))
    base = _write(tmp_path, server, host, clickhouse, "slowcheck").read_text()
    base = base.split("[[checks]]")[0] + (
        '[[checks]]\nname = "slow"\nkind = "sql"\nclickhouse = "main"\nsql = "SELECT sleep(3)"\n'
        'groups = ["p1"]\n'
    )
    config = tmp_path / "slow.toml"
    config.write_text(base)
    task = host.add_gated("p1-job", group="p1", label="p1-job")
    assert watcher("once", "-c", str(config)).returncode == 0
    host.finish("p1-job")
    host.wait_for_status(task, "Done")
    proc = subprocess.Popen([sys.executable, "-m", "watcher", "once", "-c", str(config)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while not any(c["status"] == "pending" for p in history(config) for c in p["checks"]):
            assert time.monotonic() < deadline, "the check never became pending"
            time.sleep(0.1)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert watcher("once", "-c", str(config)).returncode == 0
    ((check,),) = [p["checks"] for p in history(config) if p["group"] == "p1"]
    assert check["status"] == "ok"
    assert watcher("once", "-c", str(config)).returncode == 0
    ((again,),) = [p["checks"] for p in history(config) if p["group"] == "p1"]
    assert again["at"] == check["at"]  # not run a second time


def test_two_watchers_one_alertmanager_notification_then_resolved(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, clickhouse: ClickHouseServer
) -> None:
    """Two watcher instances see the same failing check: Alertmanager's receiver gets ONE firing
    notification; when a later phase passes the check, the alert resolves."""
    import time

    from tests.harness.alertmanager import Alertmanager
    from tests.harness.receiver import Receiver

    seed(clickhouse, "ha", negatives=4)
    server = sshd_factory.start(sim_env(host))
    with Receiver() as hook:
        manager = Alertmanager(tmp_path / "am", f"{hook.url}/notify").start()
        try:
            configs = []
            for name in ("a", "b"):  # two instances: the same configuration, each with its own state
                (tmp_path / name).mkdir()
                text = _write(tmp_path / name, server, host, clickhouse, "ha").read_text()
                text += f'[[alerts]]\nname = "am"\nkind = "alertmanager"\nurl = "{manager.url}"\n'
                path = tmp_path / name / "c.toml"
                path.write_text(text)
                configs.append(path)

            def cycle(sim: SimHost, job: str) -> None:
                task = sim.add_gated(job, group="p1", label=job)
                for config in configs:
                    assert watcher("once", "-c", str(config)).returncode == 0
                sim.finish(job)
                sim.wait_for_status(task, "Done")
                for config in configs:
                    assert watcher("once", "-c", str(config)).returncode == 0

            def notified(alertname: str, status: str) -> list[Any]:
                return [a for r in hook.requests for a in r.json()["alerts"]
                        if a["labels"]["alertname"] == alertname and a["status"] == status]  # fmt: skip

            def wait(predicate: Any) -> None:
                deadline = time.monotonic() + 20
                while not predicate():
                    assert time.monotonic() < deadline, hook.requests
                    time.sleep(0.1)

            cycle(host, "first")
            wait(lambda: notified("PueueCheckFailing", "firing"))
            (firing,) = [a for a in manager.alerts() if a["labels"]["alertname"] == "PueueCheckFailing"]
            assert firing["labels"]["check"] == "volume-not-negative"
            assert firing["labels"]["host"] == "bigblack"
            assert firing["labels"]["group"] == "p1"
            assert firing["labels"]["severity"] == "critical"
            time.sleep(3)  # more than group_interval: a second notification would have come by now
            assert len(notified("PueueCheckFailing", "firing")) == 1

            sql(clickhouse, "ALTER TABLE ha.bars DELETE WHERE volume < 0")
            deadline = time.monotonic() + 20
            while watcher("check", "--host", "bigblack", "--group", "p1", "-c", str(configs[0])).returncode:
                assert time.monotonic() < deadline, "the mutation never finished"
                time.sleep(0.5)
            cycle(host, "second")
            wait(lambda: notified("PueueCheckFailing", "resolved"))
            assert [a for a in manager.alerts() if a["labels"]["alertname"] == "PueueCheckFailing"] == []
        finally:
            manager.stop()


async def test_via_host_tunnel_is_opened_again_after_a_reconnect(
    sshd_factory: SSHFactory, clickhouse: ClickHouseServer
) -> None:
    """After the host's SSH connection is replaced, queries use a new tunnel and the old port is shut."""
    import socket

    from watcher.checking import ClickHouseHandles
    from watcher.config import settings_from_mapping
    from watcher.transport.ssh import SSHTransport

    seed(clickhouse, "reconnect", negatives=0)
    server = sshd_factory.start()
    tunnelled = {"port": clickhouse.port, "via_host": "bigblack", "database": "reconnect"}
    settings = settings_from_mapping(
        {"hosts": [ssh_entry("bigblack", server, None)], "clickhouse": [{"name": "main", **tunnelled}]}
    )
    transport = SSHTransport(settings.hosts[0], connect_timeout=10, keepalive=30)
    handles = ClickHouseHandles(settings, {"bigblack": transport})
    try:
        client = await handles.get("main")
        assert (await client.query("SELECT count() FROM bars")).rows == [(100,)]
        before = await transport.forward("127.0.0.1", clickhouse.port, timeout=10)
        server.drop_connections()  # a reboot of the host, as the watcher sees it
        server.start()
        await transport.run(["true"], timeout=10)  # the next poll reconnects
        assert (await client.query("SELECT count() FROM bars")).rows == [(100,)]
        after = await transport.forward("127.0.0.1", clickhouse.port, timeout=10)
    finally:
        await handles.close()
        await transport.close()
    assert client.retries == 0  # the new tunnel was used from the first try
    if after != before:  # (the system may hand out the same port number again, rarely)
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(before, timeout=5).close()
