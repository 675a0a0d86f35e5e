"""SQL injection (issue 8, point 5): SQL identifiers in the configuration that try an injection are refused
naming their key, and remote values (group names) reach ClickHouse only as parameters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SSHFactory
from tests.faults import hostile
from tests.faults.hostile_kit import PueueSocket, cli, toml
from tests.faults.ledger import Ledger
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.fleet import sim_env, ssh_entry
from tests.pueue_sim.scenario import SimHost

# Where an identifier sits in the configuration, and the key its error must name.
_IDENTIFIER_KEYS = {
    "table": ("checks[0].table", {"table": None, "columns": ["a"]}),
    "columns": ("checks[0].columns", {"table": "t", "columns": None}),
    "group_by": ("checks[0].group_by", {"table": "t", "columns": ["a"], "group_by": None}),
    "key": ("checks[0].key", {"table": "t", "key": None}),
    "null columns": ("checks[0].columns", {"table": "t", "columns": None}),
    "database": ("clickhouse[0].database", {"table": "t", "columns": ["a"]}),
}


def _identifier_config(where: str, value: str) -> dict[str, list[dict[str, Any]]]:
    _, fields = _IDENTIFIER_KEYS[where]
    kind = {"key": "duplicates", "null columns": "null_coverage"}.get(where, "negatives")
    check: dict[str, Any] = {"name": "c", "kind": kind, "clickhouse": "main"}
    for key, default in fields.items():
        check[key] = default if default is not None else ([value] if key != "table" else value)
    clickhouse = {"name": "main"} | ({"database": value} if where == "database" else {})
    return {"clickhouse": [clickhouse], "checks": [check]}


@pytest.mark.parametrize("where", sorted(_IDENTIFIER_KEYS))
def test_injection_in_an_identifier_is_refused_naming_the_key(
    ledger: Ledger, tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    """Each hostile table, column, key or database name makes `config validate` exit 2 with one line that
    names the key and shows the value in ASCII (so that a look-alike letter is visible)."""
    from watcher.cli import main

    key, _ = _IDENTIFIER_KEYS[where]
    for value in hostile.SQL_IDENTIFIERS:
        ledger.hostile()
        path = tmp_path / "c.toml"
        path.write_text(toml({}, _identifier_config(where, value)))
        assert main(["config", "validate", str(path)]) == 2, value
        (line,) = capsys.readouterr().err.splitlines()
        assert line.startswith(f"config error: {path}: {key}: "), line
        assert ascii(value[:60])[1:-1] in line and line.isascii(), line


def test_config_validate_lists_every_injection_attempt(ledger: Ledger, tmp_path: Path) -> None:
    """A file with injection attempts in every place makes `pueue-watcher config validate` exit 2 with one
    line per wrong key, while operator SQL in `where` stays valid."""
    attempts = ["t; DROP TABLE x", "a` OR 1=1 --", "x' OR '1'='1", "b\u0430rs", "bars\n"]
    ledger.hostile(len(attempts))
    common = {"clickhouse": "main"}
    checks = [
        common | {"name": "n", "kind": "negatives", "table": attempts[0], "columns": [attempts[1]]},
        common | {"name": "d", "kind": "duplicates", "table": "db.t", "key": [attempts[4]]},
        common | {"name": "u", "kind": "null_coverage", "table": attempts[3], "columns": ["a"]},
    ]
    checks[0]["group_by"] = [attempts[2]]
    path = tmp_path / "c.toml"
    path.write_text(toml({}, {"clickhouse": [{"name": "main", "database": attempts[0]}], "checks": checks}))
    proc = cli("config", "validate", str(path))
    assert proc.returncode == 2
    lines = proc.stderr.splitlines()
    assert [line.split(": ")[2] for line in lines] == [
        "clickhouse[0].database",
        "checks[0].table",
        "checks[0].columns",
        "checks[0].group_by",
        "checks[1].key",
        "checks[2].table",
    ], proc.stderr
    valid = {"name": "w", "kind": "negatives", "clickhouse": "main", "table": "db.t", "columns": ["a"],
             "where": "grp = %(group)s OR 1=1 --"}  # fmt: skip
    path.write_text(toml({}, {"clickhouse": [{"name": "main"}], "checks": [valid]}))
    assert cli("config", "validate", str(path)).returncode == 0


@pytest.mark.integration
def test_remote_group_names_reach_clickhouse_only_as_parameters(
    ledger: Ledger, tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """Groups named like SQL injections reach a real ClickHouse only as parameters: a check counts exactly
    the rows of that literal name, writes are refused, and the table keeps every row."""
    from clickhouse_driver import Client

    names = ["x' OR 1=1 --", "'; DROP TABLE inj.rows; --", "\\' OR 1=1 --", "%(host)s", "x\n) OR (1=1",
             "a`b\"c", "nul\x00' OR '1'='1"]  # fmt: skip
    rows = [(name, i + 1) for i, name in enumerate(names) for _ in range(i + 1)] + [("other", 0)] * 100
    ledger.hostile(len(names))
    clickhouse = ClickHouseServer(tmp_path / "clickhouse").start()
    sim = SimHost(tmp_path / "sim", "v4")
    with ledger.fault("SQL injection through remote group names"):
        try:
            client = Client("127.0.0.1", port=clickhouse.port)
            client.execute("CREATE DATABASE inj")
            client.execute("CREATE TABLE inj.rows (grp String, n Int64) ENGINE = MergeTree ORDER BY grp")
            client.execute("INSERT INTO inj.rows (grp, n) VALUES", rows)
            sim.start_daemon()
            pueue = PueueSocket(sim)
            ids = []
            for name in names:
                pueue.group(name, paused=False)
                ids.append(pueue.add(name, "true", "job"))
            pueue.close()
            for task_id in ids:
                sim.wait_for_status(task_id, "Done")
            server = sshd_factory.start(sim_env(sim))
            config = tmp_path / "c.toml"
            checks = [
                {"name": "rows", "kind": "sql", "clickhouse": "main", "groups": names,
                 "sql": "SELECT count() FROM inj.rows WHERE grp = %(group)s"},
                {"name": "drop", "kind": "sql", "clickhouse": "main", "groups": names[:1],
                 "sql": "DROP TABLE inj.rows"},
                {"name": "then-drop", "kind": "sql", "clickhouse": "main", "groups": names[:1],
                 "sql": "SELECT 1; DROP TABLE inj.rows"},
            ]  # fmt: skip
            config.write_text(
                toml(
                    {"watcher": {"state_path": str(tmp_path / "state.db"), "alert_on_first_sight": True},
                     "metrics": {"listen": ""}},
                    {"hosts": [ssh_entry("bigblack", server, sim)],
                     "clickhouse": [{"name": "main", "port": clickhouse.port}], "checks": checks},
                )
            )  # fmt: skip
            proc = cli("once", "--json", "-c", str(config))
            assert proc.returncode == 0, proc.stderr
            events = json.loads(proc.stdout)
            survivors = client.execute("SELECT count() FROM inj.rows")[0][0]
            client.disconnect()
        finally:
            sim.close()
            clickhouse.stop()
        counted = {e["group"]: e["violations"] for e in events if e.get("check") == "rows"}
        assert counted == {name: i + 1 for i, name in enumerate(names)}, counted
        refused = {e["check"]: e["error"] for e in events if e["event"] == "check.errored"}
        assert set(refused) == {"drop", "then-drop"}, refused
        assert "readonly" in refused["drop"].lower()
        assert survivors == len(rows)
