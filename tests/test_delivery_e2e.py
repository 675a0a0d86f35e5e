"""Delivery end to end: the outbox's retries against a real HTTP receiver, kill -9 between commit and
delivery, secrets kept out of logs, and real Prometheus scraping the running daemon."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

import watcher.outbox as outbox_module
from tests.conftest import SSHFactory
from tests.harness import state_db
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry
from tests.harness.prometheus import PrometheusServer
from tests.harness.receiver import Receiver, Reply
from tests.harness.services import free_port
from tests.pueue_sim.scenario import SimHost
from watcher.alerts.config import WebhookConfig
from watcher.outbox import Outbox
from watcher.records import Event
from watcher.store import Store

pytestmark = pytest.mark.integration

T = datetime(2026, 1, 1, tzinfo=UTC)
SECRET = "hmac-secret-3f9a7c"
TOKEN = "T0K3N-in-the-url-55aa"


def verify(request_headers: dict[str, str], body: bytes) -> bool:
    timestamp = request_headers["x-pueue-watcher-timestamp"]
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(request_headers["x-pueue-watcher-signature"], f"sha256={expected}")


async def test_webhook_failing_three_times_receives_the_event_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """500, a hang past the timeout, 429 with Retry-After: the 4th attempt delivers, once, signed."""
    monkeypatch.setattr(outbox_module, "_exponential", lambda state: 0.2)  # keep the test short
    receiver = Receiver(
        Reply(status=500),
        Reply(delay=3.0),
        Reply(status=429, headers={"Retry-After": "1"}),
        Reply(status=200),
    ).start()
    store = await Store.open(tmp_path / "state.db")
    try:
        config = WebhookConfig(name="ops", url=f"{receiver.url}/hook/{TOKEN}", secret=SECRET, timeout=1.0)  # type: ignore[arg-type]
        outbox = Outbox(store, [config])
        data = {"severity": "warning", "summary": "h/g: phase failed"}
        event = Event(
            id="phase.completed:h/g/1", event="phase.completed", host="h", group="g", at=T, data=data
        )
        await store.commit("h", events=[event])
        await outbox.drain(attempts=5)
        await outbox.close()
        requests = receiver.wait_for(4)
        assert [e.id for e in await store.pending_deliveries("ops")] == []
        assert state_db.delivered(store.path, "ops") == [event.id]
    finally:
        receiver.stop()
        await store.close()
    accepted = requests[3]
    assert [e["id"] for e in accepted.json()["events"]] == [event.id]
    assert verify(accepted.headers, accepted.body)
    assert len(requests) == 4  # three failures and one success: the event was accepted exactly once


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "btc-yearly", check=True)
        yield sim


def test_kill_9_between_commit_and_delivery_delivers_after_restart(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost
) -> None:
    """The receiver is down when the phase completes; kill -9; the restarted daemon delivers it, once."""
    server = sshd_factory.start(sim_env(host))
    receiver = Receiver()  # not started yet: connection refused
    config = tmp_path / "c.toml"
    entry = ssh_entry("bigblack", server, host)
    config.write_text(
        "[watcher]\n"
        f'state_path = "{tmp_path / "state.db"}"\npoll_interval = "1s"\nfast_interval = "0.5s"\n'
        '[metrics]\nlisten = ""\n[[hosts]]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
        + f'[[alerts]]\nname = "ops"\nkind = "webhook"\nurl = "{receiver.url}/hook/{TOKEN}"\n'
        f'secret = "{SECRET}"\ntimeout = "1s"\n'
        '[[alerts]]\nname = "log"\nkind = "console"\n'
    )
    task = host.add_gated("a", group="btc-yearly", label="a")
    daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("cycle"))
        host.finish("a")
        host.wait_for_status(task, "Done")
        daemon.wait_for(lambda: daemon.events("phase.completed"))  # committed, and logged by the console sink
        daemon.wait_for(lambda: daemon.events("delivery.retry") or daemon.events("delivery.failed"))
        daemon.kill()
        receiver.start()
        daemon.start()
        requests = daemon.wait_for(lambda: receiver.requests, timeout=60)
        daemon.wait_for(lambda: len(daemon.events("started")) == 2)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        receiver.stop()
    delivered = Counter(e["id"] for r in receiver.requests for e in r.json()["events"])
    phase_ids = [i for i in delivered if i.startswith("phase.completed:")]
    assert len(phase_ids) == 1
    assert delivered[phase_ids[0]] == 1
    assert all(verify(r.headers, r.body) for r in requests)
    log = (tmp_path / "daemon.log").read_text()
    assert SECRET not in log
    assert TOKEN not in log


def test_prometheus_scrapes_the_daemon(tmp_path: Path, sshd_factory: SSHFactory, host: SimHost) -> None:
    """A real Prometheus scrapes the running daemon; pueue_tasks comes back through its HTTP API."""
    host.add("true", group="btc-yearly")
    host.add_gated("long", group="btc-yearly")
    server = sshd_factory.start(sim_env(host))
    port = free_port()
    entry = ssh_entry("bigblack", server, host)
    config = tmp_path / "m.toml"
    config.write_text(
        f'[watcher]\nstate_path = "{tmp_path / "m.db"}"\npoll_interval = "1s"\n'
        f'[metrics]\nlisten = "127.0.0.1:{port}"\n[[hosts]]\n'
        + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    )
    daemon = DaemonProcess(config, tmp_path / "m.log").start()
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"]).start()
    try:
        running = prometheus.wait_for('pueue_tasks{host="bigblack",group="btc-yearly",status="running"} == 1')
        assert running[0]["metric"]["group"] == "btc-yearly"
        up = prometheus.wait_for('pueue_watcher_host_up{host="bigblack"} == 1')
        assert up
        assert prometheus.query('up{job="pueue-watcher"}')[0]["value"][1] == "1"
    finally:
        prometheus.stop()
        daemon.stop()
        host.finish("long")
    assert os.path.exists(tmp_path / "m.db")


def test_host_down_and_up_fire_once_each(tmp_path: Path, client_keys: object, host: SimHost) -> None:
    """A host that fails 3 polls in a row is reported down once; once it answers again, up once."""
    from tests.harness.sshd import SSHServer

    server = SSHServer(tmp_path / "late-sshd", client_keys, sim_env(host))  # type: ignore[arg-type]
    entry = ssh_entry("bigblack", server, host)
    config = tmp_path / "d.toml"
    config.write_text(
        f'[watcher]\nstate_path = "{tmp_path / "d.db"}"\npoll_interval = "0.5s"\nconnect_timeout = "2s"\n'
        '[metrics]\nlisten = ""\n[[hosts]]\n' + "".join(f"{k} = {json.dumps(v)}\n" for k, v in entry.items())
    )
    daemon = DaemonProcess(config, tmp_path / "d.log").start()
    try:
        daemon.wait_for(lambda: daemon.events("host.down"), timeout=60)
        daemon.wait_for(lambda: len(daemon.events("cycle")) >= 3)  # still down: no second host.down
        server.start()
        daemon.wait_for(lambda: daemon.events("host.up"), timeout=60)
        daemon.wait_for(lambda: len(daemon.events("cycle")) >= 6)
        assert daemon.terminate() == 0
    finally:
        daemon.stop()
        server.stop()
    (down,) = daemon.events("host.down")
    (up,) = daemon.events("host.up")
    assert down["failures"] == 3
    assert "connection refused" in down["error"]
    assert up["id"] == down["id"].replace("host.down:", "host.up:")
