"""The Prometheus collector: metric families computed from :class:`MetricsState` at scrape time.

Names follow Prometheus practice: base units (seconds, bytes), ``_total`` on counters, and labels that stay
few (host, group, status, check, outcome, reason, sink): never a task id, a label or a command.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, fields

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from watcher import __version__
from watcher.metrics.loop_lag import LoopLag
from watcher.metrics.state import PHASE_OUTCOMES, POLL_DURATION_BUCKETS, MetricsState, StateView
from watcher.pueue.model import COUNT_KEYS
from watcher.sanitize import label

# Probe values (keys of watcher.probes.health.metrics()) exported per host. The per-second swap rates are
# left out on purpose: rate() over the two counters gives them, over any window.
_PROBE_GAUGES = {
    "load1": ("pueue_host_load1", "The host's 1-minute load average."),
    "cpus": ("pueue_host_cpus", "The host's online CPUs."),
    "memory_available_bytes": ("pueue_host_memory_available_bytes", "MemAvailable of the host."),
    "memory_total_bytes": ("pueue_host_memory_total_bytes", "MemTotal of the host."),
    "disk_available_bytes": (
        "pueue_host_disk_available_bytes",
        "Free space available to users on the filesystem of pueue's directory.",
    ),
}
_PROBE_COUNTERS = {
    "swap_in_pages_total": ("pueue_host_swap_in_pages", "Pages swapped in since the host booted (pswpin)."),
    "swap_out_pages_total": (
        "pueue_host_swap_out_pages",
        "Pages swapped out since the host booted (pswpout).",
    ),
}

# The `le` labels as the Go client writes them ("0.01", "1.0", "60.0").
_BUCKET_LABELS = tuple(repr(float(b)) for b in POLL_DURATION_BUCKETS)


def _gauge(name: str, doc: str, *labels: str) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=labels)


def _counter(name: str, doc: str, *labels: str) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, labels=labels)


@dataclass(slots=True)
class _Families:
    """Every family the collector yields, empty; :func:`_families` builds a fresh set per scrape."""

    tasks: GaugeMetricFamily
    parallel: GaugeMetricFamily
    paused: GaugeMetricFamily
    remaining: GaugeMetricFamily
    eta: GaugeMetricFamily
    completions: CounterMetricFamily
    last_completion: GaugeMetricFamily
    state_file: GaugeMetricFamily
    cleans: CounterMetricFamily
    up: GaugeMetricFamily
    last_success: GaugeMetricFamily
    durations: HistogramMetricFamily
    failures: CounterMetricFamily
    check_status: GaugeMetricFamily
    check_violations: GaugeMetricFamily
    probe_gauges: dict[str, GaugeMetricFamily]
    probe_counters: dict[str, CounterMetricFamily]
    outbox: GaugeMetricFamily
    delivery_failures: CounterMetricFamily
    heartbeat: GaugeMetricFamily
    dropped: GaugeMetricFamily
    loop_lag: GaugeMetricFamily
    loop_lag_max: GaugeMetricFamily
    build_info: GaugeMetricFamily

    def __iter__(self) -> Iterator[Metric]:
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                yield from value.values()
            else:
                yield value


def _families() -> _Families:
    return _Families(
        tasks=_gauge(
            "pueue_tasks",
            "Tasks of the group by status (a Done task by its result).",
            "host",
            "group",
            "status",
        ),
        parallel=_gauge(
            "pueue_group_parallel_tasks", "The group's parallel limit (0: unlimited).", "host", "group"
        ),
        paused=_gauge("pueue_group_paused", "1 when the group is paused, else 0.", "host", "group"),
        remaining=_gauge(
            "pueue_group_remaining_tasks",
            "Tasks of the group not finished yet (queued, stashed, running, paused, locked).",
            "host",
            "group",
        ),
        eta=_gauge(
            "pueue_group_eta_seconds",
            "Estimated seconds until the group finishes, from its recent completion rate; absent if unknown.",
            "host",
            "group",
        ),
        completions=_counter(
            "pueue_phase_completions_total",
            "Phases of the group seen completing, by outcome.",
            "host",
            "group",
            "outcome",
        ),
        last_completion=_gauge(
            "pueue_phase_last_completion_timestamp_seconds",
            "When the group's last phase was seen complete (Unix time).",
            "host",
            "group",
        ),
        state_file=_gauge("pueue_state_file_bytes", "Size of pueue's state file on the host.", "host"),
        cleans=_counter("pueue_state_cleans_total", "pueue clean runs on the host by the watcher.", "host"),
        up=_gauge("pueue_watcher_host_up", "1 when the host's last poll succeeded, else 0.", "host"),
        last_success=_gauge(
            "pueue_watcher_last_success_timestamp_seconds",
            "When the host was last polled successfully (Unix time): the age of its other gauges.",
            "host",
        ),
        durations=HistogramMetricFamily(
            "pueue_watcher_poll_duration_seconds",
            "Duration of one poll of the host, failed ones included.",
            labels=["host"],
        ),
        failures=_counter(
            "pueue_watcher_poll_failures_total", "Failed polls of the host, by reason.", "host", "reason"
        ),
        check_status=_gauge(
            "pueue_check_status",
            "The check's last result after a phase of the group: 0 ok, 1 warn, 2 fail, 3 error.",
            "host",
            "group",
            "check",
        ),
        check_violations=_gauge(
            "pueue_check_violations",
            "Violations the check counted at its last run; absent when it could not count.",
            "host",
            "group",
            "check",
        ),
        probe_gauges={key: _gauge(name, doc, "host") for key, (name, doc) in _PROBE_GAUGES.items()},
        probe_counters={key: _counter(name, doc, "host") for key, (name, doc) in _PROBE_COUNTERS.items()},
        outbox=_gauge("pueue_watcher_outbox_events", "Committed events not delivered yet."),
        delivery_failures=_counter(
            "pueue_watcher_delivery_failures_total", "Failed event deliveries, by sink.", "sink"
        ),
        heartbeat=_gauge(
            "pueue_watcher_last_heartbeat_timestamp_seconds",
            "When the daemon's loop last reported itself alive (Unix time).",
        ),
        dropped=_gauge(
            "pueue_watcher_groups_dropped",
            "Groups of the host that the per-host limits left out at its last poll: by count (over "
            "watcher.max_groups) and by name length (over watcher.max_group_name).",
            "host",
            "reason",
        ),
        loop_lag=_gauge(
            "pueue_watcher_event_loop_lag_seconds",
            "The longest the daemon's event loop was held in the last minute (a late wake-up of its probe).",
        ),
        loop_lag_max=_gauge(
            "pueue_watcher_event_loop_lag_max_seconds",
            "The longest the daemon's event loop was held since the start.",
        ),
        build_info=_gauge("pueue_watcher_build_info", "Always 1; the version of pueue-watcher.", "version"),
    )


def _fill(f: _Families, view: StateView, lag: LoopLag) -> None:
    for host in view.hosts.values():
        h = host.name
        for group in host.groups:
            g = label(group.name)
            for status in COUNT_KEYS:
                f.tasks.add_metric([h, g, status], group.counts.get(status, 0))
            f.parallel.add_metric([h, g], group.parallel)
            f.paused.add_metric([h, g], 1 if group.status == "Paused" else 0)
            f.remaining.add_metric([h, g], group.remaining)
            if group.eta_seconds is not None:
                f.eta.add_metric([h, g], group.eta_seconds)
        # Every group in view starts at 0 per outcome, so that increase() sees the first completion.
        completions = {(g.name, o): 0 for g in host.groups for o in PHASE_OUTCOMES} | dict(host.completions)
        for (g, outcome), count in sorted(completions.items()):
            f.completions.add_metric([h, label(g), outcome], count)
        for g, at in sorted(host.last_completion_at.items()):
            f.last_completion.add_metric([h, label(g)], at)
        if host.dropped is not None:
            f.dropped.add_metric([h, "count"], host.dropped.over_count)
            f.dropped.add_metric([h, "name_length"], host.dropped.long_names)
        if host.state_file_bytes is not None:
            f.state_file.add_metric([h], host.state_file_bytes)
        f.cleans.add_metric([h], host.cleans)
        if host.up is not None:
            f.up.add_metric([h], 1 if host.up else 0)
        if host.last_success_at is not None:
            f.last_success.add_metric([h], host.last_success_at)
        d = host.durations
        buckets = list(zip(_BUCKET_LABELS, d.cumulative, strict=True))
        f.durations.add_metric([h], [*buckets, ("+Inf", d.count)], sum_value=d.total)
        for reason, count in sorted(host.failures.items()):
            f.failures.add_metric([h, reason], count)
        for (g, check), value in sorted(host.checks.items()):
            f.check_status.add_metric([h, label(g), check], value.code)
            if value.violations is not None:
                f.check_violations.add_metric([h, label(g), check], value.violations)
        for key, family in f.probe_gauges.items():
            if (probe := host.probes.get(key)) is not None:
                family.add_metric([h], probe)
        for key, counter in f.probe_counters.items():
            if (probe := host.probes.get(key)) is not None:
                counter.add_metric([h], probe)
    if view.outbox_depth is not None:
        f.outbox.add_metric([], view.outbox_depth)
    for sink, count in sorted(view.delivery_failures.items()):
        f.delivery_failures.add_metric([sink], count)
    if view.heartbeat_at is not None:
        f.heartbeat.add_metric([], view.heartbeat_at)
    f.loop_lag.add_metric([], lag.recent_seconds)
    f.loop_lag_max.add_metric([], lag.max_seconds)
    f.build_info.add_metric([__version__], 1)


class WatcherCollector:
    """Yields the watcher's metric families from one :meth:`MetricsState.view` per scrape."""

    def __init__(self, state: MetricsState) -> None:
        self._state = state

    def describe(self) -> Iterator[Metric]:
        """The families without samples: the registry checks names without a full collect."""
        return iter(_families())

    def collect(self) -> Iterator[Metric]:
        families = _families()
        _fill(families, self._state.view(), self._state.loop_lag)
        return iter(families)


def build_registry(state: MetricsState) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one): the watcher's metrics, plus the process
    (``process_*``), Python platform (``python_info``) and garbage collector (``python_gc_*``) metrics."""
    registry = CollectorRegistry()
    registry.register(WatcherCollector(state))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
