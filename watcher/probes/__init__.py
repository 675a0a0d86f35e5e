"""Host health probes, read in the same SSH round trip as each poll.

``proc`` turns the probe block (load, memory, swap counters, free disk where pueue keeps its state) into a
:class:`ProbeSample`; ``health`` turns samples into swap rates, breached limits (``ProbesConfig``),
reported changes and metric values. Both are pure: no I/O but :func:`read_tree`, which reads fixture trees.
"""

from __future__ import annotations

from watcher.errors import ProbeParseError
from watcher.probes.health import (
    KEYS,
    BreachTracker,
    Change,
    Rates,
    assessed,
    breaches,
    metrics,
    rates,
)
from watcher.probes.proc import (
    PROBE_SCRIPT,
    ProbeSample,
    parse_block,
    parse_df,
    parse_loadavg,
    parse_meminfo,
    parse_vmstat,
    read_tree,
)

__all__ = [
    "KEYS",
    "PROBE_SCRIPT",
    "BreachTracker",
    "Change",
    "ProbeParseError",
    "ProbeSample",
    "Rates",
    "assessed",
    "breaches",
    "metrics",
    "parse_block",
    "parse_df",
    "parse_loadavg",
    "parse_meminfo",
    "parse_vmstat",
    "rates",
    "read_tree",
]
