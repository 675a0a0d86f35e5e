"""Any pueue command on a host (``pueue start -g G``, ``pueue pause -g G``), and pueue's errors as one line.

``sh -c PUEUE_SCRIPT pueue-watcher-pueue PUEUE CONFIG PROFILE ARG…``: the arguments follow the binary; the
client runs with the host's configuration file and profile, if any ('' = none). Its exit status and output
are pueue's own: :func:`command_error` reads why it failed from either stream.
"""

from __future__ import annotations

import re

from watcher.config import HostConfig
from watcher.remote.shell import PUEUE_CALL

PUEUE_SCRIPT = (
    r"""p=$1 cf=$2 pf=$3
shift 3
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
case $cf in "~/"*) cf=$HOME/${cf#"~/"};; esac
"""
    + PUEUE_CALL
    + r"""P "$@"
"""
)


def pueue_argv(host: HostConfig, *args: str) -> list[str]:
    """``pueue ARGS…`` on the host, with its configuration file and profile, if any."""
    where = [host.pueue, host.pueue_config or "", host.pueue_profile or ""]
    return ["sh", "-c", PUEUE_SCRIPT, "pueue-watcher-pueue", *where, *args]


def command_error(stdout: bytes | bytearray, stderr: bytes | bytearray) -> str:
    """Why a pueue command failed, as one line: pueue 4 says so on stderr, while pueue 3.4 prints a request
    the daemon refused (``Group x doesn't exists…``) on stdout."""
    return pueue_error(stderr) or pueue_error(stdout) or "no message"


_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")
_CHAIN_NUMBER = re.compile(r"^\d+:\s*")


# pueue's cause chains are a few hundred bytes; only this much of a message is looked at, however long it is.
ERROR_BYTES = 8 << 10


def pueue_error(data: bytes | bytearray, limit: int = 300) -> str:
    """Pueue's error as one line. pueue prints an anyhow (v3) or color-eyre (v4, coloured) cause chain:
    ``Error: A`` / ``Caused by:`` / ``0: B`` / ``1: C`` … then, in v4, ``Location:`` and backtrace hints.
    Only the first ERROR_BYTES are read, and reading stops once the line is longer than ``limit``: the rest
    of a flood is never decoded or split."""
    parts: list[str] = []
    size = -2  # the length of ": ".join(parts)
    for raw in _ANSI.sub("", data[:ERROR_BYTES].decode("utf-8", "replace")).splitlines():
        line = " ".join(raw.split())
        if line.startswith(("Location:", "Backtrace omitted", "Run with RUST_BACKTRACE")):
            break
        line = _CHAIN_NUMBER.sub("", line.removeprefix("Error:").strip())
        if line and line != "Caused by:":
            parts.append("".join(ch for ch in line.rstrip(":").removesuffix(".") if ch.isprintable()))
            size += len(parts[-1]) + 2
            if size > limit:
                break
    text = ": ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"
