"""The ``local`` transport: run the command as a child process of the watcher."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence

from watcher.errors import HostError, HostTimeout, HostUnreachable
from watcher.transport.base import CommandResult, HeadCheck, read_stderr, read_stream


class LocalTransport:
    """Runs commands on this machine; each command in its own process group, so a timeout kills it all."""

    async def run(
        self, argv: Sequence[str], *, timeout: float, limit: int | None = None, head: HeadCheck | None = None
    ) -> CommandResult:
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env=child_env(),
            )
        except OSError as exc:
            raise HostUnreachable(f"cannot start {argv[0]!r}: {exc.strerror or exc}") from exc
        assert proc.stdout is not None
        assert proc.stderr is not None
        try:
            async with asyncio.timeout(timeout):
                stdout, stderr = await asyncio.gather(
                    read_stream(proc.stdout, limit, head), read_stderr(proc.stderr)
                )
                await proc.wait()
        except (TimeoutError, asyncio.CancelledError, HostError) as exc:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                await proc.wait()
            if not isinstance(exc, TimeoutError):  # cancelled, or an answer past read_stream's limit
                raise
            raise HostTimeout(f"command timed out after {timeout:g}s") from None
        assert proc.returncode is not None
        return CommandResult(exit_status=proc.returncode, stdout=stdout, stderr=stderr)

    async def ask(self, argv: Sequence[str], request: bytes, until: bytes, *, timeout: float) -> bytes | None:
        return None  # a local command is a cheap fork: no long-lived session

    async def forward(self, host: str, port: int, *, timeout: float) -> tuple[str, int]:
        return host, port

    async def close(self) -> None:
        return None


# What a local child keeps of the watcher's environment: what pueue and the poll script need to find the
# daemon (HOME, the XDG directories, PUEUE_CONFIG_PATH), the locale and the time zone. Nothing else, above
# all not PUEUE_WATCHER__* (the watcher's own secrets: ClickHouse passwords, webhook URLs).
_CHILD_ENV = frozenset(
    ("HOME", "PATH", "USER", "LOGNAME", "LANG", "TZ", "XDG_RUNTIME_DIR", "XDG_DATA_HOME", "XDG_CONFIG_HOME",
     "PUEUE_CONFIG_PATH")
)  # fmt: skip


def child_env() -> dict[str, str]:
    """The environment of a local child, from the watcher's current one."""
    return {k: v for k, v in os.environ.items() if k in _CHILD_ENV or k.startswith("LC_")}
