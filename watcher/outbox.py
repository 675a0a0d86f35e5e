"""The durable outbox: events are committed with the state change that caused them, then delivered.

1. **Dispatch.** Committed events that no sink has been given yet are handed to every configured sink that
   wants them (``[[alerts]]`` filters): one pending delivery per sink, written in one transaction with
   marking the event dispatched. Without ``[[alerts]]``, the console sink (a log line) gets everything.
2. **Deliver.** Each sink has its own worker, so that a sink that is down holds up no other sink and no
   poll. A worker sends its pending events in batches (Slack groups them into one message) and retries
   temporary failures with the one retry policy below; what still fails stays pending, survives restarts,
   and is tried again later. Permanent refusals are recorded as failed.

Delivery is at least once: each event carries its stable ``id``, the idempotency key, for receivers to
deduplicate. A ``kill -9`` between commit and delivery only delays the delivery to the next start.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Sequence
from typing import Any

import structlog
import tenacity

from watcher.alerts import DeliveryError, Sink, build_sink, wants
from watcher.alerts.config import AlertConfig, ConsoleConfig
from watcher.errors import StoreError
from watcher.metrics import MetricsState
from watcher.records import DeliveryStatus, Event
from watcher.store import Store

log = structlog.get_logger("watcher.outbox")

BATCH = 50
ATTEMPTS = 5  # per round; a round that fails leaves the batch pending for the next one
MAX_WAIT = 300.0  # the cap of one wait, Retry-After included
ROUND_BACKOFF = 30.0  # between two failed rounds of one sink
IDLE_WAKE = 30.0  # a worker looks for work at least this often
STORE_RETRY = 5.0  # after the store could not record a round (a full disk): what was sent is sent again

_exponential = tenacity.wait_exponential_jitter(initial=1, max=60, jitter=1)


def _wait(state: tenacity.RetryCallState) -> float:
    """Exponential backoff with jitter, or what the target asked for (Retry-After), capped."""
    exc = state.outcome.exception() if state.outcome is not None else None
    asked = exc.retry_after if isinstance(exc, DeliveryError) else None
    return min(MAX_WAIT, asked if asked is not None else _exponential(state))


def _temporary(exc: BaseException) -> bool:
    return isinstance(exc, DeliveryError) and exc.temporary


def _log_retry(sink: str) -> Any:
    def before_sleep(state: tenacity.RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else None
        log.warning(
            "delivery.retry", sink=sink, attempt=state.attempt_number, wait_seconds=wait, error=str(exc)
        )

    return before_sleep


class Outbox:
    def __init__(
        self, store: Store, configs: Sequence[AlertConfig] = (), metrics: MetricsState | None = None
    ) -> None:
        self._store = store
        self._metrics = metrics
        self._configs: list[AlertConfig] = list(configs) or [ConsoleConfig(name="console")]
        self._sinks: dict[str, Sink] = {}
        self._client: Any = None
        self._lock = asyncio.Lock()
        self._wake = {config.name: asyncio.Event() for config in self._configs}
        self._store_error: str | None = None  # the store's failure in force, logged once
        self.undispatched = False  # a flush failed: committed events wait for the next one
        # Sinks whose last round failed, with its error, until one of theirs succeeds: ``once`` exits non-zero
        # when its round left one here.
        self.failing: dict[str, str] = {}
        if any(config.kind != "console" for config in self._configs):
            # Imported and built here, before the daemon's loop runs: importing httpx takes over 100 ms,
            # which at the first delivery would hold every host's poll (bench/, loop_lag.py).
            import httpx

            self._client = httpx.AsyncClient()
        # Every sink is built now too: a sink's module (and what httpcore imports at its first request) is
        # imported on the loop otherwise, at the first alert, while every host's poll waits (up to 170 ms).
        for config in self._configs:
            self._sink(config)

    async def flush(self) -> list[Event]:
        """Dispatch every committed, undispatched event to its sinks; wake their workers. When the store
        cannot record it (a full disk), nothing is dispatched and ``undispatched`` says to flush again."""
        try:
            async with self._lock:
                events = await self._store.undelivered()
                if events:
                    routes = {e.id: [c.name for c in self._configs if wants(c, e)] for e in events}
                    await self._store.dispatch(routes)
                    for wake in self._wake.values():
                        wake.set()
            await self._depth()
        except StoreError as exc:
            self.undispatched = True
            self._store_failed(exc)
            return []
        self.undispatched = False
        if events:  # a write went through: the store works again
            self._store_error = None
        return events

    async def run(self, stop: asyncio.Event) -> None:
        """The sink workers, until ``stop``."""
        workers = [asyncio.create_task(self._worker(c, stop), name=f"sink:{c.name}") for c in self._configs]
        await stop.wait()
        for worker in workers:
            worker.cancel()
        await asyncio.gather(*workers, return_exceptions=True)

    async def drain(self, attempts: int = 3) -> None:
        """Dispatch, then one delivery round per sink (for ``once``): what fails stays pending, and the sink
        is left in ``failing``."""
        await self.flush()
        await asyncio.gather(*(self._round(c, attempts) for c in self._configs))

    async def close(self) -> None:
        for sink in self._sinks.values():
            with contextlib.suppress(Exception):
                await sink.close()
        if self._client is not None:
            await self._client.aclose()

    async def _worker(self, config: AlertConfig, stop: asyncio.Event) -> None:
        wake = self._wake[config.name]
        while not stop.is_set():
            wake.clear()
            delivered, pause = await self._round(config, ATTEMPTS)
            if delivered:
                continue  # there may be more
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), pause)

    async def _round(self, config: AlertConfig, attempts: int) -> tuple[int, float]:
        """Deliver one batch of ``config``'s pending events; (how many were delivered, how long to pause).
        A round the store cannot record stays pending, to be delivered again: a worker must outlive a full
        disk."""
        try:
            done = await self._deliver(config, attempts)
        except StoreError as exc:
            self._store_failed(exc)
            return 0, STORE_RETRY
        if done[0]:  # a write went through: the store works again
            self._store_error = None
        return done

    async def _deliver(self, config: AlertConfig, attempts: int) -> tuple[int, float]:
        events = await self._store.pending_deliveries(config.name, BATCH)
        if not events:
            return 0, IDLE_WAKE
        ids = [e.id for e in events]
        sink = self._sink(config)
        try:
            async for attempt in tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception(_temporary),
                wait=_wait,
                stop=tenacity.stop_after_attempt(attempts),
                before_sleep=_log_retry(config.name),
                reraise=True,
            ):
                with attempt:
                    await sink.deliver(events)
        except DeliveryError as exc:
            status: DeliveryStatus = "pending" if exc.temporary else "failed"
            await self._store.settle_deliveries(config.name, ids, status, str(exc))
            self._failed(config.name, str(exc), len(ids), permanent=not exc.temporary)
            return 0, min(MAX_WAIT, exc.retry_after or ROUND_BACKOFF)
        except Exception as exc:  # a sink's bug must not stop delivery for good
            await self._store.settle_deliveries(config.name, ids, "pending", f"{type(exc).__name__}: {exc}")
            self._failed(config.name, f"{type(exc).__name__}: {exc}", len(ids), permanent=False)
            return 0, ROUND_BACKOFF
        await self._store.settle_deliveries(config.name, ids, "delivered")
        self.failing.pop(config.name, None)
        await self._depth()
        return len(ids), 0.0

    async def _depth(self) -> None:
        if self._metrics is not None:
            self._metrics.outbox(await self._store.outbox_depth())

    def _store_failed(self, exc: StoreError) -> None:
        if str(exc) != self._store_error:
            log.error("outbox.store_failed", error=str(exc))
        self._store_error = str(exc)

    def _failed(self, sink: str, error: str, count: int, *, permanent: bool) -> None:
        log.warning("delivery.failed", sink=sink, events=count, permanent=permanent, error=error)
        self.failing[sink] = error
        if self._metrics is not None:
            self._metrics.delivery_failed(sink)

    def _sink(self, config: AlertConfig) -> Sink:
        sink = self._sinks.get(config.name)
        if sink is None:
            sink = self._sinks[config.name] = build_sink(config, self._client)
        return sink
