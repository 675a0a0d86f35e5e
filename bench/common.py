"""Measuring helpers: wall time, CPU time and peak RSS of a child process, and the result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
DATA = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True)
class Run:
    wall_seconds: float
    cpu_seconds: float
    peak_rss_bytes: int
    returncode: int
    stdout: bytes

    def row(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("stdout")
        return data


# Linux carries a process's peak RSS across fork and exec: a child forked from this (large) Python process
# would report our peak as its own. So a tiny launcher does the fork, and reports the child's wait4() figures
# (peak RSS of the child and its waited-for descendants, CPU time, wall time) on file descriptor 3.
_LAUNCHER = """
import os, sys, time
report = int(sys.argv[1])
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    os.close(report)
    os.execvp(sys.argv[2], sys.argv[2:])
_, status, ru = os.wait4(pid, 0)
wall = time.perf_counter() - t
code = os.waitstatus_to_exitcode(status)
os.write(report, f"{code} {wall} {ru.ru_utime + ru.ru_stime} {ru.ru_maxrss}".encode())
"""


def measure(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``argv`` once and return its wall time, CPU time and peak RSS."""
    read_end, write_end = os.pipe()
    try:
        proc = subprocess.Popen(
            [sys.executable, "-S", "-c", _LAUNCHER, str(write_end), *argv],
            stdout=subprocess.PIPE, env=env, cwd=cwd, pass_fds=(write_end,),
        )  # fmt: skip
    finally:
        os.close(write_end)
    stdout = proc.stdout.read() if proc.stdout else b""
    proc.wait()
    with os.fdopen(read_end, "rb") as report:
        code, wall, cpu, rss_kb = report.read().split()
    return Run(
        wall_seconds=float(wall),
        cpu_seconds=float(cpu),
        peak_rss_bytes=int(rss_kb) * 1024,
        returncode=int(code),
        stdout=stdout,
    )


def best_of(n: int, argv: Sequence[str], **kwargs: Any) -> Run:
    """The fastest of ``n`` runs (the least disturbed by the rest of the machine)."""
    runs = [measure(argv, **kwargs) for _ in range(n)]
    return min(runs, key=lambda r: r.wall_seconds)


def save(name: str, figures: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    document = {
        "scenario": name,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "figures": figures,
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    return path


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def fake_pueued(directory: Path) -> subprocess.Popen[bytes]:
    """A live process named ``pueued`` (a copy of sleep): what the poll script accepts as the daemon of a
    pueue directory laid out by hand (it checks /proc/PID/comm; any other process reads as "down")."""
    import shutil

    directory.mkdir(parents=True, exist_ok=True)
    binary = directory / "pueued"
    shutil.copy(shutil.which("sleep") or "/bin/sleep", binary)
    return subprocess.Popen([binary, "3600"])
