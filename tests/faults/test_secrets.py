"""Secrets (issue 8, point 6): known secret values everywhere a secret can live, driven through failures,
and searched for in everything the watcher writes or shows.

Where secrets live (``watcher/config.py``, ``watcher/alerts/config.py``: the ``SecretStr`` settings): the
passphrase of an encrypted SSH identity, the ClickHouse password, the webhook's URL (a token in its path and
in its query) and its HMAC secret, the Slack incoming-webhook URL; and, on the host, the environment that
``pueue add`` records in each task's ``envs`` and a token in a task's command. Alertmanager has no
authentication settings, so it holds none.

The failures: a second host whose passphrase is wrong, a first daemon run with a wrong ClickHouse password,
a webhook that answers 500 quoting its URL and the secret back, a Slack URL that answers 404 quoting its
token. Searched: every log line of both daemon runs, /metrics, every request the receivers got (body and
headers, but the signature, which is the intended HMAC), ``status``, ``status --json``, ``history``,
``history --json``, ``check --json``, ``health``, ``config validate`` of a broken file, and the bytes of the
SQLite store (its WAL included).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.faults.ledger import Ledger
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, watcher
from tests.harness.receiver import Receiver, Reply
from tests.harness.services import free_port, require_binary
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration

SECRETS = {
    "passphrase": "pp-7Hq2-secret-passphrase",
    "wrong passphrase": "pp-wrong-9Zt4-passphrase",
    "clickhouse password": "ch-4Kd9-secret-password",
    "wrong clickhouse password": "ch-wrong-2Vx8-password",
    "hmac secret": "hmac-3Fw1-signing-secret",
    "webhook token": "hooktok-8Ls5-in-the-path",
    "webhook query token": "qtok-6Rm3-in-the-query",
    "slack token": "slacktok-1Pj7-in-the-url",
    "task env": "env-5Nb2-api-key-of-a-task",
    "task command": "cmd-0Yc6-token-in-a-command",
}

_USERS = """<?xml version="1.0"?>
<yandex><users><watcher>
    <password>{password}</password>
    <networks><ip>127.0.0.1</ip></networks>
    <profile>readonly</profile>
    <quota>default</quota>
</watcher></users></yandex>
"""


def toml(sections: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    for name, tables in arrays.items():
        for table in tables:
            lines += [f"[[{name}]]", *(f"{k} = {json.dumps(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return watcher(*args, timeout=180)


def open_groups(config: Path) -> set[str]:
    proc = cli("history", "--json", "-c", str(config))
    return (
        {p["group"] for p in json.loads(proc.stdout) if p["status"] == "open"}
        if proc.returncode == 0
        else set()
    )


def leaks(where: str, text: str | bytes) -> list[str]:
    """``where: secret name`` for every secret value found in ``text``."""
    data = text.encode() if isinstance(text, str) else text
    return [f"{where}: {name}" for name, value in SECRETS.items() if value.encode() in data]


def test_no_secret_reaches_logs_metrics_alerts_output_or_the_store(ledger: Ledger, tmp_path: Path) -> None:
    """Secrets set everywhere a secret can live, through a wrong passphrase, a wrong ClickHouse password, a
    failing webhook and a failing Slack: none of them appears in anything the watcher writes or shows."""
    keygen = require_binary("ssh-keygen")
    keys = ClientKeys(tmp_path / "keys")
    identity = keys.root / "id_encrypted"
    subprocess.run(
        [keygen, "-q", "-t", "ed25519", "-N", SECRETS["passphrase"], "-C", "", "-f", str(identity)],
        check=True,
    )
    keys.authorized_keys.write_text((keys.root / "id_encrypted.pub").read_text())  # the only key that works
    hook_path = f"/hook/{SECRETS['webhook token']}"
    slack_path = f"/services/T0/B0/{SECRETS['slack token']}"
    webhook = Receiver(Reply(500, f"no route {hook_path} for {SECRETS['hmac secret']}".encode())).start()
    slack = Receiver(Reply(404, f"invalid_token {SECRETS['slack token']}".encode())).start()
    clickhouse_root = tmp_path / "clickhouse"
    (clickhouse_root / "users.d").mkdir(parents=True)
    (clickhouse_root / "users.d" / "watcher.xml").write_text(
        _USERS.format(password=SECRETS["clickhouse password"])
    )
    clickhouse = ClickHouseServer(clickhouse_root)
    sim = SimHost(tmp_path / "sim", "v4")
    server = SSHServer(tmp_path / "sshd", keys, sim_env(sim))
    daemon = DaemonProcess(tmp_path / "a.toml", tmp_path / "daemon.log")
    seen: dict[str, str | bytes] = {}
    with ledger.fault("secrets through failures (passphrase, ClickHouse password, webhook, Slack)", count=4):
        try:
            clickhouse.start()
            clickhouse.execute(
                "CREATE DATABASE s",
                "CREATE TABLE s.t (n Int64) ENGINE = MergeTree ORDER BY n",
                "INSERT INTO s.t VALUES (1), (2)",
            )
            sim.start_daemon()
            for group in ("g1", "g2"):
                sim.pueue("group", "add", group, check=True)
                sim.pueue("pause", "-g", group, check=True)
                sim.add(f"true # {SECRETS['task command']}", group=group, label=f"{group}-job",
                        env={"API_KEY": SECRETS["task env"]})  # fmt: skip
            assert SECRETS["task env"] in sim.state_path.read_text()  # the host's state holds it, as pueue's
            server.start()
            metrics_port = free_port()
            host = {"address": "127.0.0.1", "port": server.port, "user": server.user, "known_hosts":
                    str(keys.known_hosts), "identity_file": str(identity), "pueue": str(sim.pueue_bin),
                    "pueue_dir": str(sim.pueue_dir)}  # fmt: skip

            def config(path: Path, password: str) -> Path:
                path.write_text(
                    toml(
                        {"watcher": {"poll_interval": "1s", "fast_interval": "0.5s", "down_after": 1,
                                     "state_path": str(tmp_path / "state.db")},
                         "metrics": {"listen": f"127.0.0.1:{metrics_port}"}},
                        {"hosts": [host | {"name": "good", "passphrase": SECRETS["passphrase"]},
                                   host | {"name": "locked", "passphrase": SECRETS["wrong passphrase"]}],
                         "clickhouse": [{"name": "main", "port": clickhouse.port, "user": "watcher",
                                         "password": password}],
                         "checks": [{"name": "positive", "kind": "negatives", "clickhouse": "main",
                                     "table": "s.t", "columns": ["n"], "hosts": ["good"]}],
                         "alerts": [{"name": "hook", "kind": "webhook", "timeout": "2s", "secret":
                                     SECRETS["hmac secret"], "url": f"{webhook.url}{hook_path}?token="
                                     f"{SECRETS['webhook query token']}&x=1"},
                                    {"name": "slack", "kind": "slack", "url": f"{slack.url}{slack_path}"}]},
                    )
                )  # fmt: skip
                return path

            def delivered(event: str, group: str | None = None) -> bool:
                return any(
                    e["event"] == event and (group is None or e["group"] == group)
                    for r in webhook.requests
                    if r.method == "POST" and r.path.startswith(hook_path)
                    for e in json.loads(r.body)["events"]
                )

            def scrape() -> bytes:
                with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=30) as answer:
                    return bytes(answer.read())

            # Run A: the wrong ClickHouse password; the webhook fails once, Slack refuses its first batch.
            first = config(tmp_path / "a.toml", SECRETS["wrong clickhouse password"])
            daemon.start()
            daemon.wait_for(lambda: delivered("host.down"), timeout=120)
            daemon.wait_for(lambda: {"g1", "g2"} <= open_groups(first), timeout=120)
            sim.pueue("start", "-g", "g1", check=True)
            daemon.wait_for(lambda: delivered("check.errored", "g1"), timeout=120)
            seen["metrics A"] = scrape()
            check_g1 = ("check", "--host", "good", "--group", "g1", "--json")
            for args in (("status",), ("status", "--json"), check_g1, ("health",)):
                proc = cli(*args, "-c", str(first))
                seen[" ".join(args) + " (A)"] = proc.stdout + proc.stderr
            assert daemon.terminate() == 0

            # Run B: the right password; the check passes.
            second = config(tmp_path / "b.toml", SECRETS["clickhouse password"])
            daemon.config = second
            daemon.start()
            sim.pueue("start", "-g", "g2", check=True)
            daemon.wait_for(lambda: delivered("phase.completed", "g2"), timeout=120)
            seen["metrics B"] = scrape()
            assert daemon.terminate() == 0
            for args in (("status",), ("status", "--json"), ("history",), ("history", "--json")):
                proc = cli(*args, "-c", str(second))
                seen[" ".join(args) + " (B)"] = proc.stdout + proc.stderr
            history = json.loads(seen["history --json (B)"])
            broken = tmp_path / "broken.toml"
            broken.write_text(
                second.read_text()
                .replace(f'"{slack.url}', f'"ftp://{slack.url}')
                .replace("down_after = 1", "x = 1")
            )
            proc = cli("config", "validate", str(broken))
            assert proc.returncode == 2
            seen["config validate"] = proc.stdout + proc.stderr
        finally:
            daemon.stop()
            server.stop()
            sim.close()
            clickhouse.stop()
            webhook.stop()
            slack.stop()

        seen["daemon log"] = (tmp_path / "daemon.log").read_text()
        for path in sorted(tmp_path.glob("state.db*")):
            seen[path.name] = path.read_bytes()
        signed = 0
        for name, receiver in (("webhook", webhook), ("slack", slack)):
            for i, request in enumerate(receiver.requests):
                headers = dict(request.headers)
                signature = headers.pop("x-pueue-watcher-signature", None)
                seen[f"{name} request {i}"] = json.dumps(headers).encode() + request.body
                if signature is not None:
                    timestamp = headers["x-pueue-watcher-timestamp"]
                    signed_bytes = f"{timestamp}.".encode() + request.body
                    digest = hmac.new(
                        SECRETS["hmac secret"].encode(), signed_bytes, hashlib.sha256
                    ).hexdigest()
                    assert hmac.compare_digest(signature, f"sha256={digest}")
                    signed += 1

        found = [leak for where, text in seen.items() for leak in leaks(where, text)]
        assert found == []
        # The failures did happen, and were reported (without their secrets).
        log = seen["daemon log"]
        assert isinstance(log, str)
        assert "HTTP 500" in log and "HTTP 404" in log
        assert "passphrase" in str(seen["status --json (A)"]).lower()
        (result,) = json.loads(str(seen["check --host good --group g1 --json (A)"]).splitlines()[0])
        assert result["status"] == "error" and "password" in result["error"].lower(), result
        statuses = {(p["group"], c["name"]): c["status"] for p in history for c in p["checks"]}
        assert statuses == {("g1", "positive"): "error", ("g2", "positive"): "ok"}
        assert signed >= 2
        accepted = [e for r in webhook.requests[1:] for e in json.loads(r.body)["events"]]  # the 1st got 500
        ledger.events(
            [f"phase.completed:{p['id']}" for p in history if p["status"] == "completed"],
            [e["id"] for e in accepted],
            [e["phase"] for e in accepted if e["event"] == "phase.completed"],
        )
