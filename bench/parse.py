"""The 53,000-task, ~74 MB v4 state parsed as the watcher parses it, against the jq pipeline.

Ours: ``python -m bench.parse_once FILE`` (the parser alone in its own process: see that module), best of 5;
the parse time is measured inside it, the process's wall time and peak RSS by bench.common. Baseline: the jq
filter of bench/status_large.py over the same file, output discarded, best of 3. Both read a warm page cache.
"""

from __future__ import annotations

import json
import sys
from typing import Any

from bench.common import best_of, measure, save, table
from bench.status_large import JQ_FILTER, large_state

RUNS = 5
TARGETS = {"speedup_at_least": 10.0, "peak_rss_over_file_size_at_most": 1.5}


def run() -> dict[str, Any]:
    state = large_state() / "state.json"
    size = state.stat().st_size
    argv = [sys.executable, "-m", "bench.parse_once", str(state)]
    runs = [measure(argv) for _ in range(RUNS)]
    assert all(r.returncode == 0 for r in runs), runs[0]
    reports = [json.loads(r.stdout) for r in runs]
    best = min(range(RUNS), key=lambda i: reports[i]["parse_seconds"])
    ours, report = runs[best], reports[best]
    jq = best_of(3, ["sh", "-c", 'jq -r "$0" "$1" > /dev/null', JQ_FILTER, str(state)])
    assert jq.returncode == 0
    mb = size / 1e6
    figures = {
        "state_bytes": size,
        "tasks": report["tasks"],
        "ours": report | {"process": ours.row(), "mb_per_second": mb / report["parse_seconds"]},
        "baseline_jq": jq.row() | {"mb_per_second": mb / jq.wall_seconds},
        "speedup_parse": jq.wall_seconds / report["parse_seconds"],
        "speedup_process": jq.wall_seconds / ours.wall_seconds,
        "peak_rss_over_file_size": ours.peak_rss_bytes / size,
        "parse_rss_over_file_size": (ours.peak_rss_bytes - report["rss_before_bytes"]) / size,
        "targets": TARGETS,
    }
    print(f"state file: {mb:.1f} MB, {report['tasks']} tasks; best of {RUNS} (ours) and 3 (jq)")
    rows = [("", "wall s", "MB/s", "peak RSS MB", "peak RSS / file")]
    rows.append(("ours: the parse (decode + snapshot)", f"{report['parse_seconds']:.3f}",
                 f"{mb / report['parse_seconds']:.0f}", "", ""))  # fmt: skip
    ratio = figures["peak_rss_over_file_size"]
    rows.append(("ours: the whole process", f"{ours.wall_seconds:.3f}", f"{mb / ours.wall_seconds:.0f}",
                 f"{ours.peak_rss_bytes / 1e6:.1f}", f"{ratio:.2f}"))  # fmt: skip
    rows.append(("jq -r FILTER > /dev/null", f"{jq.wall_seconds:.3f}", f"{mb / jq.wall_seconds:.0f}",
                 f"{jq.peak_rss_bytes / 1e6:.1f}", f"{jq.peak_rss_bytes / size:.2f}"))  # fmt: skip
    print(table(rows))
    print(f"speed-up: {figures['speedup_parse']:.1f}x the parse, {figures['speedup_process']:.1f}x the whole "
          f"process (target >= {TARGETS['speedup_at_least']:g}x)")  # fmt: skip
    print(f"peak RSS: {figures['peak_rss_over_file_size']:.2f}x the file for the whole process "
          f"(interpreter and msgspec: {report['rss_before_bytes'] / 1e6:.1f} MB), "
          f"{figures['parse_rss_over_file_size']:.2f}x for the parse itself "
          f"(target <= {TARGETS['peak_rss_over_file_size_at_most']:g}x)")  # fmt: skip
    print(f"results: {save('parse', figures)}")
    return figures
