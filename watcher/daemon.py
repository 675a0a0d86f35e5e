"""``pueue-watcher run`` and ``once``: the lifecycle around the per-host cycles.

Each host has its own loop (``watcher/watch.py`` does one cycle), so a slow or dead host only ever delays
itself; ``max_concurrency`` caps how many polls run at once, and each poll has its own timeout. One summary
line is logged per ``poll_interval``. A host's failure is logged when it starts and when it ends, not at every
poll.

SIGTERM and SIGINT stop the loops from starting new cycles; cycles in flight may finish within
``grace_period`` and are then cancelled. A host's clean (hygiene) runs beside its loop; one in flight at
shutdown may finish within the same grace period, then its client is stopped (pueued finishes a clean it has
received) and it is recorded as partial. A commit already handed to the store thread completes or rolls back
as a whole, and the store is closed (flushed) before the exit, which is logged as ``stopped`` (or
``crashed``).

A watcher with no host to watch (none configured, or none in its shard) says so once at start, then runs
as usual (metrics, delivery of what an earlier run left) and stops cleanly: an idle shard is not a fault.
Only one ``run`` or ``once`` may use a state store at a time (``watcher/store/lock.py``).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import signal
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import structlog

from watcher import __version__
from watcher.clickhouse_handles import ClickHouseHandles
from watcher.config import HostConfig, Settings
from watcher.errors import HostError
from watcher.hygiene import Hygiene
from watcher.metrics import MetricsError, MetricsState, start_metrics_server
from watcher.no_hosts import no_hosts
from watcher.outbox import Outbox
from watcher.poll.poller import HostPoller
from watcher.probes.health import BreachTracker
from watcher.runtime import Runtime
from watcher.sdnotify import notify, watchdog_interval
from watcher.store import Store
from watcher.transport import Transport, open_transport
from watcher.watch import CycleOutcome, HostWatch

log = structlog.get_logger("watcher")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2
#: A long poll that fails sooner than this (seconds) failed at the asking, not during its wait.
LONG_POLL_FAILED_AT_ONCE = 1.0
SWITCH_INTERVAL = 0.001  # seconds a thread may hold the GIL while another waits for it (CPython: 0.005)


@dataclass(slots=True)
class _Stats:
    """What happened since the last summary line."""

    counts: Counter[str] = field(default_factory=Counter)
    down: set[str] = field(default_factory=set)

    def add(self, outcome: CycleOutcome) -> None:
        result = outcome.result
        self.counts["polls"] += 1
        self.counts["ok" if result.ok else "failed"] += 1
        self.counts["unchanged"] += result.source == "unchanged"
        self.counts["events"] += len(outcome.events)
        self.counts["wire_bytes"] += result.wire_bytes
        if not result.ok and result.host not in self.down:
            self.down.add(result.host)
            log.warning("host.failing", host=result.host, reason=result.reason, error=result.error)
        elif result.ok and result.host in self.down:
            self.down.discard(result.host)
            log.info("host.recovered", host=result.host)

    def summary(self) -> dict[str, int]:
        counts = {
            k: self.counts.get(k, 0) for k in ("polls", "ok", "failed", "unchanged", "events", "wire_bytes")
        }
        self.counts.clear()
        return counts | {"hosts_failing": len(self.down)}


class Daemon:
    """The hosts' loops, their outbox and metrics. ``run`` and ``once`` give it the transports and ClickHouse
    handles of their :class:`~watcher.runtime.Runtime`; without them (a test) it makes its own. :meth:`close`
    closes the outbox, the handles and the hosts' transports, in that order, but never the store."""

    def __init__(
        self,
        settings: Settings,
        store: Store,
        hosts: Sequence[HostConfig] | None = None,
        shard: str | None = None,
        *,
        transports: Mapping[str, Transport] | None = None,
        clickhouse: ClickHouseHandles | None = None,
    ) -> None:
        chosen = settings.hosts if hosts is None else hosts
        if transports is None:
            transports = {host.name: open_transport(host, settings.watcher) for host in chosen}
        self.settings = settings
        self.shard = shard  # the command line's --shard, for the no_hosts warning
        self.config_path: str | None = None  # the file the settings came from, for the started line
        self.store = store
        self.metrics = MetricsState()
        self.outbox = Outbox(store, settings.alerts, self.metrics)
        hygiene = Hygiene(settings.hygiene)
        self._transports = transports
        self.clickhouse = ClickHouseHandles(settings, transports) if clickhouse is None else clickhouse
        self.breaches = BreachTracker(settings.probes)
        self.watches = [self._watch(host, hygiene) for host in chosen]
        self._slots = asyncio.Semaphore(settings.watcher.max_concurrency)
        self.metrics.set_hosts([w.host.name for w in self.watches])
        self._stats = _Stats()

    def _watch(self, host: HostConfig, hygiene: Hygiene) -> HostWatch:
        watcher = self.settings.watcher
        poller = HostPoller.configured(host, self._transports[host.name], watcher)
        return HostWatch(
            host, poller, self.store, self.settings, hygiene, self.clickhouse, self.breaches, self.metrics
        )

    async def once(self) -> list[CycleOutcome]:
        """One cycle of every host, with every side effect; then one delivery round per sink.

        A clean that a cycle starts is waited for (within ``hygiene.timeout``), and the host is then polled
        once more, without planning another clean, so that what the clean removed is recorded and stepped
        through before ``once`` exits; that cycle's outcome is merged into the host's."""
        stop = asyncio.Event()
        lag = asyncio.create_task(self.metrics.loop_lag.run(stop), name="loop-lag")
        try:
            return await self._once()
        finally:
            stop.set()
            await lag
            log.info("loop.lag", max_seconds=round(self.metrics.loop_lag.max_seconds, 3))

    async def _once(self) -> list[CycleOutcome]:
        await self.outbox.flush()
        outcomes = list(await asyncio.gather(*(self._cycle(w) for w in self.watches)))
        cleaning = [(i, w) for i, w in enumerate(self.watches) if w.cleaning_now]
        if cleaning:
            await asyncio.gather(*(w.clean_finished() for _, w in cleaning))
            settled = await asyncio.gather(*(self._cycle(w, clean=False) for _, w in cleaning))
            for (i, _), after in zip(cleaning, settled, strict=True):
                outcomes[i] = _merged(outcomes[i], after)
        await self.outbox.drain()
        return outcomes

    async def run(self, stop: asyncio.Event) -> None:
        watcher = self.settings.watcher
        # /healthz turns 503 when the loop has not beaten for three poll intervals (a wedged daemon).
        stale_after = 3 * watcher.poll_interval + watcher.host_timeout
        server = await start_metrics_server(
            self.settings.metrics.listen, self.metrics, stale_after=stale_after
        )
        try:
            await self._run(stop)
        finally:
            if server is not None:
                server.close()

    async def _run(self, stop: asyncio.Event) -> None:
        # Everything built so far (modules, settings, clients) lives as long as the daemon: out of the cyclic
        # collector's reach, a full collection costs microseconds instead of 30-40 ms of the loop's time.
        gc.collect()
        gc.freeze()
        # A worker thread (a scrape, a parse, a query) that holds the GIL keeps the loop from running for up
        # to the switch interval each time the loop's thread gives the GIL up for a system call: 5 ms by
        # default, which a handful of socket calls per wake-up turn into a stall of tens of milliseconds.
        sys.setswitchinterval(SWITCH_INTERVAL)
        await self.outbox.flush()  # what a previous run committed but could not deliver
        loops = [asyncio.create_task(self._loop(w, stop), name=f"host:{w.host.name}") for w in self.watches]
        delivery = asyncio.create_task(self.outbox.run(stop), name="outbox")
        summary = asyncio.create_task(self._summaries(stop), name="summary")
        lag = asyncio.create_task(self.metrics.loop_lag.run(stop), name="loop-lag")
        listen = self.settings.metrics.listen
        log.info("started", version=__version__, config=self.config_path, hosts=len(self.watches),
                 poll_interval=self.settings.watcher.poll_interval, state_path=self.store.path,
                 metrics=f"http://{listen}/metrics" if listen else None)  # fmt: skip
        self.warn_if_idle()
        for w in self.watches:
            if w.host.host_key_unchecked:
                log.warning("host.key_unchecked", host=w.host.name, reason='known_hosts = "none"')
        # systemd (Type=notify, WatchdogSec=): ready once the first cycles are scheduled. (sdnotify)
        notify("READY=1")
        watchdog = asyncio.create_task(self._watchdog(stop), name="watchdog")
        await stop.wait()
        notify("STOPPING=1")
        grace = self.settings.watcher.grace_period
        stopping = time.monotonic()
        # asyncio.wait refuses an empty set, and a watcher without hosts has no loops to wait for.
        done, pending = await asyncio.wait(loops, timeout=grace) if loops else (set(), set())
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        left = max(0.0, grace - (time.monotonic() - stopping))
        await asyncio.gather(*(w.stop_cleaning(left) for w in self.watches), return_exceptions=True)
        summary.cancel()
        await asyncio.gather(summary, delivery, watchdog, lag, return_exceptions=True)
        # What the last cycles committed (a clean recorded as the watcher stopped) gets one delivery round
        # within what is left of the grace period; what fails stays pending for the next start.
        left = max(1.0, grace - (time.monotonic() - stopping))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.outbox.drain(attempts=1), left)
        for task in done:
            if not task.cancelled() and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]

    def warn_if_idle(self) -> None:
        """Say once why this watcher watches nothing: otherwise only ``"hosts": 0`` would tell."""
        if not self.watches:
            named = "none of the hosts named with --host is in this shard"
            reason = no_hosts(self.settings, self.shard) or named
            log.warning("no_hosts", reason=reason)

    async def close(self) -> None:
        await self.outbox.close()
        await self.clickhouse.close()
        await asyncio.gather(*(w.close() for w in self.watches), return_exceptions=True)

    async def _loop(self, watch: HostWatch, stop: asyncio.Event) -> None:
        first = True
        while not stop.is_set():
            outcome = await self._cycle(watch)
            # Nothing committed, nothing to dispatch: ask the store nothing (unless a flush failed).
            if outcome.events or first or self.outbox.undispatched:
                await self.outbox.flush()
                first = False
            self.metrics.heartbeat()
            await _pause(watch, stop, long_poll=self.settings.watcher.long_poll)

    async def _cycle(self, watch: HostWatch, *, clean: bool = True) -> CycleOutcome:
        async with self._slots:
            outcome = await watch.cycle(clean=clean)
        self._stats.add(outcome)
        return outcome

    async def _watchdog(self, stop: asyncio.Event) -> None:
        """``WATCHDOG=1`` every half watchdog timeout, from the event loop: a wedged loop gets restarted."""
        timeout = watchdog_interval()
        while timeout is not None and not stop.is_set():
            notify("WATCHDOG=1")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout / 2)

    async def _summaries(self, stop: asyncio.Event) -> None:
        interval = self.settings.watcher.poll_interval
        while not stop.is_set():
            started = time.monotonic()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)
            self.metrics.heartbeat()
            log.info("cycle", seconds=round(time.monotonic() - started, 1), **self._stats.summary())


async def _pause(watch: HostWatch, stop: asyncio.Event, *, long_poll: bool = False) -> None:
    """Sleep until the host's next poll: its interval, or less when a clean of it ends (the first poll after a
    clean is the one that shows what it removed), or when the host's state file changes (``long_poll``), or
    until ``stop``."""
    waits: list[asyncio.Future[object]] = [asyncio.ensure_future(stop.wait()),
                                           asyncio.ensure_future(watch.wake.wait())]  # fmt: skip
    if long_poll:
        waits.append(asyncio.ensure_future(_long_poll(watch)))
    try:
        await asyncio.wait(waits, timeout=watch.interval, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
        await asyncio.gather(*waits, return_exceptions=True)
    watch.wake.clear()


async def _long_poll(watch: HostWatch) -> None:
    """Return when the host's state file changed, or after the host's interval; or at once when the wait
    ended without an answer after it had begun (the link died: SSH's keepalive, ``keepalive_interval`` x 3
    unanswered, closed the connection), so that the poll that follows meets the failure now, reports it and
    starts the host's backoff. A wait that could not even be asked (no session) is not retried in a loop:
    the interval is slept."""
    began = time.monotonic()
    error = "the poll session ended during the wait"
    try:
        changed = await watch.poller.wait_for_change(watch.interval)
    except HostError as exc:
        changed, error = None, str(exc)
    if changed is None:
        if time.monotonic() - began >= LONG_POLL_FAILED_AT_ONCE:
            log.info("host.long_poll_lost", host=watch.host.name, error=error)
            return
        await asyncio.sleep(watch.interval)


def _merged(first: CycleOutcome, then: CycleOutcome) -> CycleOutcome:
    """One host's ``once``: its cycle, and the cycle that settled the clean it started."""
    first.events += then.events
    first.phases += then.phases
    first.checks += then.checks
    first.gates += then.gates
    first.clean = then.clean or first.clean
    first.error = first.error or then.error
    if not then.result.ok:
        first.result = then.result
    return first


async def run_daemon(
    settings: Settings,
    hosts: Sequence[HostConfig] | None = None,
    shard: str | None = None,
    config_path: str | None = None,
) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with Runtime(settings) as runtime:
        store = await runtime.daemon_store(stop)
        if store is None:
            if not stop.is_set():
                return EXIT_CONFIG
            log.info("stopped")
            return EXIT_OK
        daemon = _daemon(runtime, store, hosts, shard)
        daemon.config_path = config_path
        try:
            await daemon.run(stop)
        except MetricsError as exc:
            log.error("metrics.unusable", error=str(exc))
            return EXIT_CONFIG
        except Exception as exc:
            log.exception("crashed", error=str(exc))
            return EXIT_FAILED
    log.info("stopped")
    return EXIT_OK


async def run_once(
    settings: Settings, hosts: Sequence[HostConfig] | None = None, shard: str | None = None
) -> tuple[int, list[CycleOutcome]]:
    async with Runtime(settings) as runtime:
        store = await runtime.daemon_store()
        if store is None:
            return EXIT_CONFIG, []
        daemon = _daemon(runtime, store, hosts, shard)
        daemon.warn_if_idle()
        outcomes = await daemon.once()
    ok = all(o.result.ok and o.error is None for o in outcomes)
    ok = ok and not daemon.outbox.failing  # an alert that did not go out fails the round too
    return (EXIT_OK if ok else EXIT_FAILED), outcomes


def _daemon(runtime: Runtime, store: Store, hosts: Sequence[HostConfig] | None, shard: str | None) -> Daemon:
    """The daemon on ``runtime``'s transports and handles; closed with them, before them."""
    settings = runtime.settings
    transports = runtime.transports(settings.hosts if hosts is None else hosts)
    clickhouse = runtime.clickhouse(transports)
    daemon = Daemon(settings, store, hosts, shard, transports=transports, clickhouse=clickhouse)
    runtime.on_close(daemon.close)
    return daemon
