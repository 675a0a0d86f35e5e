"""The monitoring kit in deploy/: the Prometheus alert rules pass promtool and their unit tests, and every
query of the Grafana dashboard runs against a real Prometheus scraping a running daemon."""

from __future__ import annotations

import json
import re
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import SSHFactory
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import REPO, sim_env, sim_host, ssh_entry
from tests.harness.prometheus import PROMTOOL_BINARIES, PrometheusServer
from tests.harness.services import free_port, require_binary
from tests.pueue_sim.scenario import SimHost

ALERTS = REPO / "deploy" / "prometheus" / "alerts.yml"
ALERTS_TEST = REPO / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "pueue-watcher.json"

# Grafana's variables, as Grafana would substitute them (`$host` with "All" selected).
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "15s",
    "$__range": "1h",
    "${host}": ".*",
    "$host": ".*",
}

# Panels whose queries must return data from one host with a running task, not just run without error.
PANELS_WITH_DATA = {
    "Hosts up",
    "Hosts down",
    "Running tasks",
    "Tasks by status",
    "Group progress (finished / total)",
    "Remaining tasks",
    "Running vs parallel limit",
    "Phase completions per hour",
    "Load per CPU",
    "Memory available",
    "Swap (pages/s)",
    "Disk available",
    "State file size",
    "Poll duration",
    "Poll failures by reason",
    "Data age",
    "Outbox (undelivered events)",
    "Watcher memory (RSS)",
    "Loop heartbeat age",
    "Watcher versions",
}

# The watcher's own metrics without a host label; every other pueue_ metric is filtered by `$host`.
WATCHER_WIDE = {
    "pueue_watcher_outbox_events",
    "pueue_watcher_delivery_failures_total",
    "pueue_watcher_last_heartbeat_timestamp_seconds",
    "pueue_watcher_build_info",
}
SELECTOR = re.compile(r"\b(pueue_[a-zA-Z0-9_:]+)(\{[^}]*\})?")
METRIC_NAME = re.compile(r"\b((?:pueue|process|python)_[a-zA-Z0-9_:]+)")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    binary = require_binary(*PROMTOOL_BINARIES)
    return subprocess.run([binary, *args], capture_output=True, text=True, timeout=60, check=False, cwd=REPO)


def dashboard_panels() -> list[dict[str, Any]]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    nested = [child for p in panels if p["type"] == "row" for child in p.get("panels", [])]
    return [p for p in [*panels, *nested] if p["type"] != "row"]


def substitute(expr: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(variable, value)
    assert "$" not in expr, f"unsubstituted Grafana variable in {expr!r}"
    return expr


@pytest.mark.integration  # promtool comes with Prometheus
def test_alert_rules_pass_promtool_check() -> None:
    """`promtool check rules` accepts deploy/prometheus/alerts.yml without a warning."""
    result = promtool("check", "rules", str(ALERTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 7 rules found" in result.stdout
    assert "WARNING" not in result.stdout + result.stderr


@pytest.mark.integration  # promtool comes with Prometheus
def test_alert_rule_unit_tests_cover_every_rule_and_pass() -> None:
    """`promtool test rules` passes, with a firing and a not-firing case for every alert rule."""
    rules = set(re.findall(r"^\s+- alert: (\w+)$", ALERTS.read_text(), re.MULTILINE))
    assert len(rules) == 7
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in re.split(r"^\s+- eval_time: ", ALERTS_TEST.read_text(), flags=re.MULTILINE)[1:]:
        (name,) = re.findall(r"alertname: (\w+)", case)
        (quiet if re.search(r"exp_alerts: \[\]", case) else firing).add(name)
    assert firing == rules
    assert quiet == rules
    result = promtool("test", "rules", str(ALERTS_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_dashboard_is_importable() -> None:
    """The dashboard is Grafana JSON with a Prometheus data source variable, a host variable and a query in
    every panel."""
    dashboard = json.loads(DASHBOARD.read_text())
    assert 36 <= dashboard["schemaVersion"] <= 39
    assert dashboard["uid"] == "pueue-watcher"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert variables["host"]["query"]["query"] == "label_values(pueue_watcher_host_up, host)"
    assert variables["host"]["includeAll"] and variables["host"]["allValue"] == ".*"
    panels = dashboard_panels()
    assert len(panels) >= 20
    assert len({p["id"] for p in dashboard["panels"]}) == len(dashboard["panels"])
    for panel in panels:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], f"{panel['title']} has no query"
        for target in panel["targets"]:
            for name, selector in SELECTOR.findall(target["expr"]):
                if name not in WATCHER_WIDE:
                    assert 'host=~"$host"' in selector, f"{panel['title']}: {name} without $host"
    assert set(PANELS_WITH_DATA) <= {p["title"] for p in panels}


@pytest.fixture
def host(tmp_path: Path) -> Iterator[SimHost]:
    with sim_host(tmp_path / "sim", "v4") as sim:
        sim.pueue("group", "add", "btc-yearly", check=True)
        yield sim


@pytest.mark.integration
def test_every_dashboard_query_runs_against_a_scraped_daemon(
    tmp_path: Path, sshd_factory: SSHFactory, host: SimHost
) -> None:
    """Every panel's metrics are exported by a running daemon, and every query of the dashboard succeeds in
    a real Prometheus scraping it (with data where one host with a running task must give some)."""
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
        + '[[alerts]]\nname = "log"\nkind = "console"\n'
    )
    daemon = DaemonProcess(config, tmp_path / "m.log").start()
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{port}"]).start()
    try:
        prometheus.wait_for('pueue_tasks{host="bigblack",group="btc-yearly",status="running"} == 1')
        prometheus.wait_for("pueue_host_load1")
        prometheus.wait_for("count_over_time(pueue_watcher_host_up[1m]) > 3")  # rate() needs two samples
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            exposition = response.read().decode()
        results = {}
        for panel in dashboard_panels():
            for target in panel["targets"]:
                results[(panel["title"], target["refId"])] = prometheus.query(substitute(target["expr"]))
    finally:
        prometheus.stop()
        daemon.stop()
        host.finish("long")

    exported = set()
    for family in text_string_to_metric_families(exposition):
        exported.add(family.name)
        suffixes = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created")}
        exported.update(family.name + suffix for suffix in suffixes.get(family.type, ()))
        exported.update(sample.name for sample in family.samples)
    for panel in dashboard_panels():
        for target in panel["targets"]:
            names = set(METRIC_NAME.findall(target["expr"]))
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            assert names <= exported, f"{panel['title']}: {sorted(names - exported)} not in /metrics"
    empty = sorted(key for key, result in results.items() if not result)
    assert not [key for key in empty if key[0] in PANELS_WITH_DATA], empty
