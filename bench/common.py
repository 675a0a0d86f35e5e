"""Measuring helpers: wall time, CPU time and peak RSS of a child process, and the result files."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
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


def measure(argv: Sequence[str], env: Mapping[str, str] | None = None, cwd: Path | None = None) -> Run:
    """Run ``argv`` once; wait4() gives the child's own peak RSS (its waited-for children included)."""
    started = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, cwd=cwd)
    stdout = proc.stdout.read() if proc.stdout else b""
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    return Run(
        wall_seconds=wall,
        cpu_seconds=usage.ru_utime + usage.ru_stime,
        peak_rss_bytes=usage.ru_maxrss * 1024,
        returncode=proc.returncode,
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
