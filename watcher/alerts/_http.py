"""One HTTP POST to an alert target, its errors classified, its URL and secrets kept out of every message.

The only module of the alert sinks that knows httpx's exceptions. What an answer means:

====================================  ==========================================================
2xx                                   delivered
429, 408, 5xx                         ``DeliveryError(temporary=True, retry_after=<Retry-After>)``
timeout, refused, reset, DNS failure  ``DeliveryError(temporary=True)``
3xx (never followed), other 4xx       ``DeliveryError(temporary=False)``: sending again will not help
====================================  ==========================================================

Webhook URLs hold tokens (``https://hooks.slack.com/services/T…/B…/secret``), so an error names the sink
(``slack 'ops'``) and quotes the target's answer only after removing the URL and the secrets from it. httpx
itself logs every request's full URL at INFO on the ``httpx`` logger: a filter on that logger replaces the
path and query by ``…`` in those lines.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import anyio._backends._asyncio  # noqa: F401  # httpcore imports it at the first request: 30-50 ms of the loop
import httpx
import structlog
from pydantic import SecretStr

from watcher.errors import DeliveryError
from watcher.sanitize import visible

log = structlog.get_logger("watcher.alerts")

# The body of an error answer is quoted up to this length: enough for Slack's "invalid_token" or an
# Alertmanager validation message, short enough for one log line.
_QUOTE = 200
# Redaction reads this much of the body, more than any secret is long: a secret is removed whole before
# the quote is cut, never cut in two first (half a token is still half a token).
_REDACT_READ = 64 * 1024
# Path segments and query values this long may be tokens ("services" is 8 long: redacting it costs nothing).
_TOKEN_MIN = 8


class _RedactRequestLines(logging.Filter):
    """Strip the path and query from httpx's ``HTTP Request: POST https://host/path…`` log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str) and record.msg.startswith("HTTP Request:") and record.args:
            args = list(record.args) if isinstance(record.args, tuple) else []
            if len(args) >= 2 and isinstance(args[1], httpx.URL | str):
                args[1] = _origin(str(args[1])) + "/…"
                record.args = tuple(args)
        return True


def _install_log_filter() -> None:
    logger = logging.getLogger("httpx")
    if not any(isinstance(f, _RedactRequestLines) for f in logger.filters):
        logger.addFilter(_RedactRequestLines())


_install_log_filter()


def _origin(url: str) -> str:
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def redact(text: str, secrets: Iterable[SecretStr]) -> str:
    """``text`` with every secret, longest first, replaced by ``***``."""
    for secret in sorted((s.get_secret_value() for s in secrets), key=len, reverse=True):
        if secret:
            text = text.replace(secret, "***")
    return text


def _without_secret_start(text: str, secrets: Iterable[SecretStr]) -> str:
    """``text`` without a tail that is the beginning of a secret: where a read ended inside a body, the
    secret it cut in two is not whole, so :func:`redact` left its first part."""
    for secret in (s.get_secret_value() for s in secrets):
        for size in range(min(len(secret) - 1, len(text)), 0, -1):
            if text.endswith(secret[:size]):
                text = text[:-size]
                break
    return text


def url_secrets(url: str) -> list[str]:
    """The parts of a URL that may hold a token: all of it, its path, query and user info, and each path
    segment and query value long enough to be one (a target may quote the token alone: "invalid token …")."""
    parts = urlsplit(url)
    found = [url, parts.path, parts.query, parts.password or "", parts.username or ""]
    found += parts.path.split("/") + [
        value for _, _, value in (p.partition("=") for p in parts.query.split("&"))
    ]
    return sorted({s for s in found if len(s) >= _TOKEN_MIN}, key=len, reverse=True)


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait per a Retry-After header (seconds or an HTTP-date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:  # an HTTP-date is always GMT; parsedate gives naive for "-0000"
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


class HttpTarget:
    """Where a sink POSTs to. Closes the client at :meth:`close` only when it created it."""

    def __init__(
        self,
        describe: str,
        url: SecretStr,
        timeout: float,
        client: httpx.AsyncClient | None,
        secrets: Iterable[SecretStr] = (),
    ) -> None:
        self.describe = describe  # "webhook 'ops'": what messages call the target
        # Kept as SecretStr, unwrapped only for the request: a repr, a debugger or a traceback with locals
        # shows "**********".
        self._url = url
        self._timeout = timeout
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(follow_redirects=False)
        self._secrets = [SecretStr(s) for s in url_secrets(url.get_secret_value())] + list(secrets)

    async def post(self, content: bytes, headers: Mapping[str, str]) -> httpx.Response:
        """POST the bytes; return a 2xx answer, raise :class:`DeliveryError` for everything else."""
        response = await self._send("POST", content=content, headers=dict(headers))
        log.debug("alert.posted", sink=self.describe, status=response.status_code, bytes=len(content))
        return response

    async def get(self, params: Mapping[str, str | list[str]]) -> httpx.Response:
        """GET with query parameters; return a 2xx answer, raise :class:`DeliveryError` otherwise."""
        return await self._send("GET", params=dict(params))

    async def _send(self, method: str, **kwargs: Any) -> httpx.Response:
        try:
            # httpx's timeout bounds each read and write; this bounds the whole attempt (a server that
            # answers one byte a second would otherwise hold a delivery for ever).
            async with asyncio.timeout(self._timeout):
                response = await self._client.request(
                    method, self._url.get_secret_value(), timeout=self._timeout, **kwargs
                )
        except (TimeoutError, httpx.TimeoutException):
            raise DeliveryError(f"{self.describe}: no answer within {self._timeout:g}s") from None
        except httpx.HTTPError as exc:
            # `from None`: the original exception carries the request, hence the URL, in its attributes.
            detail = redact(str(exc), self._secrets) or "no detail"
            raise DeliveryError(f"{self.describe}: {type(exc).__name__}: {detail}") from None
        except httpx.InvalidURL:
            raise DeliveryError(f"{self.describe}: the URL is invalid", temporary=False) from None
        self._check(response)
        return response

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if 200 <= status < 300:
            return
        message = f"{self.describe}: HTTP {status}: {self._quote(response)}"
        if status in (408, 429) or status >= 500:
            raise DeliveryError(message, retry_after=retry_after(response.headers.get("Retry-After")))
        raise DeliveryError(message, temporary=False)

    def _quote(self, response: httpx.Response) -> str:
        """The answer's body for a message: redacted first, then made one line and cut."""
        head = response.content[:_REDACT_READ]
        try:
            text = head.decode(response.encoding or "utf-8", errors="replace")
        except LookupError:  # a known codec that is no text encoding ("charset=rot13")
            text = head.decode("utf-8", errors="replace")
        text = redact(text, self._secrets)
        if len(head) < len(response.content):
            text = _without_secret_start(text, self._secrets)
        text = " ".join(visible(text).split())
        return (text if len(text) <= _QUOTE else text[: _QUOTE - 1] + "…") or "(empty)"

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()
