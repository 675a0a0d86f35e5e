"""The ClickHouse connection of checks: the only module that imports clickhouse_driver.

Every query runs with ``readonly=1`` (the server refuses INSERT, ALTER, DROP and SET, whatever the SQL says),
``max_execution_time`` and ``max_threads`` from the ``[[clickhouse]]`` entry; for a user whose profile is
read-only already, with what that profile lets it change (decided once, ``ClickHouseClient._decide``).
Values reach the SQL only as ``%(name)s`` parameters, escaped by the driver's own rules (:func:`render`).
The driver blocks, so each query runs in a worker thread, on a connection taken from a small pool.

Failures become :class:`CheckQueryError`, one line that names the server and never holds a traceback or the
password. Transient network failures (refused, reset, timed out, closed mid-answer) are retried: at most
``ATTEMPTS`` tries, exponential backoff with jitter, each retry logged as ``clickhouse.retry``. Errors the
server reports (syntax, readonly, unknown table, …) are never retried: they would fail the same way again.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import threading
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import structlog
import tenacity
from clickhouse_driver import Client
from clickhouse_driver import errors as driver_errors
from clickhouse_driver.util.escape import escape_params

from checks.base import QueryResult

log = structlog.get_logger("checks.clickhouse")

# The driver logs a warning with a traceback for every failed connect; here each failure is reported once,
# as a clickhouse.retry event or as the CheckQueryError the runner records.
logging.getLogger("clickhouse_driver").setLevel(logging.ERROR)

ATTEMPTS = 3
# Between tries: 0.5 s, 1 s, 2 s, … at most 4 s, plus up to 0.5 s of jitter. Tests set it to
# ``tenacity.wait_none()``; it is read at each query.
_BACKOFF = tenacity.wait_exponential(multiplier=0.5, max=4.0)
RETRY_WAIT: tenacity.wait.wait_base = _BACKOFF + tenacity.wait_random(0, 0.5)
TRANSIENT: tuple[type[BaseException], ...] = (
    driver_errors.NetworkError,
    driver_errors.SocketTimeoutError,
    ConnectionError,
    EOFError,
    TimeoutError,  # socket.timeout is an alias of it since Python 3.10
)
_MAX_IDLE = 4  # connections kept open between queries
_MESSAGE_LIMIT = 300
_CONNECT_FAILED = re.compile(r"(.*) \([^()\s]+:\d+\)", re.DOTALL)


class CheckQueryError(Exception):
    """A check's query failed: one line for people. ``temporary`` is true for network failures."""

    def __init__(self, message: str, *, temporary: bool = False) -> None:
        super().__init__(message)
        self.temporary = temporary


class ClickHouseClient:
    """A read-only, bounded ClickHouse connection (the ``checks.base.ClickHouse`` protocol)."""

    def __init__(
        self,
        *,
        host: str,
        port: int,
        user: str,
        password: str,
        database: str,
        max_execution_time: float,
        max_threads: int,
        connect_timeout: float,
        endpoint: Callable[[], Awaitable[tuple[str, int]]] | None = None,
    ) -> None:
        self.host = host
        self.port = port
        self.address = f"{host}:{port}"  # what messages name: the server, not a tunnel's local port
        # Where to connect, asked before each attempt: a tunnel's local port lives only as long as the SSH
        # connection that forwards it. Kept from one reconnect to the next, it would send the queries, and the
        # password (in clear in the native protocol), to whatever local process binds that port next.
        self._endpoint = endpoint
        self.retries = 0  # retries made so far, for metrics
        self._password = password
        # The server stops a query after max_execution_time; the socket gives up a little later, in case the
        # server itself hangs.
        self._connection: dict[str, Any] = {
            "host": host,
            "port": port,
            "user": user,
            "password": password,
            "database": database,
            "connect_timeout": connect_timeout,
            "send_receive_timeout": max_execution_time + connect_timeout + 5,
            "sync_request_timeout": connect_timeout,
            "client_name": "pueue-watcher",
        }
        # ClickHouse 18.16 reads max_execution_time as whole seconds. readonly=1 also forbids SET and SETTINGS
        # clauses, so the query cannot lift these limits. A user whose profile is read-only already may not
        # send some of them: see _execute.
        self._settings: dict[str, int] = {
            "max_execution_time": max(1, math.ceil(max_execution_time)),
            "max_threads": max_threads,
            "readonly": 1,
        }
        self._decided = False  # whether _settings suit the user's profile yet (see _decide)
        self._idle: list[tuple[tuple[str, int], Any]] = []  # (where it connects, the driver's client)
        self._lock = threading.Lock()
        self._closed = False

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        """Run one SELECT; ``params`` fill its ``%(name)s`` placeholders. Raises :class:`CheckQueryError`."""
        retrying = tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(ATTEMPTS),
            wait=RETRY_WAIT,
            retry=tenacity.retry_if_exception_type(TRANSIENT),
            before_sleep=self._log_retry,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    where = await self._where()
                    return await asyncio.to_thread(self._run, sql, params, where)
        except CheckQueryError:
            raise
        except (driver_errors.Error, OSError, EOFError) as exc:
            # from None: the driver's exception carries the server's stack trace.
            raise CheckQueryError(self.describe(exc), temporary=isinstance(exc, TRANSIENT)) from None
        raise AssertionError("unreachable: tenacity reraises the last error")

    async def close(self) -> None:
        """Close the idle connections; those of queries still running close when they end."""
        with self._lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for _where, client in idle:
            client.disconnect()

    async def _where(self) -> tuple[str, int]:
        if self._endpoint is None:
            return self.host, self.port
        try:
            return await self._endpoint()
        except Exception as exc:  # the tunnel's own error (HostUnreachable, …), already one line
            raise CheckQueryError(f"ClickHouse {self.address}: no tunnel: {exc}", temporary=True) from None

    def _run(self, sql: str, params: Mapping[str, Any] | None, where: tuple[str, int]) -> QueryResult:
        """One attempt, in a worker thread. A connection that failed is dropped, never reused."""
        client = self._take(where)
        try:
            connection = client.connection
            if not connection.connected:
                connection.connect()
            text = sql if params is None else render(sql, params, connection.server_info.get_timezone())
            rows, types = self._execute(client, text)
        except BaseException:
            client.disconnect()
            raise
        self._give_back(where, client)
        return QueryResult(columns=[name for name, _type in types], rows=rows)

    def _execute(self, client: Any, text: str) -> tuple[list[Any], list[tuple[str, str]]]:
        """Run ``text`` with the limits the user's profile lets this client send (see _decide)."""
        with self._lock:
            decided = self._decided
        if not decided:
            self._decide(client)
        with self._lock:
            settings = dict(self._settings)
        result: tuple[list[Any], list[tuple[str, str]]] = client.execute(
            text, with_column_types=True, settings=settings
        )
        return result

    def _decide(self, client: Any) -> None:
        """Which settings to send, decided once, from the user's profile and never from a query's error.

        The profile's own ``readonly`` is read by a query sent without settings. 0: every query carries
        ``readonly = 1`` and the limits. Otherwise the server enforces readonly by itself, and current
        releases refuse, before running anything, what such a profile may not change: ``readonly`` itself for
        ``readonly = 2`` (the limits are still sent), every setting for ``readonly = 1`` (none is sent; the
        profile's limits apply). 18.16 ignores them silently instead.

        A refusal met later (error 164) is that query's error only, never a reason to send less: a check's
        own ``SETTINGS max_threads = 8`` under ``readonly = 1`` is refused exactly so ("Cannot modify
        'max_threads' setting in readonly mode"), and dropping readonly then would let every later query
        write, an ALTER's included.
        """
        rows = client.execute("SELECT value FROM system.settings WHERE name = 'readonly'", settings={})
        profile = int(rows[0][0]) if rows else 0
        with self._lock:
            if profile == 1:
                self._settings.clear()
            elif profile == 2:
                self._settings.pop("readonly", None)
            self._decided = True
            sent = sorted(self._settings)
        if profile:
            log.info("clickhouse.readonly_profile", server=self.address, readonly=profile, sent=sent)

    def _take(self, where: tuple[str, int]) -> Any:
        """An idle connection to ``where``; those to a former address (an old tunnel's port) are closed."""
        with self._lock:
            stale = [client for at, client in self._idle if at != where]
            fresh = [(at, client) for at, client in self._idle if at == where]
            self._idle = fresh
            found = self._idle.pop()[1] if self._idle else None
        for client in stale:
            client.disconnect()
        if found is not None:
            return found
        host, port = where
        return Client(**{**self._connection, "host": host, "port": port})

    def _give_back(self, where: tuple[str, int], client: Any) -> None:
        with self._lock:
            if not self._closed and len(self._idle) < _MAX_IDLE:
                self._idle.append((where, client))
                return
        client.disconnect()

    def _log_retry(self, state: tenacity.RetryCallState) -> None:
        self.retries += 1
        exc = state.outcome.exception() if state.outcome is not None else None
        log.warning(
            "clickhouse.retry",
            server=self.address,
            attempt=state.attempt_number,
            wait_seconds=round(state.next_action.sleep, 3) if state.next_action is not None else None,
            error=self.describe(exc) if exc is not None else None,
        )

    def describe(self, exc: BaseException) -> str:
        """One line about ``exc``, without the password or a stack trace."""
        if isinstance(exc, driver_errors.ServerException):
            text = str(exc.message).split(". Stack trace:", 1)[0].strip().removeprefix("DB::Exception: ")
            message = f"ClickHouse {self.address}: Code: {exc.code}. {text}"
        elif isinstance(exc, driver_errors.NetworkError | driver_errors.SocketTimeoutError):
            text = str(exc.message or "network error")
            # The driver's form of a failed connect: "Connection refused (h:p)", h:p being where it connected.
            refused = _CONNECT_FAILED.fullmatch(text)
            if refused is not None:
                message = f"cannot connect to ClickHouse at {self.address}: {refused.group(1)}"
            else:
                message = f"ClickHouse {self.address}: connection lost: {text}"
        elif isinstance(exc, TimeoutError):
            limit = self._connection["send_receive_timeout"]
            message = f"ClickHouse {self.address}: no answer within {limit:g} s"
        elif isinstance(exc, EOFError | OSError):
            message = f"ClickHouse {self.address}: connection lost: {exc or type(exc).__name__}"
        elif isinstance(exc, driver_errors.Error):
            message = f"ClickHouse {self.address}: {type(exc).__name__}: {exc.message}"
        else:
            message = f"ClickHouse {self.address}: {type(exc).__name__}: {exc}"
        return _one_line(message, self._password)


def render(sql: str, params: Mapping[str, Any], timezone: str = "UTC") -> str:
    """``sql`` with its ``%(name)s`` placeholders replaced by escaped literals, as the driver does.

    Datetimes with a timezone are written in the server's ``timezone``. A literal ``%`` in the text must be
    written ``%%`` (Python's %-formatting, as in the driver).
    """
    escaped: dict[str, Any] = escape_params(dict(params), _Context(timezone))
    try:
        return sql % escaped
    except KeyError as exc:
        message = f"the query uses %({exc.args[0]})s, which is not a parameter ({', '.join(sorted(params))})"
    except (TypeError, ValueError) as exc:
        message = f"cannot fill the query's parameters: {exc} (write a literal % as %%)"
    raise CheckQueryError(message)


class _ServerInfo:
    def __init__(self, timezone: str) -> None:
        self.timezone = timezone

    def get_timezone(self) -> str:
        return self.timezone


class _Context:
    """What the driver's escaping reads from a connection: the server's timezone."""

    def __init__(self, timezone: str) -> None:
        self.server_info = _ServerInfo(timezone)


def _one_line(message: str, password: str) -> str:
    if password:
        message = message.replace(password, "***")
    line = " ".join(message.split())
    return line if len(line) <= _MESSAGE_LIMIT else line[: _MESSAGE_LIMIT - 1] + "…"
