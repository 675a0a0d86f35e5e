"""``pueue-watcher run``: the long-running loop.

Each cycle polls every host concurrently and logs one summary line. A host's failure is logged when it
starts and when it ends, not at every cycle. SIGTERM and SIGINT stop the loop: the cycle in flight may finish
within the grace period, then it is cancelled, and the exit is logged as ``stopped`` (or ``crashed``).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time

import structlog

from watcher.config import Settings
from watcher.fleet import Fleet
from watcher.poll.poller import PollResult

log = structlog.get_logger("watcher")

GRACE_SECONDS = 10.0


async def run_daemon(settings: Settings) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    fleet = Fleet(settings)
    down: set[str] = set()
    log.info("started", hosts=len(fleet.pollers), poll_interval=settings.watcher.poll_interval)
    try:
        while not stop.is_set():
            started = time.monotonic()
            cycle = asyncio.create_task(fleet.poll(), name="poll-cycle")
            done, _ = await asyncio.wait(
                {cycle, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
            )
            if cycle not in done:
                await _drain(cycle)
                break
            _report(cycle.result(), down, time.monotonic() - started)
            remaining = settings.watcher.poll_interval - (time.monotonic() - started)
            if remaining > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), remaining)
    except Exception:
        log.exception("crashed")
        return 1
    finally:
        await fleet.close()
    log.info("stopped")
    return 0


async def _drain(cycle: asyncio.Task[list[PollResult]]) -> None:
    """Let the cycle in flight finish within the grace period, then cancel it."""
    try:
        await asyncio.wait_for(asyncio.shield(cycle), GRACE_SECONDS)
    except TimeoutError:
        cycle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await cycle


def _report(results: list[PollResult], down: set[str], elapsed: float) -> None:
    for result in results:
        if not result.ok and result.host not in down:
            down.add(result.host)
            log.warning("host.failing", host=result.host, reason=result.reason, error=result.error)
        elif result.ok and result.host in down:
            down.discard(result.host)
            log.info("host.recovered", host=result.host)
    log.info(
        "cycle",
        hosts=len(results),
        ok=sum(r.ok for r in results),
        failed=sum(not r.ok for r in results),
        unchanged=sum(r.source == "unchanged" for r in results),
        wire_bytes=sum(r.wire_bytes for r in results),
        seconds=round(elapsed, 3),
    )
