"""How long the event loop was kept from running: the measure of "no unbounded work on the event loop".

Every host's polls, the alert workers and the watchdog share one event loop, so a single call that holds it
(a large parse that should have gone to a thread, a flood of text split in place) delays all of them. The
probe sleeps :data:`TICK` at a time and measures how late each wake-up is: a wake-up late by ``x`` means that
something held the loop for about ``x``. It exports the worst lateness since the start and within the last
:data:`WINDOW`, and logs a stall of a second or more (``loop.stalled``), so that the cause can be found in the
log lines around it. It costs :data:`TICK`'s worth of wake-ups a second and nothing else.
"""

from __future__ import annotations

import asyncio
import faulthandler
import os
import sys
import time
from collections import deque

import structlog

log = structlog.get_logger("watcher.loop")

TICK = 0.05  # seconds between two wake-ups
WINDOW = 60.0  # seconds of the recent maximum
LOGGED = 1.0  # a stall this long (seconds) is logged


class LoopLag:
    """The loop-lag probe; :meth:`run` until stopped. Scrapes (other threads) read the two floats only."""

    def __init__(self) -> None:
        self.max_seconds = 0.0  # the worst lag since the start
        self.recent_seconds = 0.0  # the worst lag within the last WINDOW, as of the last wake-up
        self._recent: deque[tuple[float, float]] = deque()  # (when, lag), lags in decreasing order

    def observe(self, lag: float, now: float) -> None:
        """One wake-up, ``lag`` seconds late, at ``now`` (monotonic)."""
        self.max_seconds = max(self.max_seconds, lag)
        # A monotonic deque of maxima: a lag that a later, larger one outlives can never be the answer again.
        while self._recent and self._recent[-1][1] <= lag:
            self._recent.pop()
        self._recent.append((now, lag))
        while self._recent[0][0] < now - WINDOW:
            self._recent.popleft()
        self.recent_seconds = self._recent[0][1]
        if lag >= LOGGED:
            log.warning("loop.stalled", seconds=round(lag, 3))

    async def run(self, stop: asyncio.Event) -> None:
        trace = _trace_after()
        while not stop.is_set():
            before = time.monotonic()
            if trace:
                faulthandler.dump_traceback_later(TICK + trace, file=sys.stderr)
            await asyncio.sleep(TICK)
            if trace:
                faulthandler.cancel_dump_traceback_later()
            now = time.monotonic()
            self.observe(max(0.0, now - before - TICK), now)


def _trace_after() -> float:
    """``PUEUE_WATCHER_STALL_TRACE=SECONDS``: a developer's aid that prints every thread's stack to stderr
    when the loop is held that long. It works from a C thread, so it sees a stall caused by a thread that
    holds the GIL too. 0 or unset: off."""
    try:
        return max(0.0, float(os.environ.get("PUEUE_WATCHER_STALL_TRACE", "0")))
    except ValueError:
        return 0.0
