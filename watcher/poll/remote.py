"""The one command a poll runs on a host, and the reader of what it prints.

A poll is one round trip: ``sh -c SCRIPT pueue-watcher PUEUE DIR KNOWN COMPRESSION READ_STATE``. Every
configured value travels as a separate, quoted argument; the script itself is a constant, so no remote or
configured text is ever spliced into shell code.

The script prints a header of short text lines, then the payload:

.. code-block:: text

    pueue-watcher-poll 1             marker: anything before it (a noisy login shell) is ignored
    nopueue                          the pueue client is not on PATH / not at the configured path
    file state.json 812345 1732780000.123456789 6029313     size, mtime, inode of the state file
    daemon up|down                   pueue.pid names a live process
    unchanged                        (last) the fingerprint equals KNOWN: no payload at all
    state gzip|zstd|none             (last) the state file follows, compressed so
    status gzip|zstd|none            (last) ``pueue status --json`` follows; its exit code is on stderr

Why the state file first: ``pueue status`` makes the daemon serialise its whole state while holding the lock
every ``pueue add`` waits on. The file is the same JSON, already written. It is read only while the daemon is
alive, so that a stopped daemon is reported as such (through ``pueue status``'s own error).
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass

from watcher.config import HostConfig
from watcher.errors import BadPollOutput, PueueUnavailable

MARKER = b"pueue-watcher-poll 1\n"

# Kept compact: it is sent on every poll. $1 pueue, $2 pueue dir ('' = pueue's default), $3 the fingerprint
# seen last time, $4 compression, $5 1 to allow reading the state file.
SCRIPT = r"""p=$1 d=$2 k=$3 c=$4 r=$5
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
case $d in "") d=${XDG_DATA_HOME:-$HOME/.local/share}/pueue;; "~/"*) d=$HOME/${d#"~/"};; esac
echo pueue-watcher-poll 1
command -v "$p" >/dev/null 2>&1 || echo nopueue
f=
for x in "$d/state.json.gz" "$d/state.json"; do
if [ -r "$x" ] && { [ -z "$f" ] || [ "$x" -nt "$f" ]; }; then f=$x; fi
done
s=
if [ -n "$f" ]; then
s=$(stat -L -c '%s %.9Y %i' "$f" 2>/dev/null || stat -L -f '%z %Fm %i' "$f" 2>/dev/null)
echo "file ${f##*/} $s"
fi
u=down
i=$(cat "$d/pueue.pid" 2>/dev/null)
case $i in ''|*[!0-9]*) ;; *) if kill -0 "$i" 2>/dev/null || [ -d "/proc/$i" ]; then u=up; fi;; esac
echo "daemon $u"
case $c in
zstd) if command -v zstd >/dev/null 2>&1; then z="zstd -1 -q -c"; else c=gzip z="gzip -1 -c"; fi;;
gzip) z="gzip -1 -c";;
*) c=none z=cat;;
esac
if [ "$r" = 1 ] && [ -n "$s" ] && [ $u = up ]; then
if [ "$s" = "$k" ]; then echo unchanged; exit 0; fi
case $f in *.gz) echo "state gzip"; exec cat "$f";; esac
echo "state $c"; exec $z <"$f"
fi
echo "status $c"
{ "$p" status --json; echo "pueue-watcher-rc $?" >&2; } | $z
"""


@dataclass(frozen=True, slots=True)
class RemoteState:
    """What one poll learned, before the JSON is parsed."""

    kind: str  # "unchanged", "state" or "status"
    payload: bytes | memoryview  # decompressed JSON (empty when unchanged); a view avoids a copy
    fingerprint: str  # "size mtime inode" of the state file, "" when there is none
    state_file: str | None  # "state.json" or "state.json.gz"
    state_file_bytes: int | None
    daemon_up: bool
    pueue_found: bool
    wire_bytes: int  # bytes of stdout, as transferred


def poll_argv(host: HostConfig, known: str) -> list[str]:
    """The command of one poll of ``host``; ``known`` is the fingerprint seen last time ("" for none)."""
    read_state = "1" if host.read_state_file else "0"
    return ["sh", "-c", SCRIPT, "pueue-watcher", host.pueue, host.pueue_dir or "", known,
            host.remote_compression, read_state]  # fmt: skip


_RC = re.compile(rb"pueue-watcher-rc (\d+)\s*$")


def read_output(stdout: bytes | bytearray, stderr: bytes | bytearray, exit_status: int) -> RemoteState:
    """Split the header from the payload, decompress it, and turn pueue's failures into errors."""
    start = stdout.find(MARKER)
    if start < 0:
        raise BadPollOutput(f"unexpected answer from the host (exit {exit_status}): {_first_line(stderr)}")
    pos = start + len(MARKER)
    fields: dict[str, list[str]] = {}
    kind = ""
    while not kind:
        end = stdout.find(b"\n", pos)
        if end < 0:
            raise BadPollOutput(f"the poll output ends early (exit {exit_status}): {_first_line(stderr)}")
        word, *rest = stdout[pos:end].decode("utf-8", "replace").split(" ")
        pos = end + 1
        if word in ("unchanged", "state", "status"):
            kind = word
        fields[word] = rest
    encoding = fields[kind][0] if fields[kind] else "none"
    file_fields = fields.get("file", [])
    state_file, fingerprint, size = None, "", None
    if file_fields:
        state_file = file_fields[0]
        fingerprint = " ".join(file_fields[1:])
        size = int(file_fields[1]) if len(file_fields) > 1 and file_fields[1].isdigit() else None
    pueue_found = "nopueue" not in fields
    if kind == "status":
        _raise_for_pueue(stderr, pueue_found)
    payload = b"" if kind == "unchanged" else _decompress(memoryview(stdout)[pos:], encoding)
    return RemoteState(
        kind=kind,
        payload=payload,
        fingerprint=fingerprint,
        state_file=state_file,
        state_file_bytes=size,
        daemon_up=fields.get("daemon") == ["up"],
        pueue_found=pueue_found,
        wire_bytes=len(stdout),
    )


def _raise_for_pueue(stderr: bytes | bytearray, pueue_found: bool) -> None:
    match = _RC.search(stderr)
    rc = int(match.group(1)) if match else None
    message = stderr[: match.start()] if match else stderr
    if not pueue_found or rc == 127:
        raise PueueUnavailable("the pueue client was not found on the host")
    if rc != 0:
        detail = _first_line(message) or "no message"
        raise PueueUnavailable(f"pueue status failed (exit {rc}): {detail}")


def _decompress(data: memoryview, encoding: str) -> bytes | memoryview:
    try:
        if encoding == "gzip":
            return zlib.decompress(data, wbits=31)
        if encoding == "zstd":
            import zstandard  # only hosts configured for zstd need it

            return zstandard.ZstdDecompressor().decompressobj().decompress(data)
    except Exception as exc:
        raise BadPollOutput(f"cannot decompress the {encoding} payload: {exc}") from None
    if encoding != "none":
        raise BadPollOutput(f"unknown payload encoding {encoding!r}")
    return data


def _first_line(data: bytes | bytearray, limit: int = 200) -> str:
    """The most telling line of an error stream: pueue prints 'Error: …' and then a cause chain."""
    lines = [" ".join(line.split()) for line in data.decode("utf-8", "replace").splitlines()]
    lines = [line for line in lines if line]
    if not lines:
        return ""
    text = " / ".join(lines[:3])
    text = "".join(ch for ch in text if ch.isprintable())
    return text if len(text) <= limit else text[:limit] + "…"
