"""Running one check safely: a timeout, an exception or an unreachable database is ``error``, never ``ok``."""

from __future__ import annotations

import asyncio
import time

import structlog

from checks.base import Check, CheckContext, CheckResult, CheckStatus

log = structlog.get_logger("checks")


async def run_check(check: Check, ctx: CheckContext, timeout: float) -> CheckResult:
    started = time.monotonic()
    try:
        async with asyncio.timeout(timeout):
            result = await check.run(ctx)
    except TimeoutError:
        return _error(check, started, f"timed out after {timeout:g}s")
    except asyncio.CancelledError:
        raise
    except Exception as exc:  # a plug-in may raise anything; the daemon must go on
        log.warning("check.raised", check=check.name, host=ctx.host, group=ctx.group, error=_one_line(exc))
        return _error(check, started, _one_line(exc))
    if not isinstance(result, CheckResult):
        return _error(check, started, f"returned {type(result).__name__}, not a CheckResult")
    return result


def _error(check: Check, started: float, message: str) -> CheckResult:
    return CheckResult(
        name=check.name,
        kind=check.kind,
        status=CheckStatus.ERROR,
        duration_seconds=time.monotonic() - started,
        error=message,
    )


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:299] + "…"
