"""Metrics: MetricsState fed real PollResults, the collector, the HTTP endpoint, promtool and Prometheus."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from tests.harness.prometheus import PrometheusServer, promtool_check_metrics
from tests.harness.services import free_port
from watcher.errors import WatcherError
from watcher.metrics import MetricsError, MetricsServer, MetricsState, build_registry, start_metrics_server
from watcher.poll.poller import PollResult
from watcher.probes import ProbeSample, parse_block, read_tree
from watcher.pueue.model import COUNT_KEYS, Snapshot
from watcher.pueue.parse import parse_status

TREES = Path(__file__).parent / "fixtures" / "proc"
# Shortly after the fixture's last task ended, so that the ETAs are those of a live queue.
NOW = datetime(2025, 6, 10, 14, 0, tzinfo=UTC)

# The fixture's scenario (shared/fixtures/pueue/README.md), per group: the non-zero counts.
EXPECTED_COUNTS = {
    "default": {"success": 1, "failed": 1, "dependency_failed": 1, "running": 1, "queued": 1, "locked": 1},
    "p1": {"paused": 1, "stashed": 1},
    "btc-yearly": {"success": 1, "killed": 1, "errored": 1, "failed_to_spawn": 1, "running": 1, "stashed": 1},
}

EVERY_METRIC = (
    "pueue_tasks",
    "pueue_group_parallel_tasks",
    "pueue_group_paused",
    "pueue_group_remaining_tasks",
    "pueue_group_eta_seconds",
    "pueue_phase_completions_total",
    "pueue_phase_last_completion_timestamp_seconds",
    "pueue_state_file_bytes",
    "pueue_state_cleans_total",
    "pueue_watcher_host_up",
    "pueue_watcher_poll_duration_seconds_bucket",
    "pueue_watcher_poll_duration_seconds_sum",
    "pueue_watcher_poll_duration_seconds_count",
    "pueue_watcher_poll_failures_total",
    "pueue_check_status",
    "pueue_check_violations",
    "pueue_host_load1",
    "pueue_host_cpus",
    "pueue_host_memory_available_bytes",
    "pueue_host_memory_total_bytes",
    "pueue_host_swap_in_pages_total",
    "pueue_host_swap_out_pages_total",
    "pueue_host_disk_available_bytes",
    "pueue_watcher_outbox_events",
    "pueue_watcher_delivery_failures_total",
    "pueue_watcher_build_info",
    "pueue_watcher_last_success_timestamp_seconds",
    "pueue_watcher_last_heartbeat_timestamp_seconds",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "python_info",
)

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def snapshot(fixtures_dir: Path) -> Snapshot:
    return parse_status((fixtures_dir / "v4_status.json").read_bytes())


def _probe(tree: str) -> ProbeSample:
    return parse_block(read_tree(TREES / tree))


def _ok(
    host: str, snapshot: Snapshot, *, at: datetime = NOW, duration: float = 0.2, probes: str | None = None
) -> PollResult:
    return PollResult(
        host,
        at,
        duration,
        snapshot=snapshot,
        state_file_bytes=76_200_000,
        source="state",
        probes=_probe(probes) if probes else None,
    )


def _failed(host: str, reason: str, duration: float = 3.0) -> PollResult:
    return PollResult(host, NOW, duration, error=f"{reason}: it failed", reason=reason)


def _parse(text: str) -> Samples:
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _scrape(state: MetricsState) -> Samples:
    return _parse(generate_latest(build_registry(state)).decode())


def _value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _hosts_in(samples: Samples) -> set[str]:
    return {dict(labels)["host"] for _, labels in samples if "host" in dict(labels)}


def _full_state(snapshot: Snapshot) -> MetricsState:
    """A state where every metric has a sample: two hosts, one of them failing, probes, phases, checks."""
    state = MetricsState()
    state.set_hosts(["bigblack", "small"])
    state.observe_poll(_ok("bigblack", snapshot, at=NOW - timedelta(seconds=30), probes="overloaded"), NOW)
    state.observe_poll(_ok("bigblack", snapshot, probes="overloaded-later"), NOW)
    state.observe_poll(_failed("small", "unreachable"), NOW)
    state.phase_completed("bigblack", "default", "failed", NOW)
    state.check_result("bigblack", "default", "volume-not-negative", "warn", 3)
    state.state_cleaned("bigblack")
    state.outbox(2)
    state.delivery_failed("log")
    state.heartbeat()
    return state


def test_pueue_tasks_has_every_status_key_per_group(snapshot: Snapshot) -> None:
    """Every group of the fixture exports all eleven status keys with the scenario's counts, and its limit."""
    state = MetricsState()
    state.observe_poll(_ok("bigblack", snapshot), NOW)
    samples = _scrape(state)
    for group, nonzero in EXPECTED_COUNTS.items():
        for status in COUNT_KEYS:
            value = _value(samples, "pueue_tasks", host="bigblack", group=group, status=status)
            assert value == nonzero.get(status, 0), (group, status, value)
    assert _value(samples, "pueue_group_parallel_tasks", host="bigblack", group="btc-yearly") == 3
    assert _value(samples, "pueue_group_paused", host="bigblack", group="p1") == 1
    assert _value(samples, "pueue_group_paused", host="bigblack", group="default") == 0
    assert _value(samples, "pueue_group_remaining_tasks", host="bigblack", group="default") == 3
    # p1 is paused: no ETA, so no sample (never a made-up 0 or +Inf); btc-yearly has a completion rate.
    assert _value(samples, "pueue_group_eta_seconds", host="bigblack", group="p1") is None
    eta = _value(samples, "pueue_group_eta_seconds", host="bigblack", group="btc-yearly")
    assert eta is not None and eta > 0
    assert _value(samples, "pueue_state_file_bytes", host="bigblack") == 76_200_000
    assert _value(samples, "pueue_watcher_host_up", host="bigblack") == 1
    assert _value(samples, "pueue_watcher_last_success_timestamp_seconds", host="bigblack") == NOW.timestamp()


def test_failed_poll_counts_its_reason_and_keeps_the_last_gauges(snapshot: Snapshot) -> None:
    """A failed poll sets up to 0, counts its reason (known reasons start at 0) and fills the histogram."""
    state = MetricsState()
    state.observe_poll(_ok("bigblack", snapshot, duration=0.04), NOW)
    state.observe_poll(_failed("bigblack", "timeout", duration=45.0), NOW)
    state.observe_poll(_failed("bigblack", "timeout", duration=61.0), NOW)
    samples = _scrape(state)
    assert _value(samples, "pueue_watcher_host_up", host="bigblack") == 0
    assert _value(samples, "pueue_watcher_poll_failures_total", host="bigblack", reason="timeout") == 2
    for reason in ("unreachable", "host_key", "auth", "pueue", "parse", "error"):
        assert _value(samples, "pueue_watcher_poll_failures_total", host="bigblack", reason=reason) == 0
    # The last known queue stays, dated by the last success.
    assert _value(samples, "pueue_tasks", host="bigblack", group="default", status="running") == 1
    assert _value(samples, "pueue_watcher_last_success_timestamp_seconds", host="bigblack") == NOW.timestamp()
    bucket = "pueue_watcher_poll_duration_seconds_bucket"
    assert _value(samples, bucket, host="bigblack", le="0.01") == 0
    assert _value(samples, bucket, host="bigblack", le="0.05") == 1
    assert _value(samples, bucket, host="bigblack", le="60.0") == 2
    assert _value(samples, bucket, host="bigblack", le="+Inf") == 3
    assert _value(samples, "pueue_watcher_poll_duration_seconds_count", host="bigblack") == 3
    assert _value(samples, "pueue_watcher_poll_duration_seconds_sum", host="bigblack") == pytest.approx(
        106.04
    )


def test_probe_values_become_gauges_and_swap_counters(snapshot: Snapshot) -> None:
    """Probe samples from fixture /proc trees export load, CPUs, memory, disk and the vmstat swap counters."""
    state = MetricsState()
    state.observe_poll(_ok("bigblack", snapshot, probes="overloaded"), NOW)
    later = _probe("overloaded-later")
    state.observe_poll(
        _ok("bigblack", snapshot, at=NOW + timedelta(seconds=30), probes="overloaded-later"), NOW
    )
    samples = _scrape(state)
    assert _value(samples, "pueue_host_load1", host="bigblack") == later.load1
    assert _value(samples, "pueue_host_cpus", host="bigblack") == later.cpus
    assert _value(samples, "pueue_host_memory_available_bytes", host="bigblack") == later.mem_available
    assert _value(samples, "pueue_host_memory_total_bytes", host="bigblack") == later.mem_total
    assert _value(samples, "pueue_host_disk_available_bytes", host="bigblack") == later.disk_available
    assert _value(samples, "pueue_host_swap_in_pages_total", host="bigblack") == 1_003_000
    assert _value(samples, "pueue_host_swap_out_pages_total", host="bigblack") == 2_006_000
    # A host without /proc (macOS) reports no values rather than zeros.
    state.observe_poll(_ok("bigblack", snapshot, probes="macos"), NOW)
    assert not any(name.startswith("pueue_host_") for name, _ in _scrape(state))


def test_phases_checks_cleans_and_delivery(snapshot: Snapshot) -> None:
    """Completions count per outcome from 0, checks map ok/warn/fail/error to 0–3, and pending is ignored."""
    state = MetricsState()
    state.observe_poll(_ok("bigblack", snapshot), NOW)
    state.phase_completed("bigblack", "default", "failed", NOW - timedelta(hours=1))
    state.phase_completed("bigblack", "default", "success", NOW)
    state.phase_completed("bigblack", "default", "success", NOW - timedelta(hours=2))  # reported late
    for check, status in (("a", "ok"), ("b", "warn"), ("c", "fail"), ("d", "error")):
        state.check_result("bigblack", "default", check, status, 7 if check != "d" else None)
    state.check_result("bigblack", "default", "a", "pending", None)
    state.state_cleaned("bigblack")
    state.state_cleaned("bigblack")
    state.outbox(5)
    state.delivery_failed("webhook")
    samples = _scrape(state)
    completions = "pueue_phase_completions_total"
    assert _value(samples, completions, host="bigblack", group="default", outcome="success") == 2
    assert _value(samples, completions, host="bigblack", group="default", outcome="failed") == 1
    assert _value(samples, completions, host="bigblack", group="p1", outcome="success") == 0
    last = _value(samples, "pueue_phase_last_completion_timestamp_seconds", host="bigblack", group="default")
    assert last == NOW.timestamp()
    codes = {
        c: _value(samples, "pueue_check_status", host="bigblack", group="default", check=c) for c in "abcd"
    }
    assert codes == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert _value(samples, "pueue_check_violations", host="bigblack", group="default", check="b") == 7
    assert _value(samples, "pueue_check_violations", host="bigblack", group="default", check="d") is None
    assert _value(samples, "pueue_state_cleans_total", host="bigblack") == 2
    assert _value(samples, "pueue_watcher_outbox_events") == 5
    assert _value(samples, "pueue_watcher_delivery_failures_total", sink="webhook") == 1


def test_removed_host_disappears_from_every_metric(snapshot: Snapshot) -> None:
    """After set_hosts without a host, none of its series remain, late observations are ignored, and re-adding
    it starts its counters from 0."""
    state = _full_state(snapshot)
    assert _hosts_in(_scrape(state)) == {"bigblack", "small"}
    state.set_hosts(["small"])
    assert _hosts_in(_scrape(state)) == {"small"}
    # A poll that was in flight when the host was removed does not bring it back.
    state.observe_poll(_ok("bigblack", snapshot), NOW)
    state.phase_completed("bigblack", "default", "success", NOW)
    assert _hosts_in(_scrape(state)) == {"small"}
    state.set_hosts(["small", "bigblack"])
    samples = _scrape(state)
    assert _value(samples, "pueue_state_cleans_total", host="bigblack") == 0
    assert _value(samples, "pueue_watcher_poll_duration_seconds_count", host="bigblack") == 0
    assert _value(samples, "pueue_tasks", host="bigblack", group="default", status="running") is None
    assert _value(samples, "pueue_watcher_poll_failures_total", host="small", reason="unreachable") == 1


@pytest.fixture
async def endpoint(snapshot: Snapshot) -> AsyncIterator[tuple[MetricsServer, MetricsState]]:
    state = _full_state(snapshot)
    server = await start_metrics_server("127.0.0.1:0", state)
    assert server is not None
    yield server, state
    server.close()


def _get(url: str) -> tuple[int, str, str]:
    """(status, content type, body), 4xx/5xx included."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers["Content-Type"], exc.read().decode()


@pytest.mark.integration  # promtool comes with Prometheus
async def test_scrape_over_http_passes_promtool_with_every_metric(
    endpoint: tuple[MetricsServer, MetricsState],
) -> None:
    """GET /metrics serves Prometheus text with every metric name, and `promtool check metrics` is silent."""
    server, _ = endpoint
    status, content_type, text = await asyncio.to_thread(_get, f"{server.url}/metrics")
    assert status == 200
    assert content_type.startswith("text/plain; version=0.0.4")
    names = {name for name, _ in _parse(text)}
    missing = [name for name in EVERY_METRIC if name not in names]
    assert not missing, missing
    checked = await asyncio.to_thread(promtool_check_metrics, text)
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout == checked.stderr == ""
    assert (await asyncio.to_thread(_get, f"{server.url}/nothing"))[0] == 404


async def test_healthz_ok_then_stale() -> None:
    """/healthz answers 200 with the host counts while the heartbeat is fresh, and 503 once it is stale."""
    clock = [1000.0]
    state = MetricsState(clock=lambda: clock[0])
    state.set_hosts(["bigblack", "small"])
    state.observe_poll(PollResult("bigblack", NOW, 0.1, snapshot=Snapshot({}, ())), NOW)
    state.heartbeat()
    server = await start_metrics_server("127.0.0.1:0", state, stale_after=60)
    assert server is not None
    try:
        clock[0] += 59
        status, content_type, body = await asyncio.to_thread(_get, f"{server.url}/healthz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body) == {"status": "ok", "hosts": 2, "hosts_up": 1, "last_cycle_age_seconds": 59.0}
        clock[0] += 2
        status, _, body = await asyncio.to_thread(_get, f"{server.url}/healthz")
        assert status == 503
        assert json.loads(body)["status"] == "stale"
        state.heartbeat()
        assert (await asyncio.to_thread(_get, f"{server.url}/healthz"))[0] == 200
    finally:
        server.close()


async def test_listen_disabled_port_zero_and_address_in_use() -> None:
    """An empty listen disables it, port 0 reports its port, a taken port or a bad address is one line."""
    state = MetricsState()
    assert await start_metrics_server("", state) is None
    server = await start_metrics_server("127.0.0.1:0", state)
    assert server is not None
    try:
        assert server.port > 0
        with pytest.raises(MetricsError) as caught:
            await start_metrics_server(f"127.0.0.1:{server.port}", state)
        assert isinstance(caught.value, WatcherError)
        assert str(caught.value) == f"metrics.listen 127.0.0.1:{server.port}: address already in use"
        for bad in ("9925", "127.0.0.1:http", "127.0.0.1:70000", "::1:9925"):
            with pytest.raises(MetricsError, match=r"^metrics\.listen ") as caught:
                await start_metrics_server(bad, state)
            assert "\n" not in str(caught.value)
    finally:
        server.close()
    # close() released the port: the same address can be served again.
    again = await start_metrics_server(f"127.0.0.1:{server.port}", state)
    assert again is not None
    again.close()


async def test_scrapes_are_consistent_while_the_daemon_writes(snapshot: Snapshot) -> None:
    """Scrapes that race with writers always see whole groups (all eleven statuses) and never fail."""
    state = MetricsState()
    server = await start_metrics_server("127.0.0.1:0", state)
    assert server is not None
    empty = Snapshot({}, ())

    def scrape_many() -> int:
        complete = 0
        for _ in range(40):
            status, _, text = _get(f"{server.url}/metrics")
            assert status == 200
            samples = _parse(text)
            groups = {
                (dict(labels)["host"], dict(labels)["group"])
                for name, labels in samples
                if name == "pueue_tasks"
            }
            for host, group in groups:
                statuses = {
                    dict(labels)["status"]
                    for name, labels in samples
                    if name == "pueue_tasks"
                    and dict(labels)["host"] == host
                    and dict(labels)["group"] == group
                }
                assert statuses == set(COUNT_KEYS)
            complete += bool(groups)
        return complete

    try:
        scraper = asyncio.create_task(asyncio.to_thread(scrape_many))
        writes = 0
        while not scraper.done():
            # What the daemon does between scrapes: hosts come and go, polls replace whole queues.
            state.set_hosts(["bigblack", "small"])
            state.observe_poll(_ok("bigblack", snapshot), NOW)
            state.observe_poll(_ok("small", empty), NOW)
            state.set_hosts(["small"])
            state.observe_poll(_ok("small", snapshot), NOW)
            writes += 1
            await asyncio.sleep(0.001)
        assert await scraper > 0
        assert writes > 1
    finally:
        server.close()


@pytest.mark.integration
async def test_prometheus_scrapes_pueue_tasks(snapshot: Snapshot, tmp_path: Path) -> None:
    """A real Prometheus scrapes the endpoint and answers pueue_tasks{status="running"} per group."""
    state = MetricsState()
    state.set_hosts(["bigblack", "small"])
    state.observe_poll(_ok("bigblack", snapshot), NOW)
    state.observe_poll(_ok("small", snapshot), NOW)
    state.heartbeat()
    server = await start_metrics_server(f"127.0.0.1:{free_port()}", state)
    assert server is not None
    prometheus = PrometheusServer(tmp_path / "prometheus", [f"127.0.0.1:{server.port}"])
    try:
        await asyncio.to_thread(prometheus.start)
        up = await asyncio.to_thread(prometheus.wait_for, 'up{job="pueue-watcher"} == 1')
        assert up[0]["metric"]["instance"] == f"127.0.0.1:{server.port}"
        result = await asyncio.to_thread(prometheus.wait_for, 'pueue_tasks{status="running"}')
        running = {(r["metric"]["host"], r["metric"]["group"]): float(r["value"][1]) for r in result}
        assert running == {
            (host, group): counts.get("running", 0)
            for host in ("bigblack", "small")
            for group, counts in EXPECTED_COUNTS.items()
        }
        failed = await asyncio.to_thread(
            prometheus.query, 'sum by (group) (pueue_tasks{host="bigblack",status=~"failed|killed|errored"})'
        )
        assert {r["metric"]["group"]: float(r["value"][1]) for r in failed} == {
            "default": 1,
            "p1": 0,
            "btc-yearly": 2,
        }
    finally:
        await asyncio.to_thread(prometheus.stop)
        server.close()
