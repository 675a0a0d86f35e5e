"""Faults of the watcher's dependencies, against the daemon as a real process: ClickHouse killed in the middle
of a check, a webhook that hangs past its timeout, and Alertmanager down for ten minutes.

While a dependency is down, results are ``error`` (never ``ok``) and events wait in the durable outbox; when
it is back, checks work again and every committed event arrives.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.faults.ledger import Ledger
from tests.faults.outage import (
    SwitchableReceiver,
    committed,
    config,
    event_ids,
    history,
    phase_ids,
    redelivered,
)
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration

# Slow by construction, fast after a restart: each INSERT into a Memory table stays a block of its own, and
# sleepEachRow sleeps per row of each block (at most 3 s a block on 18.16); a Memory table is empty again
# after the server restarts, so the same query then answers at once, with 0 violations.
SLOW_ROWS = 100
SLOW_SQL = "SELECT count() FROM faults.slow WHERE sleepEachRow(2) != 0"


def wait(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := predicate()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.1)
    return value


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        yield sim


def check_results(daemon: DaemonProcess, status: str) -> list[dict[str, Any]]:
    return [line for line in daemon.events("check.result") if line["status"] == status]


def test_clickhouse_killed_mid_check_is_an_error_then_checks_work_again(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, ledger: Ledger
) -> None:
    """SIGKILL of ClickHouse while a check's query runs: error, recorded, alerted, gates per config; the
    next phase's check, after the restart, passes."""
    clickhouse = ClickHouseServer(tmp_path / "clickhouse").start()
    try:
        clickhouse.execute("CREATE DATABASE faults", "CREATE TABLE faults.slow (n UInt8) ENGINE = Memory")
        for _ in range(SLOW_ROWS):
            clickhouse.execute("INSERT INTO faults.slow VALUES (1)")
        for group in ("p1", "p2", "p3"):
            host.pueue("group", "add", group, check=True)
        for group in ("p2", "p3"):  # held back by the gates until p1 completes
            host.pueue("pause", "-g", group, check=True)
            host.add("true", group=group, label=f"{group}-job")
        server = sshd_factory.start(sim_env(host))
        state = tmp_path / "state.db"
        with SwitchableReceiver() as hook:
            path = config(tmp_path / "c.toml", state, [ssh_entry("bigblack", server, host)], tables={
                "clickhouse": [{"name": "main", "port": clickhouse.port, "connect_timeout": "2s"}],
                "checks": [{"name": "slow-sql", "kind": "sql", "clickhouse": "main", "sql": SLOW_SQL,
                            "groups": ["p1"], "timeout": "10m"}],
                "gates": [{"host": "bigblack", "after": "p1", "start": "p2"},
                          {"host": "bigblack", "after": "p1", "start": "p3", "on_fail": "start"}],
                "alerts": [{"name": "ops", "kind": "webhook", "url": f"{hook.url}/hook", "timeout": "5s"},
                           {"name": "log", "kind": "console"}],
            })  # fmt: skip
            daemon = DaemonProcess(path, tmp_path / "daemon.log").start()
            try:
                daemon.wait_for(lambda: daemon.events("cycle"), timeout=60)
                first = host.add_gated("first", group="p1", label="first")
                host.finish("first")
                host.wait_for_status(first, "Done")

                with ledger.fault("clickhouse killed mid-check"):
                    running = "SELECT query FROM system.processes WHERE client_name LIKE '%pueue-watcher%'"
                    wait(lambda: "sleepEachRow" in clickhouse.execute(running), 60, "the check's query runs")
                    clickhouse.kill()
                    (result,) = daemon.wait_for(lambda: check_results(daemon, "error"), timeout=120)
                    assert result["check"] == "slow-sql"
                    error = result["error"]
                    assert "ClickHouse" in error and f"127.0.0.1:{clickhouse.port}" in error, error
                    assert "\n" not in error and "Traceback" not in error and len(error) <= 300
                    # Recorded: the check run, and the gates decided on it (p2 held, p3 started per on_fail).
                    (phase,) = [p for p in history(state) if p["group"] == "p1"]
                    (check,) = phase["checks"]
                    assert (check["name"], check["status"], check["error"]) == ("slow-sql", "error", error)
                    gates = wait(lambda: len(history_gates(state)) == 2 and history_gates(state), 60, "gates")
                    assert gates["p2"]["status"] == "held"
                    assert "check slow-sql error" in gates["p2"]["reason"]
                    assert gates["p3"]["status"] == "started"
                    assert "starting anyway (on_fail = start)" in gates["p3"]["reason"]
                    assert host.status()["groups"]["p2"]["status"] == "Paused"
                    assert check_results(daemon, "ok") == []
                    # Alerted: the webhook and the console got the error and the held gate.
                    errored = f"check.errored:{phase['id']}:slow-sql"
                    wait(lambda: errored in event_ids(hook.answered), 60, "check.errored delivered")
                    (alert,) = [e for r in hook.answered for e in r.json()["events"] if e["id"] == errored]
                    assert alert["error"] == error
                    assert alert["severity"] == "warning"
                    assert f"gate.held:{phase['id']}:p2" in event_ids(hook.answered)
                    daemon.wait_for(lambda: any(e["id"] == errored for e in daemon.events("check.errored")))

                    clickhouse.start()  # same directory and ports; the Memory table comes back empty
                    second = host.add_gated("second", group="p1", label="second")
                    host.finish("second")
                    host.wait_for_status(second, "Done")
                    (passed,) = daemon.wait_for(lambda: check_results(daemon, "ok"), timeout=120)
                    assert (passed["check"], passed["violations"]) == ("slow-sql", 0)
                    wait(
                        lambda: host.status()["groups"]["p2"]["status"] == "Running", 60, "the gate starts p2"
                    )
                    wait(lambda: any(i.startswith("check.recovered:") for i in event_ids(hook.answered)),
                         60, "check.recovered delivered")  # fmt: skip
                    daemon.wait_for(lambda: len(daemon.events("phase.completed")) >= 4)  # p1 twice, p2, p3
                    wait(lambda: {e.id for e in committed(state)} <= set(event_ids(hook.answered)), 60,
                         "every committed event delivered")  # fmt: skip
                    assert daemon.terminate() == 0
            finally:
                daemon.stop()
            assert daemon.events("crashed") == []
            phases = [p for p in history(state) if p["status"] == "completed"]
            p1 = sorted((p for p in phases if p["group"] == "p1"), key=lambda p: p["completed"])
            assert [c["status"] for p in p1 for c in p["checks"]] == ["error", "ok"]
            events = committed(state)
            ledger.events([e.id for e in events], event_ids(hook.answered), phase_ids(hook.answered))
            assert Counter(phase_ids(hook.answered)) == Counter(p["id"] for p in phases)
    finally:
        clickhouse.stop()


def retries(daemon: DaemonProcess, sink: str) -> list[dict[str, Any]]:
    return [line for line in daemon.events("delivery.retry") if line["sink"] == sink]


def history_gates(state: Path) -> dict[str, dict[str, Any]]:
    """The gate decisions of p1's first phase, by the group they start."""
    p1 = [p for p in history(state) if p["group"] == "p1"]
    return {g["start"]: g for g in p1[-1]["gates"] if g["status"] != "pending"} if p1 else {}


def test_a_hanging_webhook_times_out_holds_up_no_other_sink_and_delivers_later(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost, ledger: Ledger
) -> None:
    """A webhook that never answers: each attempt times out, the other webhook and the console deliver the
    next phase meanwhile, and once the endpoint answers every event arrives, each phase event once."""
    host.pueue("group", "add", "train", check=True)
    server = sshd_factory.start(sim_env(host))
    state = tmp_path / "state.db"
    with SwitchableReceiver() as slow, SwitchableReceiver() as fast:
        slow.hanging = True
        path = config(tmp_path / "c.toml", state, [ssh_entry("bigblack", server, host)], tables={
            "alerts": [{"name": "slow", "kind": "webhook", "url": f"{slow.url}/hook", "timeout": "2s"},
                       {"name": "fast", "kind": "webhook", "url": f"{fast.url}/hook", "timeout": "2s"},
                       {"name": "log", "kind": "console"}],
        })  # fmt: skip
        daemon = DaemonProcess(path, tmp_path / "daemon.log").start()
        try:
            daemon.wait_for(lambda: daemon.events("cycle"), timeout=60)

            def complete(name: str) -> str:
                """One phase of train; its phase.completed event id, once the fast webhook has it."""
                task = host.add_gated(name, group="train", label=name)
                host.finish(name)
                host.wait_for_status(task, "Done")
                ids = wait(
                    lambda: [i for i in event_ids(fast.answered) if i not in seen], 60, f"{name} at fast"
                )
                seen.update(ids)
                (event,) = [i for i in ids if i.startswith("phase.completed:")]
                return event

            seen: set[str] = set()
            with ledger.fault("webhook hangs past its timeout"):
                first = complete("first")
                daemon.wait_for(lambda: retries(daemon, "slow"), timeout=60)
                second = complete("second")  # committed after slow's first timeout: fast does not wait for it
                logged = daemon.events  # the console sink's lines
                daemon.wait_for(lambda: {first, second} <= {line["id"] for line in logged("phase.completed")})
                slow.wait_for(2, timeout=60)  # the timed-out attempt is retried
                assert slow.answered == []  # and the hang goes on: slow has delivered nothing yet
                assert all(line["sink"] == "slow" for line in daemon.events("delivery.retry"))
                for line in retries(daemon, "slow"):
                    assert line["error"] == "webhook 'slow': no answer within 2s", line

                slow.hanging = False  # the endpoint answers again
                wait(lambda: {first, second} <= set(event_ids(slow.answered)), 180, "slow delivers")
                events = committed(state)
                ids = {e.id for e in events}
                wait(lambda: all(ids <= set(event_ids(r.answered)) for r in (slow, fast)), 60, "all events")
                assert daemon.terminate() == 0
        finally:
            daemon.stop()
    assert daemon.events("crashed") == []
    completed = [p["id"] for p in history(state) if p["status"] == "completed"]
    assert len(completed) == 2
    for receiver in (slow, fast):
        ledger.events([e.id for e in events], event_ids(receiver.answered), phase_ids(receiver.answered))
        assert Counter(phase_ids(receiver.answered)) == Counter(completed)  # one event per phase
        print(f"{'slow' if receiver is slow else 'fast'}: {redelivered(receiver.answered)} event(s) arrived "
              "again under their id (at least once)")  # fmt: skip


def outage_seconds() -> float:
    """How long Alertmanager stays down: ten minutes by default, which is what CI runs (it never sets the
    variable). PUEUE_WATCHER_TEST_OUTAGE_SECONDS shortens it for a developer's run (60 still spans two of the
    outbox's 30 s rounds); anything but a positive number is refused, never read as the default."""
    given = os.environ.get("PUEUE_WATCHER_TEST_OUTAGE_SECONDS", "").strip()
    if not given:
        return 600.0
    try:
        seconds = float(given)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise ValueError(f"PUEUE_WATCHER_TEST_OUTAGE_SECONDS={given!r}: give a positive number of seconds")
    return seconds


OUTAGE = outage_seconds()


def test_alertmanager_down_ten_minutes_loses_no_event(
    tmp_path: Path, sshd_factory: SSHFactory, ledger: Ledger
) -> None:
    """Alertmanager down for ten minutes (OUTAGE) while three hosts finish phases and the daemon restarts:
    retries are logged and bounded, the daemon never crashes, and every committed event reaches
    Alertmanager."""
    from tests.harness.alertmanager import Alertmanager
    from tests.harness.receiver import Receiver
    from tests.harness.services import http_ok
    from watcher.outbox import ATTEMPTS, MAX_WAIT, ROUND_BACKOFF

    with ExitStack() as stack:
        sims = {name: stack.enter_context(sim_host(tmp_path / name, "v4")) for name in ("h1", "h2", "h3")}
        for sim in sims.values():
            for group in ("train", "eval"):
                sim.pueue("group", "add", group, check=True)
        entries = [ssh_entry(name, sshd_factory.start(sim_env(sim)), sim) for name, sim in sims.items()]
        hook = stack.enter_context(Receiver())
        manager = Alertmanager(tmp_path / "am", f"{hook.url}/notify").start()
        stack.callback(lambda: manager.stop())
        state = tmp_path / "state.db"
        sinks = [{"name": "am", "kind": "alertmanager", "url": manager.url, "timeout": "2s"},
                 {"name": "log", "kind": "console"}]  # fmt: skip
        watcher = {"poll_interval": "2s", "fast_interval": "1s"}
        path = config(tmp_path / "c.toml", state, entries, watcher=watcher, tables={"alerts": sinks})
        daemon = DaemonProcess(path, tmp_path / "daemon.log").start()
        stack.callback(daemon.stop)
        daemon.wait_for(lambda: daemon.events("cycle"), timeout=60)
        phases: list[tuple[str, str]] = []

        def fail_phase(host: str, group: str) -> None:
            """A phase of two tasks, one of them failing; returns once the watcher has committed it (the
            console sink logs its event after the commit)."""
            sim, n = sims[host], len(phases)
            tasks = [sim.add_gated(f"{group}-{n}-{i}", group=group, label=f"{group}-{n}-{i}") for i in (0, 1)]
            sim.finish(f"{group}-{n}-0")
            sim.finish(f"{group}-{n}-1", exit_code=1)
            for task in tasks:
                sim.wait_for_status(task, "Done")
            phases.append((host, group))

            def logged() -> set[str]:
                return {
                    e["id"]
                    for e in daemon.events("phase.completed")
                    if (e["host"], e["group"]) == (host, group)
                }

            daemon.wait_for(lambda: len(logged()) == phases.count((host, group)), timeout=120)

        def alerted() -> set[str]:
            return {a["annotations"]["event_id"] for a in manager.alerts()}

        def notified() -> set[str]:
            return {a["annotations"]["event_id"] for r in hook.requests for a in r.json()["alerts"]}

        def outage_reaches(seconds: float) -> None:
            """Let time pass, with the daemon alive all along."""
            while time.monotonic() - down < seconds:
                assert daemon.proc is not None and daemon.proc.poll() is None, daemon.log.read_text()[-3000:]
                time.sleep(1)

        fail_phase("h1", "train")  # before the outage: the path works
        before: set[str] = wait(
            lambda: alerted() >= {e.id for e in committed(state)} and alerted(), 60, "alert"
        )

        with ledger.fault(f"alertmanager down for {OUTAGE:g} s"):
            manager.kill()
            down = time.monotonic()
            fail_phase("h2", "train")
            fail_phase("h3", "eval")
            daemon.wait_for(lambda: daemon.events("delivery.failed"), timeout=120)  # a whole round failed
            fail_phase("h1", "eval")
            assert daemon.terminate() == 0  # a restart in the middle of the outage
            daemon.start()
            daemon.wait_for(lambda: len(daemon.events("started")) == 2, timeout=60)
            fail_phase("h2", "train")
            fail_phase("h3", "train")
            outage_reaches(OUTAGE / 2)
            fail_phase("h1", "train")
            fail_phase("h2", "eval")
            outage_reaches(OUTAGE)
            events = committed(state)
            assert len(events) == len(phases)  # nothing but the phases, each committed once
            assert not http_ok(f"{manager.url}/-/ready")  # down all along: nothing could have been delivered

            outage = time.monotonic() - down  # OUTAGE, or more if the phases before took longer
            manager.start()  # on the same port: the configured URL answers again
            wanted = {e.id for e in events} - before
            wait(lambda: alerted() >= wanted, MAX_WAIT + 120, "every event at Alertmanager")
            wait(lambda: notified() >= wanted, 60, "every alert notified")
            assert daemon.proc is not None and daemon.proc.poll() is None
            assert daemon.terminate() == 0

        log = daemon.lines()
        assert [line for line in log if line.get("event") in ("crashed", "<not json>")] == []
        assert len([line for line in log if line.get("event") == "stopped"]) == 2
        retried = [line for line in log if line.get("event") == "delivery.retry"]
        rounds = [line for line in log if line.get("event") == "delivery.failed"]
        assert retried and rounds
        assert {line["sink"] for line in retried + rounds} == {"am"}
        assert all("alertmanager 'am'" in line["error"] for line in retried + rounds)
        assert not any(line["permanent"] for line in rounds)
        assert all(line["wait_seconds"] <= MAX_WAIT for line in retried)
        # ATTEMPTS tries per round; between rounds the worker waits ROUND_BACKOFF, unless a new event wakes
        # it (once per phase at most) or the daemon starts (twice).
        assert len(rounds) <= outage / ROUND_BACKOFF + len(phases) + 2
        assert len(retried) <= (ATTEMPTS - 1) * (len(rounds) + 2)
        completed = [p for p in history(state) if p["status"] == "completed"]
        assert sorted((p["host"], p["group"]) for p in completed) == sorted(phases)
        ledger.events([e.id for e in events], before | alerted(), [p["id"] for p in completed])
        firing = manager.alerts()
        assert {a["labels"]["alertname"] for a in firing} == {"PueuePhaseFailed"}
        assert sorted(a["labels"]["phase"] for a in firing) == sorted(
            e.data["phase"] for e in events if e.id in wanted
        )
