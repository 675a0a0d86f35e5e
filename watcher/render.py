"""Output of ``pueue-watcher status``: the ``--json`` contract and the human table.

Group names and errors come from remote hosts, so the table strips control characters (ANSI escapes could
repaint the operator's terminal) and clips long values.
"""

from __future__ import annotations

import unicodedata
from datetime import datetime
from typing import Any, TextIO

from watcher.poll.poller import PollResult
from watcher.progress import GroupProgress, progress

BAR_WIDTH = 20


def status_document(results: list[PollResult], now: datetime) -> dict[str, Any]:
    """``{"hosts": [{"name", "ok", "error", "state_file_bytes", "groups": [...]}]}``."""
    hosts = []
    for result in results:
        groups = progress(result.snapshot, now) if result.snapshot is not None else []
        hosts.append(
            {
                "name": result.host,
                "ok": result.ok,
                "error": result.error,
                "state_file_bytes": result.state_file_bytes,
                "probes": _probes(result),
                "groups": [
                    {
                        "name": g.name,
                        "status": g.status,
                        "parallel": g.parallel,
                        "tasks": g.counts,
                        "remaining": g.remaining,
                        "eta_seconds": None if g.eta_seconds is None else round(g.eta_seconds, 1),
                    }
                    for g in groups
                ],
            }
        )
    return {"hosts": hosts}


def _probes(result: PollResult) -> dict[str, Any] | None:
    sample = result.probes
    if sample is None:
        return None
    if not sample.supported:
        return {"supported": False, "system": sample.system}
    return {
        "supported": True,
        "cpus": sample.cpus,
        "load1": sample.load1,
        "memory_available_bytes": sample.mem_available,
        "memory_total_bytes": sample.mem_total,
        "swap_in_pages_total": sample.swap_in_pages,
        "swap_out_pages_total": sample.swap_out_pages,
        "disk_available_bytes": sample.disk_available,
    }


def status_table(results: list[PollResult], now: datetime) -> str:
    blocks = [host_block(result, now) for result in results]
    return "\n\n".join(blocks) + "\n"


def host_block(result: PollResult, now: datetime) -> str:
    """One host's part of the table: its groups, its state file, its error."""
    title = f"{clean(result.host)}  " + ("ok" if result.ok else "UNREACHABLE")
    lines = [title]
    if result.snapshot is not None:
        groups = progress(result.snapshot, now)
        header = ("GROUP", "STATUS", "PAR", "PROGRESS", "RUN", "QUEUED", "FAILED", "ETA")
        rows = [header] + [_row(g) for g in groups]
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        right = {2, 4, 5, 6, 7}
        for row in rows:
            cells = [
                c.rjust(w) if i in right else c.ljust(w)
                for i, (c, w) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append("  " + "  ".join(cells).rstrip())
        if not groups:
            lines.append("  (no watched groups)")
    if result.state_file_bytes is not None:
        lines.append(f"  state file: {human_bytes(result.state_file_bytes)}")
    if result.error:
        lines.append(f"  error: {clean(result.error, 300)}")
    return "\n".join(lines)


def _row(g: GroupProgress) -> tuple[str, ...]:
    return (
        clean(g.name, 40),
        clean(g.status, 12),  # pueue's JSON says "Running" or "Paused", but nothing makes a host say so
        str(g.parallel) if g.parallel else "∞",
        f"{bar(g.finished, g.total)} {g.finished}/{g.total}",
        str(g.counts["running"]),
        str(g.counts["queued"]),
        str(g.failed),
        "-" if g.eta_seconds is None else human_duration(g.eta_seconds),
    )


def bar(done: int, total: int, width: int = BAR_WIDTH) -> str:
    filled = round(width * done / total) if total else 0
    return "[" + "#" * filled + "." * (width - filled) + "]"


def human_bytes(size: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if size < 1000 or unit == "GB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    raise AssertionError("unreachable")


def human_duration(seconds: float) -> str:
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d{hours:02d}h"
    if hours:
        return f"{hours}h{minutes:02d}m"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


def clean(text: str, limit: int = 64) -> str:
    """Printable characters only (no ANSI escapes, no newlines, no line or paragraph separator), clipped to
    ``limit``."""
    text = text if len(text) <= limit else text[: limit - 1] + "…"
    return "".join("?" if unicodedata.category(ch)[0] == "C" or ch in "\u2028\u2029" else ch for ch in text)


class WaitingLine:
    """On a terminal, one line naming the hosts whose answer is not in yet, rewritten as they come in
    (``status``): a host that hangs is seen hanging, not as a blank screen."""

    def __init__(self, hosts: list[str], stream: TextIO, *, enabled: bool) -> None:
        self.pending = list(hosts)
        self.stream = stream
        self.enabled = enabled
        self._shown = False
        self._show()

    def waiting_for(self, done: str) -> None:
        self.pending.remove(done)
        self._show()

    def clear(self) -> None:
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False

    def _show(self) -> None:
        if self.enabled and self.pending:
            more = len(self.pending) - 5
            names = ", ".join(self.pending[:5]) + (f" and {more} more" if more > 0 else "")
            self.stream.write(f"\r\x1b[Kwaiting for {len(self.pending)}: {names}")
            self.stream.flush()
            self._shown = True
