"""From probe samples to decisions: swap rates, the limits breached now, and which breaches to report.

A breach is reported once it has lasted ``breach_polls`` consecutive polls, and its recovery once, when it
clears (home-assistant's "log changes of state, not every repetition"). A limit whose inputs are unknown at a
poll (no MemAvailable, a garbled df, the first sample of swap counters) neither extends nor clears its breach.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Literal

from watcher.config import ProbesConfig
from watcher.probes.proc import ProbeSample

KEYS = ("load", "swap", "memory", "disk")


@dataclass(frozen=True, slots=True)
class Rates:
    """Pages swapped per second between two polls; None when two comparable samples are not at hand."""

    swap_in_per_second: float | None = None
    swap_out_per_second: float | None = None


def _rate(previous: int | None, current: int | None, seconds: float) -> float | None:
    # A counter that went down means the host rebooted (they count from boot): no rate for that interval.
    if previous is None or current is None or current < previous:
        return None
    return (current - previous) / seconds


def rates(previous: ProbeSample | None, current: ProbeSample, seconds: float) -> Rates:
    """Swap rates from the counter deltas of two samples taken ``seconds`` apart."""
    if previous is None or not math.isfinite(seconds) or seconds <= 0:
        return Rates()
    return Rates(
        swap_in_per_second=_rate(previous.swap_in_pages, current.swap_in_pages, seconds),
        swap_out_per_second=_rate(previous.swap_out_pages, current.swap_out_pages, seconds),
    )


def _swap(rates: Rates) -> float | None:
    known = [r for r in (rates.swap_in_per_second, rates.swap_out_per_second) if r is not None]
    return sum(known) if known else None


def _size(value: float) -> str:
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if abs(value) >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f} B"


def assessed(sample: ProbeSample, rates: Rates) -> frozenset[str]:
    """The limits whose inputs this sample (and these rates) hold; the others cannot be judged now."""
    if not sample.supported:
        return frozenset()
    known = {
        "load": sample.load1 is not None and sample.cpus is not None,
        "swap": _swap(rates) is not None,
        "memory": sample.mem_available is not None and bool(sample.mem_total),
        "disk": sample.disk_available is not None,
    }
    return frozenset(key for key, ok in known.items() if ok)


def breaches(sample: ProbeSample, rates: Rates, config: ProbesConfig) -> dict[str, str]:
    """The limits breached at this poll: {"load" | "swap" | "memory" | "disk": a one-line reason}."""
    found: dict[str, str] = {}
    if not sample.supported:
        return found
    load1, cpus = sample.load1, sample.cpus
    if load1 is not None and cpus is not None and load1 > config.max_load_per_cpu * cpus:
        found["load"] = f"load1 {load1:g} > {config.max_load_per_cpu:g} × {cpus} CPUs"
    swap = _swap(rates)
    if swap is not None and swap > config.max_swap_pages_per_second:
        found["swap"] = (
            f"swapping {swap:.3g} pages/s > {config.max_swap_pages_per_second:g}"
            f" (in {rates.swap_in_per_second or 0:.3g}, out {rates.swap_out_per_second or 0:.3g})"
        )
    if sample.mem_available is not None and sample.mem_total:
        ratio = sample.mem_available / sample.mem_total
        if ratio < config.min_memory_available_ratio:
            found["memory"] = (
                f"MemAvailable {_size(sample.mem_available)} is {ratio:.1%} of {_size(sample.mem_total)}"
                f" < {config.min_memory_available_ratio:.0%}"
            )
    if sample.disk_available is not None and sample.disk_available < config.min_disk_free_bytes:
        found["disk"] = f"disk {_size(sample.disk_available)} free < {_size(config.min_disk_free_bytes)}"
    return found


def metrics(sample: ProbeSample, rates: Rates) -> dict[str, float | None]:
    """Values for Prometheus gauges; None when unknown (the collector then skips the sample)."""
    return {
        "load1": sample.load1,
        "cpus": sample.cpus,
        "memory_available_bytes": sample.mem_available,
        "memory_total_bytes": sample.mem_total,
        # Counters since boot: Prometheus' rate() copes with the reset a reboot causes.
        "swap_in_pages_total": sample.swap_in_pages,
        "swap_out_pages_total": sample.swap_out_pages,
        "swap_in_pages_per_second": rates.swap_in_per_second,
        "swap_out_pages_per_second": rates.swap_out_per_second,
        "disk_available_bytes": sample.disk_available,
    }


@dataclass(frozen=True, slots=True)
class Change:
    """A breach to report (it lasted ``breach_polls`` polls), or its recovery; ``reason`` is the last one."""

    kind: Literal["breach", "recovered"]
    key: str
    reason: str


@dataclass(slots=True)
class _Streak:
    polls: int
    reason: str
    reported: bool = False


class BreachTracker:
    """Per host and limit, how many consecutive polls a breach has lasted, and whether it was reported."""

    def __init__(self, config: ProbesConfig) -> None:
        self._polls = config.breach_polls
        self._hosts: dict[str, dict[str, _Streak]] = {}

    def update(
        self, host: str, breaches: Mapping[str, str], assessed: Collection[str] | None = None
    ) -> list[Change]:
        """Count this poll's breaches; return what to report now.

        ``assessed`` names the limits this poll could judge (see :func:`assessed`); a streak of a limit
        not among them is left as it was. ``None`` means all of them, plus any key of ``breaches``.
        """
        streaks = self._hosts.setdefault(host, {})
        changes: list[Change] = []
        for key, reason in breaches.items():
            streak = streaks.setdefault(key, _Streak(0, reason))
            streak.polls += 1
            streak.reason = reason
            if not streak.reported and streak.polls >= self._polls:
                streak.reported = True
                changes.append(Change("breach", key, reason))
        for key in [k for k in streaks if k not in breaches and (assessed is None or k in assessed)]:
            streak = streaks.pop(key)
            if streak.reported:
                changes.append(Change("recovered", key, streak.reason))
        return changes

    def active(self, host: str) -> dict[str, str]:
        """The reported breaches of ``host`` that have not recovered: {key: last reason}."""
        return {k: s.reason for k, s in self._hosts.get(host, {}).items() if s.reported}

    def forget(self, host: str) -> None:
        """Drop the host's streaks (it left the configuration): no recovery is reported for it."""
        self._hosts.pop(host, None)
