"""A fault-injecting TCP proxy between the watcher and sshd (the kernel here has no netem).

It is a :class:`~tests.harness.proxy.CountingProxy` (same thread, same byte counts) whose behaviour can be
switched at runtime, from any thread, while connections are open:

* :meth:`FaultProxy.pass_through` — relay every byte as it comes (the default);
* :meth:`FaultProxy.cut_after` — every connection is cut once ``n`` more bytes have gone downstream (server →
  client): reset (the peer sees the connection die mid-transfer), or silently (the link just stops carrying
  anything, as when a cable is pulled); new connections get the same treatment while the switch is on;
* :meth:`FaultProxy.degrade` — added latency per chunk in each direction, and loss as TCP experiences it: a
  lost segment is not missing from the stream, it arrives one retransmission timeout later (doubling while
  its retransmissions are lost too), and everything behind it waits (head-of-line blocking); order is kept;
* :meth:`FaultProxy.black_hole` — accept TCP, then never forward nor answer anything, on open connections too;
* :meth:`FaultProxy.reset_all` — abort every current connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from tests.harness.proxy import CountingProxy

Mode = Literal["pass", "cut", "black_hole"]


@dataclass(eq=False)  # identity: links live in a set
class _Link:
    """One proxied connection: the client's side, the server's side, and its downstream budget."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter | None = None
    budget: int | None = None  # bytes still allowed downstream while a cut is armed
    stalled: bool = False  # cut silently: nothing moves any more, in either direction

    def abort(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                _abort(writer)

    def close(self) -> None:
        for writer in (self.client, self.server):
            if writer is not None:
                writer.close()


def _abort(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dying link or a rebooted peer does, not with a FIN."""
    sock = writer.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


@dataclass
class FaultProxy(CountingProxy):
    seed: int = 8
    cuts: int = 0  # connections cut by cut_after
    _mode: Mode = "pass"
    _cut_bytes: int = 0
    _cut_silently: bool = False
    _latency: float = 0.0
    _loss: float = 0.0
    _rto: float = 0.2
    _links: set[_Link] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)
    _switch: threading.Lock = field(default_factory=threading.Lock)
    _flowing: asyncio.Event = field(default_factory=asyncio.Event)  # cleared while black-holed
    _random: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)
        self._flowing.set()

    # -------------------------------------------------------------- switches (thread-safe)

    def pass_through(self) -> None:
        """Relay everything again, without delay; connections that a silent cut stalled stay stalled."""
        with self._switch:
            self._mode = "pass"
            self._latency = self._loss = 0.0
            for link in list(self._links):
                link.budget = None
        self._in_loop(self._flowing.set)

    def cut_after(self, n: int, *, silently: bool = False) -> None:
        """Cut every connection, open or new, once ``n`` more bytes have gone downstream through it."""
        with self._switch:
            self._mode = "cut"
            self._cut_bytes = n
            self._cut_silently = silently
            for link in list(self._links):
                link.budget = n
        self._in_loop(self._flowing.set)

    def degrade(self, *, latency: float, loss: float, rto: float = 0.2) -> None:
        """``latency`` seconds added to every chunk each way; a fraction ``loss`` of chunks are retransmitted
        after ``rto`` seconds (Linux's minimum RTO is 200 ms), then 2×``rto``, … while the retransmission is
        lost as well."""
        with self._switch:
            self._latency, self._loss, self._rto = latency, loss, rto

    def black_hole(self) -> None:
        """Accept connections but carry nothing, in either direction, on old and new connections alike."""
        with self._switch:
            self._mode = "black_hole"
        self._in_loop(self._flowing.clear)

    def reset_all(self) -> int:
        """Abort every current connection with a reset; returns how many there were."""
        return self._call(self._reset_all)

    @property
    def connections(self) -> int:
        with self._switch:
            return len(self._links)

    # -------------------------------------------------------------- lifecycle

    def stop(self) -> None:
        """Abort every connection and cancel the relays before the loop stops (no dangling transports)."""
        if self._loop is not None and self._loop.is_running():
            self._call(self._shutdown)
        super().stop()

    def _in_loop(self, action: Callable[[], None]) -> None:
        """Run ``action`` in the proxy's loop (asyncio objects are not thread-safe), or now if none runs."""
        if self._loop is not None and self._loop.is_running():
            self._loop.call_soon_threadsafe(action)
        else:
            action()

    def _call(self, action: Callable[[], Coroutine[Any, Any, int]]) -> int:
        assert self._loop is not None
        return asyncio.run_coroutine_threadsafe(action(), self._loop).result(10)

    async def _reset_all(self) -> int:
        with self._switch:
            links = list(self._links)
        for link in links:
            link.abort()
        return len(links)

    async def _shutdown(self) -> int:
        self._flowing.set()  # nothing stays held: every relay runs into its aborted connection and ends
        count = await self._reset_all()
        tasks = [t for t in self._tasks if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return count

    # -------------------------------------------------------------- relaying

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        link = _Link(writer)
        with self._switch:
            self._links.add(link)
            if self._mode == "cut":
                link.budget = self._cut_bytes
        try:
            # A black hole answers the SYN (the listener's kernel does) and then nothing: no upstream yet.
            await self._flowing.wait()
            try:
                up_reader, up_writer = await asyncio.open_connection(self.target_host, self.target_port)
            except OSError:
                _abort(writer)
                return
            link.server = up_writer
            await asyncio.gather(
                self._relay(reader, up_writer, link, up=True), self._relay(up_reader, writer, link, up=False)
            )
        except asyncio.CancelledError:
            pass  # stop(): asyncio's server callback would report a cancelled handler as an error
        finally:
            with self._switch:
                self._links.discard(link)
            link.close()
            self._tasks.discard(task)

    async def _relay(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: _Link, *, up: bool
    ) -> None:
        """Read chunks as they come and hand them to a writer that releases each at its due time, so that
        latency delays the stream without throttling it, and a "lost" chunk holds back those behind it."""
        queue: asyncio.Queue[tuple[float, bytes] | None] = asyncio.Queue()
        sender = asyncio.create_task(self._send(queue, writer, link, up=up))
        self._tasks.add(sender)
        sender.add_done_callback(self._tasks.discard)
        last_due = 0.0
        try:
            while True:
                data = await reader.read(65536)
                if not data:
                    break
                with self._switch:
                    latency, loss, rto = self._latency, self._loss, self._rto
                    stall = 0.0
                    while loss and self._random.random() < loss:
                        stall += rto
                        rto *= 2
                due = max(time.monotonic() + latency + stall, last_due)
                last_due = due
                queue.put_nowait((due, data))
        except (ConnectionError, OSError):
            pass
        except asyncio.CancelledError:
            sender.cancel()  # it may be held by a black hole: it would never see the end of the queue
            raise
        finally:
            queue.put_nowait(None)
            with contextlib.suppress(asyncio.CancelledError):
                await sender

    async def _send(
        self, queue: asyncio.Queue[tuple[float, bytes] | None], writer: asyncio.StreamWriter, link: _Link,
        *, up: bool,
    ) -> None:  # fmt: skip
        try:
            while (item := await queue.get()) is not None:
                due, data = item
                if (wait := due - time.monotonic()) > 0:
                    await asyncio.sleep(wait)
                await self._flowing.wait()
                if link.stalled:
                    return  # the link is dead: whatever still comes is never delivered
                if not up and link.budget is not None:
                    if len(data) >= link.budget:
                        data, link.budget = data[: link.budget], 0
                        writer.write(data)
                        self.downstream_bytes += len(data)
                        await writer.drain()
                        self.cuts += 1
                        if self._cut_silently:
                            link.stalled = True
                            return
                        link.abort()
                        return
                    link.budget -= len(data)
                if up:
                    self.upstream_bytes += len(data)
                else:
                    self.downstream_bytes += len(data)
                writer.write(data)
                await writer.drain()
            if not link.stalled:
                with contextlib.suppress(Exception):
                    writer.write_eof()
        except (ConnectionError, OSError):
            link.abort()
