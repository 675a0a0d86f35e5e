"""A 53,000-task, ~76 MB v4 state: ``pueue-watcher status --json`` (local transport) against the jq baseline.

The baseline is the shell loop users run today, on the same state file:
``jq -r '.tasks | to_entries[] | "\\(id)|\\(status)|\\(label)|\\(group)"'`` into a file, then one ``grep``
per group to decide whether it still holds unfinished tasks.

The host's pueue daemon is represented by a live process whose pid is in ``pueue.pid``: the watcher reads the
state file directly while the daemon is alive, so the daemon itself plays no part in the figure.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from bench.common import DATA, best_of, fake_pueued, save, table

N_TASKS = 53_000
N_GROUPS = 40
JQ_FILTER = (
    r'.tasks | to_entries[] | "\(.value.id)|\(.value.status | if type == "object" then keys[0] else . end)'
    r'|\(.value.label // "-")|\(.value.group)"'
)
UNFINISHED = "Queued|Stashed|Running|Paused|Locked"


def large_state(flavor: str = "v4") -> Path:
    """The generated state directory (cached under bench/data/)."""
    from tests.pueue_sim.scenario import generate_state

    directory = DATA / f"large-{flavor}-{N_TASKS}" / "pueue"
    state = directory / "state.json"
    if not state.exists():
        directory.mkdir(parents=True, exist_ok=True)
        generate_state(state, flavor, N_TASKS, N_GROUPS, seed=1)
    return directory


def baseline_script(state: Path, groups: list[str]) -> str:
    lines = state.parent / "baseline.lines"
    checks = " ".join(shlex.quote(g) for g in groups)
    return (
        f"jq -r {shlex.quote(JQ_FILTER)} {shlex.quote(str(state))} > {shlex.quote(str(lines))}\n"
        f"for g in {checks}; do\n"
        f'  if grep -qE "^[0-9]+\\|({UNFINISHED})\\|.*\\|$g\\$" {shlex.quote(str(lines))}; '
        'then echo "$g active"; else echo "$g complete"; fi\n'
        "done\n"
    )


def run() -> dict[str, Any]:
    directory = large_state()
    state = directory / "state.json"
    size = state.stat().st_size
    daemon = fake_pueued(directory.parent / "fake-pueued")
    (directory / "pueue.pid").write_text(str(daemon.pid))
    try:
        config = directory.parent / "bench.toml"
        config.write_text(
            f'[[hosts]]\nname = "large"\ntransport = "local"\npueue = "pueue"\npueue_dir = "{directory}"\n'
        )
        watcher = [sys.executable, "-m", "watcher", "status", "--json", "-c", str(config)]
        ours = best_of(5, watcher)
        assert ours.returncode == 0, ours.stdout[:500]
        document = json.loads(ours.stdout)
        groups = document["hosts"][0]["groups"]
        names = [g["name"] for g in groups]
        base = best_of(3, ["sh", "-c", baseline_script(state, names)])
        assert base.returncode == 0
    finally:
        daemon.kill()
        daemon.wait()
        (directory / "pueue.pid").unlink(missing_ok=True)

    # Both must reach the same verdict per group.
    ours_complete = {g["name"] for g in groups if not sum(g["tasks"][k] for k in _unfinished_keys())}
    base_complete = {ln.split()[0] for ln in base.stdout.decode().splitlines() if ln.endswith(" complete")}
    assert ours_complete == base_complete, ours_complete ^ base_complete

    mb = size / 1e6
    figures = {
        "state_bytes": size,
        "tasks": N_TASKS,
        "groups": N_GROUPS,
        "watcher": ours.row() | {"mb_per_second": mb / ours.wall_seconds},
        "baseline_jq": base.row() | {"mb_per_second": mb / base.wall_seconds},
        "speedup": base.wall_seconds / ours.wall_seconds,
        "watcher_rss_over_file_size": ours.peak_rss_bytes / size,
        "targets": {"speedup_at_least": 5, "rss_over_file_size_at_most": 2},
    }
    print(f"state file: {mb:.1f} MB, {N_TASKS} tasks, {N_GROUPS} groups ({os.cpu_count()} cores)")
    rows = [("", "wall s", "cpu s", "peak RSS MB", "MB/s")]
    for name, run_ in (("pueue-watcher status --json", ours), ("jq + grep per group", base)):
        rows.append((name, f"{run_.wall_seconds:.2f}", f"{run_.cpu_seconds:.2f}",
                     f"{run_.peak_rss_bytes / 1e6:.0f}", f"{mb / run_.wall_seconds:.0f}"))  # fmt: skip
    print(table(rows))
    print(f"speed-up {figures['speedup']:.1f}x (target >= 5x); "
          f"peak RSS {figures['watcher_rss_over_file_size']:.2f}x the file (target <= 2x)")  # fmt: skip
    print(f"results: {save('status_large', figures)}")
    return figures


def _unfinished_keys() -> tuple[str, ...]:
    return ("queued", "stashed", "running", "paused", "locked")
