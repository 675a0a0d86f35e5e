"""The one command a poll runs on a host, and the reader of what it prints.

A poll is one round trip: ``sh -c SCRIPT pueue-watcher PUEUE DIR KNOWN COMPRESSION READ_STATE HANDOFF PROBES
CONFIG PROFILE``: ``$1`` pueue, ``$2`` the pueue directory ('' = as pueue decides it), ``$3`` the fingerprint
seen last time, ``$4`` the compression, ``$5`` 1 to allow reading the state file, ``$6`` 1 when the watcher
runs on the same machine (local transport) and can read the file itself instead of through a pipe, ``$7`` 1
to read the host probes (load, memory, swap, disk of the pueue directory) in the same round trip, ``$8``
pueue's configuration file ('' = pueue's own lookup), ``$9`` pueue's profile ('' = none). Every configured
value travels as a separate, quoted argument; the script itself is a constant, so no remote or configured
text is ever spliced into shell code. Over SSH, once a host's state is known, the poll first asks the host's
long-lived session (``watcher/remote/session.py``: same header, no payload) and runs SCRIPT only when that
answers "changed". What the payload carries is decoded by ``watcher/remote/payload.py``.

The script prints a header of short text lines, then the payload:

.. code-block:: text

    pueue-watcher-poll 1             marker: anything before it (a noisy login shell) is ignored
    probe-begin … probe-end          host probes: /proc/loadavg, meminfo, vmstat, df (watcher/probes/proc.py)
    nopueue                          the pueue client is not on PATH / not at the configured path
    file state.json 812345 1732780000.123456789 6029313     size, mtime, inode of the state file
    daemon up|down                   pueue.pid names a live process
    unchanged                        (last) the fingerprint equals KNOWN: no payload at all
    handoff /path/to/state.json      (last, local transport only) read the file directly: no pipe
    state gzip|zstd|none             (last) the state file follows, compressed so
    status gzip|zstd|none            (last) ``pueue status --json`` follows; its exit code is on stderr

Why the state file first: ``pueue status`` makes the daemon serialise its whole state while holding the lock
every ``pueue add`` waits on. The file is the same JSON, already written. It is read only while the daemon is
alive, so that a stopped daemon is reported as such (through ``pueue status``'s own error).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from watcher.config import HostConfig
from watcher.errors import BadPollOutput, HostError, PueueUnavailable
from watcher.probes.proc import PROBE_SCRIPT
from watcher.remote.payload import decompress, read_local_state
from watcher.remote.pueue import ERROR_BYTES, pueue_error
from watcher.remote.shell import DAEMON, PUEUE_CALL, PUEUE_DIR, STATE_FILE
from watcher.transport.base import MAX_ANSWER_BYTES

# What a host may print before the payload, by purpose: anything else (a login banner) before the marker;
# the probe block (about 500 bytes: watcher/probes/proc.py); the header lines after it (a handoff's path is
# the longest). A host that sends more is refused here, before any of it is split or decoded.
MAX_PREAMBLE_BYTES = 64 << 10
MAX_PROBE_BYTES = 16 << 10
MAX_HEADER_BYTES = 8 << 10

MARKER = b"pueue-watcher-poll 1\n"

# Kept compact: it is sent on every poll. HEAD works out what to answer (in $b, $n, $l, $u, $t) from SCRIPT's
# arguments; the one-shot SCRIPT and the session's SESSION_SCRIPT differ only in what they do with it.
HEAD = (
    r"""case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + PUEUE_DIR
    + r"""b=
if [ "$o" = 1 ]; then b=$(
pueue_dir=$d
"""
    + PROBE_SCRIPT
    + r""")
fi
n=
command -v "$p" >/dev/null 2>&1 || n=nopueue
"""
    + STATE_FILE
    + r"""l=
[ -n "$f" ] && l="file ${f##*/} $s"
"""
    + DAEMON
    + r"""case $c in
zstd) if command -v zstd >/dev/null 2>&1; then z="zstd -1 -q -c"; else c=gzip z="gzip -1 -c"; fi;;
gzip) z="gzip -1 -c";;
*) c=none z=cat;;
esac
t="status $c"
if [ "$r" = 1 ] && [ -n "$s" ] && [ $u = up ]; then
if [ "$s" = "$k" ]; then t=unchanged
elif [ "$h" = 1 ]; then t="handoff $f"
else case $f in *.gz) t="state gzip" z=cat;; *) t="state $c";; esac
fi
fi
"""
)
SCRIPT = (
    r"""p=$1 d=$2 k=$3 c=$4 r=$5 h=$6 o=$7 cf=$8 pf=$9
"""
    + PUEUE_CALL
    + HEAD
    + r"""printf 'pueue-watcher-poll 1\n%s\n%s\n%s\ndaemon %s\n%s\n' "$b" "$n" "$l" "$u" "$t"
case $t in unchanged|handoff*) exit 0;; state*) exec $z <"$f";; esac
{ P status --json; echo "pueue-watcher-rc $?" >&2; } | $z
"""
)


def poll_argv(host: HostConfig, known: str, *, confirm: bool = False) -> list[str]:
    """The command of one poll of ``host``; ``known`` is the fingerprint seen last time ("" for none).
    ``confirm`` asks pueue itself (``pueue status``) even when the state file could be read."""
    read_state = "1" if host.read_state_file and not confirm else "0"
    handoff = "1" if host.transport == "local" else "0"
    probes = "1" if host.probes else "0"
    return ["sh", "-c", SCRIPT, "pueue-watcher", host.pueue, host.pueue_dir or "", known,
            host.remote_compression, read_state, handoff, probes, host.pueue_config or "",
            host.pueue_profile or ""]  # fmt: skip


@dataclass(frozen=True, slots=True)
class RemoteState:
    """What one poll learned, before the JSON is parsed."""

    kind: str  # "unchanged", "state", "handoff" or "status"
    body: memoryview  # the payload as transferred (a view: no copy); for "handoff", the file's path
    encoding: str  # "gzip", "zstd" or "none"
    fingerprint: str  # "size mtime inode" of the state file, "" when there is none
    state_file: str | None  # "state.json" or "state.json.gz"
    state_file_bytes: int | None
    daemon_up: bool
    pueue_found: bool
    wire_bytes: int  # bytes of stdout, as transferred
    probe_text: str | None = None  # the probe block, when probes were asked for
    wake: str = ""  # after a long poll: the wake marker's fingerprint, "none" when there is none

    def payload(self, limit: int = MAX_ANSWER_BYTES) -> bytes | bytearray | memoryview:
        """The JSON document: decompressed, or read from the local file, at most ``limit`` bytes. CPU-heavy
        for a large state (or a compression bomb, up to its limit), so the poller calls it from a worker
        thread."""
        if self.kind == "handoff":
            return read_local_state(bytes(self.body).decode(), limit)
        return decompress(self.body, self.encoding, limit)


_RC = re.compile(rb"pueue-watcher-rc ([0-9]{1,10})\s*$")  # bounded: int() refuses 4300 digits
_RC_TAIL = 256
_DIGITS = re.compile(r"[0-9]{1,20}")


#: How much of an answer shows whether its header is whole and within its bounds: the preamble, the probe
#: block and the header lines, each at its longest.
HEAD_BYTES = MAX_PREAMBLE_BYTES + len(MARKER) + MAX_PROBE_BYTES + len(b"probe-begin\n") + MAX_HEADER_BYTES


def check_head(stdout: bytearray) -> bool:
    """A :data:`~watcher.transport.base.HeadCheck` of a poll's answer: once :data:`HEAD_BYTES` have come,
    an answer whose header is missing or over its bounds is refused there, without reading the rest (a host
    that prints 64 MiB of header lines costs the watcher 96 KiB, not 64 MiB)."""
    if len(stdout) < HEAD_BYTES:
        return False
    try:
        read_output(bytes(stdout[:HEAD_BYTES]), b"", 0, local=True)
    except BadPollOutput:
        raise
    except HostError:
        pass  # pueue's own failure: the whole answer (and stderr) says which, as usual
    return True


def read_output(
    stdout: bytes | bytearray,
    stderr: bytes | bytearray,
    exit_status: int,
    *,
    local: bool = False,
    pueue: str | None = None,
) -> RemoteState:
    """Split the header from the payload, decompress it, and turn pueue's failures into errors.

    ``local`` says that the answer comes from the local transport: only then is a ``handoff`` (a path the
    watcher opens on its own machine) accepted. A remote host that answers one is refused: it would get the
    watcher to read any file of the watcher's machine. Every part of the header is bounded (MAX_*_BYTES)
    and looked at only up to its bound, so that a host printing without end costs the event loop nothing.
    ``pueue`` is the configured client, named when the host does not have it."""
    start = stdout.find(MARKER, 0, MAX_PREAMBLE_BYTES + len(MARKER))
    if start < 0:
        raise BadPollOutput(f"unexpected answer from the host (exit {exit_status}): {pueue_error(stderr)}")
    pos = start + len(MARKER)
    fields: dict[str, list[str]] = {}
    kind = ""
    probe_text = None
    if stdout.startswith(b"probe-begin\n", pos):
        end = stdout.find(b"\nprobe-end\n", pos, pos + MAX_PROBE_BYTES)
        if end < 0:
            cut = len(stdout) < pos + MAX_PROBE_BYTES
            why = "is cut short" if cut else f"is over {MAX_PROBE_BYTES >> 10} KiB"
            raise BadPollOutput(f"the probe block {why} (exit {exit_status}): {pueue_error(stderr)}")
        pos, start_of_block = end + len(b"\nprobe-end\n"), pos
        probe_text = stdout[start_of_block:pos].decode("utf-8", "replace")  # markers included
    header_end = pos + MAX_HEADER_BYTES
    while not kind:
        end = stdout.find(b"\n", pos, header_end)
        if end < 0:
            if len(stdout) >= header_end:
                too_long = f"the poll header is over {MAX_HEADER_BYTES >> 10} KiB"
                raise BadPollOutput(f"{too_long} (exit {exit_status})")
            raise BadPollOutput(f"the poll output ends early (exit {exit_status}): {pueue_error(stderr)}")
        word, *rest = stdout[pos:end].decode("utf-8", "replace").split(" ")
        pos = end + 1
        if word in ("unchanged", "changed", "state", "status", "handoff"):
            kind = word
        fields[word] = rest
    if kind == "handoff" and not local:
        raise BadPollOutput("the host answered a local-file handoff over SSH (only the local transport may)")
    encoding = fields[kind][0] if fields[kind] and kind != "handoff" else "none"
    file_fields = fields.get("file", [])
    state_file, fingerprint, size = None, "", None
    if file_fields:
        state_file = file_fields[0]
        fingerprint = " ".join(file_fields[1:])
        # isdigit() alone also accepts '²' and '٣', which int() refuses.
        size = int(file_fields[1]) if len(file_fields) > 1 and _DIGITS.fullmatch(file_fields[1]) else None
    pueue_found = "nopueue" not in fields
    if kind == "status":
        _raise_for_pueue(stderr, pueue_found, pueue)
    handoff_path = " ".join(fields.get("handoff", [])).encode()
    body = memoryview(handoff_path) if kind == "handoff" else memoryview(stdout)[pos:]
    return RemoteState(
        kind=kind,
        body=body,
        encoding=encoding,
        probe_text=probe_text,
        fingerprint=fingerprint,
        state_file=state_file,
        state_file_bytes=size,
        daemon_up=fields.get("daemon") == ["up"],
        pueue_found=pueue_found,
        wire_bytes=len(stdout),
        wake=" ".join(fields.get("wake", []))[:200],
    )


def _raise_for_pueue(stderr: bytes | bytearray, pueue_found: bool, pueue: str | None = None) -> None:
    # The script's own line is the last of stderr: look for it at the end only.
    match = _RC.search(stderr, max(len(stderr) - _RC_TAIL, 0))
    rc = int(match.group(1)) if match else None
    message = stderr[: min(match.start() if match else len(stderr), ERROR_BYTES)]  # all pueue_error reads
    if not pueue_found or rc == 127:
        raise PueueUnavailable(f"the pueue client was not found on the host{_looked_for(pueue)}")
    if rc != 0:
        detail = pueue_error(message) or "no message"
        raise PueueUnavailable(f"pueue status failed (exit {rc}): {detail}")


def _looked_for(pueue: str | None) -> str:
    """Where the poll looked for the client: the configured path, or the session's PATH for a bare name."""
    if pueue is None:
        return ""
    if "/" in pueue:
        return f" at {pueue}"
    return f" ({pueue!r} is not on the PATH of a non-interactive session: set pueue to its full path)"
