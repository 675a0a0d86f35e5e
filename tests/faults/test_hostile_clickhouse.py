"""Compromised hosts and ClickHouse (issue 13's acceptance, M2 and M3), against the real daemon, real sshd and
a real ClickHouse server (Debian's 18.16), with the figures of test_hostile_fleet.py.

- **readonly:** a hostile host completes a phase of a group named like an injection, and the checks that
  run for it (and for the honest host's phase) include a query whose own ``SETTINGS readonly = 0`` would
  switch readonly off and an ``ALTER … DELETE``. The watcher's ClickHouse user may write (``default``):
  only the watcher's own ``readonly = 1`` stands between a check and the data. No write may reach
  ClickHouse: the rows, the table and ``system.mutations`` stay as they were. The same statements go through
  the client to current ClickHouse (chdb) too.
- **via_host:** ClickHouse is reached through a tunnel over a hostile host, whose SSH server drops every
  connection mid-run (a reboot, as the watcher sees it). The checks of the next phase go through the new
  tunnel: a result, not an error.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.faults.hostile_fleet import (
    Hostile,
    check,
    delivered,
    fleet,
    run_case,
    state_document,
    wait_until,
    write_atomically,
)
from tests.faults.ledger import Ledger
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.fleet import REPO
from tests.harness.sshd import ClientKeys

pytestmark = pytest.mark.integration

INJECTION = "BTC') OR 1=1; DROP TABLE hostile.bars; --"


def seeded(server: ClickHouseServer, database: str) -> None:
    """``database.bars``: 100 rows, 5 of them with a negative volume."""
    server.execute(
        f"CREATE DATABASE IF NOT EXISTS {database}",
        f"CREATE TABLE {database}.bars (symbol String, ts DateTime, volume Float64) "
        "ENGINE = MergeTree ORDER BY (symbol, ts)",
        f"INSERT INTO {database}.bars SELECT 'BTC', toDateTime(1700000000 + number), "
        "if(number < 5, -1.0, 1.0) FROM system.numbers LIMIT 100",
    )


def check_lines(name: str, kind: str, database: str, **options: str) -> list[str]:
    """A [[checks]] entry on ``database.bars``; ``options`` are TOML values as written."""
    lines = ["[[checks]]", f'name = "{name}"', f'kind = "{kind}"', 'clickhouse = "main"', 'groups = ["*"]']
    if kind != "sql":
        lines.append(f'table = "{database}.bars"')
    return lines + [f"{k} = {v}" for k, v in options.items()]


def clickhouse_lines(server: ClickHouseServer, *more: str) -> list[str]:
    return ["[[clickhouse]]", 'name = "main"', 'host = "127.0.0.1"', f"port = {server.port}", *more]


def results(hook: object, check_name: str) -> list[dict[str, object]]:
    return [e for e in delivered(hook) if e.get("check") == check_name]  # type: ignore[arg-type]


def test_no_check_and_no_host_can_turn_readonly_off(tmp_path: Path, agent: Path, client_keys: ClientKeys,
                                                    clickhouse: ClickHouseServer, idle_rss: float,
                                                    ledger: Ledger) -> None:  # fmt: skip
    seeded(clickhouse, "hostile")
    readonly_off = "SELECT count() FROM hostile.bars WHERE symbol = %(group)s SETTINGS readonly = 0"
    alter = "ALTER TABLE hostile.bars DELETE WHERE symbol != %(group)s"
    extra = [
        *clickhouse_lines(clickhouse, 'user = "default"'),
        *check_lines("readonly-off", "sql", "hostile", sql=json.dumps(readonly_off)),
        *check_lines("alter", "sql", "hostile", sql=json.dumps(alter)),
        *check_lines("volume", "negatives", "hostile", columns='["volume"]'),
    ]
    state = tmp_path / "state.json"
    state.write_bytes(state_document({INJECTION: "Running"}))
    hostile = [Hostile("injector", "state", state)]
    with ledger.case("hostile: readonly downgrade (real ClickHouse)") as entry, \
            fleet(tmp_path / "fleet", hostile, agent, client_keys, extra=extra) as f:  # fmt: skip
        f.wait_polls("injector", 2)
        write_atomically(state, state_document({INJECTION: "Done"}))
        figures = run_case(f, "readonly downgrade", idle_rss)
        check(figures, ledger, entry)
        assert f.hook is not None
        hook = f.hook
        for name in ("readonly-off", "alter", "volume"):
            wait_until(lambda n=name: len(results(hook, n)) >= 2, 120, f"the {name} check of both phases")
        for event in results(hook, "readonly-off") + results(hook, "alter"):
            assert event["event"] == "check.errored", event
            assert "readonly" in str(event.get("error")), event
        assert {e["event"] for e in results(hook, "volume")} == {"check.failed"}
        assert {e["host"] for e in results(hook, "alter")} == {"honest", "injector"}
    assert clickhouse.execute("SELECT count() FROM hostile.bars").strip() == "100"
    mutations = clickhouse.execute("SELECT count() FROM system.mutations WHERE database = 'hostile'")
    assert mutations.strip() == "0"


def test_on_current_clickhouse_no_statement_turns_readonly_off(tmp_path: Path, ledger: Ledger) -> None:
    """The same attempts through the client to current ClickHouse (chdb, in a child process)."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        pytest.fail("chdb is not installed (the test extra installs it)", pytrace=False)
    attempts = [
        "SELECT count() FROM bars SETTINGS readonly = 0",
        "SELECT count() FROM bars SETTINGS max_threads = 8",
        "ALTER TABLE bars DELETE WHERE 1",
        "INSERT INTO bars VALUES (2)",
        "DROP TABLE bars",
    ]
    with ledger.case("hostile: readonly downgrade (chdb)") as entry:
        entry["count"] = len(attempts)
        argv = [sys.executable, "-m", "tests.harness.chdb_driver", str(tmp_path / "db"), *attempts]
        proc = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=True)
        answers = json.loads(proc.stdout.splitlines()[-1])
        print("chdb:", answers)
        assert all(answers[sql] != "ok" and "readonly" in answers[sql] for sql in attempts), answers
        assert answers["count"] == 1


def test_a_reconnect_under_via_host(tmp_path: Path, agent: Path, client_keys: ClientKeys,
                                    clickhouse: ClickHouseServer, idle_rss: float,
                                    ledger: Ledger) -> None:  # fmt: skip
    """ClickHouse through a tunnel over a hostile host whose sshd drops every connection mid-run: the checks
    of the next phase reach ClickHouse through the new tunnel."""
    seeded(clickhouse, "tunnelled")
    extra = [*clickhouse_lines(clickhouse, 'via_host = "tunnel"'),
             *check_lines("volume", "negatives", "tunnelled", columns='["volume"]')]  # fmt: skip
    state = tmp_path / "state.json"
    state.write_bytes(state_document({"p1": "Running"}))
    with ledger.case("hostile: via_host reconnect") as entry, \
            fleet(tmp_path / "fleet", [Hostile("tunnel", "state", state)], agent, client_keys,
                  extra=extra) as f:  # fmt: skip
        assert f.hook is not None and f.sim is not None
        hook = f.hook
        figures = run_case(f, "via_host reconnect", idle_rss)
        check(figures, ledger, entry)
        wait_until(lambda: results(hook, "volume"), 120, "the check of the first phase")
        tunnel = next(s for s in f.servers if s.root.name == "tunnel")
        tunnel.drop_connections()
        tunnel.start()
        polls = f.polls("tunnel")
        f.wait_polls("tunnel", polls + 2)  # reconnected
        second = f.sim.add_gated("y2027", group="p1", label="y2027")
        f.wait_polls("honest", f.polls("honest") + 2)
        f.sim.finish("y2027", 0)
        f.sim.wait_for_status(second, "Done")
        wait_until(lambda: len(results(hook, "volume")) >= 2, 120, "the check after the reconnect")
        events = results(hook, "volume")
        print("via_host checks:", [(e["event"], e.get("error")) for e in events])
        assert [e["event"] for e in events] == ["check.failed", "check.failed"], events
