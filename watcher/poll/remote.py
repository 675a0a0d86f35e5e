"""The one command a poll runs on a host, and the reader of what it prints.

A poll is one round trip: ``sh -c SCRIPT pueue-watcher PUEUE DIR KNOWN COMPRESSION READ_STATE ...``. Every
configured value travels as a separate, quoted argument; the script itself is a constant, so no remote or
configured text is ever spliced into shell code. Over SSH, once a host's state is known, the poll first asks
the host's long-lived SESSION_SCRIPT (same header, no payload) and runs SCRIPT only when that answers
"changed".

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

import errno
import mmap
import os
import re
import shlex
import stat
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from watcher.config import HostConfig
from watcher.errors import BadPollOutput, HostError, PueueUnavailable
from watcher.probes.proc import PROBE_SCRIPT
from watcher.transport import base
from watcher.transport.base import CHUNK, MAX_ANSWER_BYTES

# What a host may print before the payload, by purpose: anything else (a login banner) before the marker;
# the probe block (about 500 bytes: watcher/probes/proc.py); the header lines after it (a handoff's path is
# the longest). A host that sends more is refused here, before any of it is split or decoded.
MAX_PREAMBLE_BYTES = 64 << 10
MAX_PROBE_BYTES = 16 << 10
MAX_HEADER_BYTES = 8 << 10
# How much of a hygiene command's stdout is looked at: the script's own lines (CLEAN_DEFERRED, BULK_*) come
# first, behind a login banner at most.
REPLY_BYTES = 64 << 10

MARKER = b"pueue-watcher-poll 1\n"

# Kept compact: it is sent on every poll. $1 pueue, $2 pueue dir ('' = as pueue decides it), $3 the
# fingerprint seen last time, $4 compression, $5 1 to allow reading the state file, $6 1 when the watcher runs
# on the same machine (local transport) and can read the file itself instead of through a pipe, $7 1 to read
# the host probes (load, memory, swap, disk of the pueue directory) in the same round trip, $8 pueue's
# configuration file ('' = pueue's own lookup), $9 pueue's profile ('' = none).
# _HEAD works out what to answer (in $b, $n, $l, $u, $t); the one-shot SCRIPT and the SESSION_SCRIPT below
# differ only in what they do with it.
#
# _PUEUE_DIR finds pueue's paths as pueue does (pueue_lib/src/settings.rs, 3.4.1 and 4.0.4), from $cf, $pf
# and $d (the host's pueue_dir, '' = pueue's): the configuration file (-c, else $PUEUE_CONFIG_PATH, else
# ~/.config/pueue/pueue.yml, macOS's ~/Library/Application Support/pueue/pueue.yml, ./pueue.yml); from its
# `shared` section (or, with a profile, the profile's `shared`, which replaces it whole) pueue_directory,
# runtime_directory and pid_path, read with shell builtins (block-style YAML as pueue writes it; at most 500
# lines). Afterwards: $d the pueue directory, $rt the runtime directory (shared.runtime_directory, else
# $XDG_RUNTIME_DIR, else $d) and $pp the pid file (shared.pid_path, else $rt/pueue.pid).
_PUEUE_DIR = r"""case $cf in "~/"*) cf=$HOME/${cf#"~/"};; esac
y=${cf:-${PUEUE_CONFIG_PATH-}}
if [ -z "$y" ]; then
for x in "${XDG_CONFIG_HOME:-$HOME/.config}/pueue/pueue.yml" \
"$HOME/Library/Application Support/pueue/pueue.yml" pueue.yml; do if [ -f "$x" ]; then y=$x; break; fi; done
fi
yd= yr= yp=
if [ -n "$y" ] && [ -f "$y" ] && [ -r "$y" ]; then
yt= yq= yw= j=0
while IFS= read -r x || [ -n "$x" ]; do
j=$((j+1)); [ $j -gt 500 ] && break
v=${x#"${x%%[! ]*}"}; i=$((${#x}-${#v}))
case $v in ""|"#"*|-*) continue;; esac
w=${v%%:*} v=${v#*:}
case $i in
0) yt=$w yq= yw=; continue;;
2) if [ "$yt" = profiles ]; then yq=$w yw=; continue; fi; [ -z "$pf" ] && [ "$yt" = shared ] || continue;;
4) [ "$yt" = profiles ] && yw=$w; continue;;
6) [ -n "$pf" ] && [ "$yt" = profiles ] && [ "$yq" = "$pf" ] && [ "$yw" = shared ] || continue;;
*) continue;;
esac
case $v in *" #"*) v=${v%%" #"*};; esac
v=${v#"${v%%[! ]*}"}; v=${v%"${v##*[! ]}"}
case $v in \'*\'|\"*\") v=${v#?}; v=${v%?};; null|"~") v=;; esac
case $w in pueue_directory) yd=$v;; runtime_directory) yr=$v;; pid_path) yp=$v;; esac
done <"$y"
fi
case $yd in "~") yd=$HOME;; "~/"*) yd=$HOME/${yd#"~/"};; esac
case $yr in "~") yr=$HOME;; "~/"*) yr=$HOME/${yr#"~/"};; esac
case $yp in "~") yp=$HOME;; "~/"*) yp=$HOME/${yp#"~/"};; esac
case $d in "") d=$yd;; "~/"*) d=$HOME/${d#"~/"};; esac
if [ -z "$d" ]; then
if [ -d "$HOME/Library/Application Support" ]; then d="$HOME/Library/Application Support/pueue"
else d=${XDG_DATA_HOME:-$HOME/.local/share}/pueue; fi
fi
rt=${yr:-${XDG_RUNTIME_DIR:-$d}} pp=$yp
[ -n "$pp" ] || pp=$rt/pueue.pid
"""
# The state file pueue wrote last ($f: state.json.gz or state.json, '' for none) and its fingerprint ($s:
# "size mtime inode", '' for none).
_STATE_FILE = r"""f= s=
for x in "$d/state.json.gz" "$d/state.json"; do
if [ -r "$x" ] && { [ -z "$f" ] || [ "$x" -nt "$f" ]; }; then f=$x; fi
done
[ -n "$f" ] && s=$(stat -L -c '%s %.9Y %i' "$f" 2>/dev/null || stat -L -f '%z %Fm %i' "$f" 2>/dev/null)
"""
# Is the daemon up? Its pid file is looked for in the runtime directory first, then beside the state file (a
# daemon started without the $XDG_RUNTIME_DIR this login has). The pid must name a live process called
# pueued: a stale pid file whose pid was reused by another process does not count (/proc/PID/comm; where
# there is no /proc, macOS, `ps`).
_DAEMON = r"""u=down
for x in "$pp" "$d/pueue.pid"; do
i=
[ -r "$x" ] && IFS= read -r i <"$x"
case $i in ''|*[!0-9]*) continue;; esac
if [ -r "/proc/$i/comm" ]; then IFS= read -r j <"/proc/$i/comm" || true
elif [ ! -d /proc/self ] && kill -0 "$i" 2>/dev/null; then j=$(ps -p "$i" -o comm= 2>/dev/null)
else j=; fi
case $j in *pueued*) u=up; break;; esac
done
"""
# `P ARGS…` runs the pueue client with the host's configuration file and profile, if any.
_PUEUE_CALL = r"""P() {
if [ -n "$pf" ]; then set -- --profile "$pf" "$@"; fi
if [ -n "$cf" ]; then set -- -c "$cf" "$@"; fi
"$p" "$@"
}
"""
_HEAD = (
    r"""case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + _PUEUE_DIR
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
    + _STATE_FILE
    + r"""l=
[ -n "$f" ] && l="file ${f##*/} $s"
"""
    + _DAEMON
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
    + _PUEUE_CALL
    + _HEAD
    + r"""printf 'pueue-watcher-poll 1\n%s\n%s\n%s\ndaemon %s\n%s\n' "$b" "$n" "$l" "$u" "$t"
case $t in unchanged|handoff*) exit 0;; state*) exec $z <"$f";; esac
{ P status --json; echo "pueue-watcher-rc $?" >&2; } | $z
"""
)

# A long-lived session (SSH only): one shell per host that answers a poll per request, so that an unchanged
# queue costs the host neither a new SSH session nor a login shell, only this loop's subshell and two
# processes (stat, df). A request is ten lines: a token, then $1 to $9 of SCRIPT (no value may hold a
# newline; session_request checks). The answer is SCRIPT's header, with "changed" in place of anything that
# would carry a payload, then "pueue-watcher-end TOKEN"; the watcher then fetches the payload with SCRIPT.
SESSION_SCRIPT = (
    r"""pw_os=$(uname -s 2>/dev/null) pw_cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)
while IFS= read -r e && IFS= read -r p && IFS= read -r d && IFS= read -r k && IFS= read -r c &&
IFS= read -r r && IFS= read -r h && IFS= read -r o && IFS= read -r cf && IFS= read -r pf; do (
"""
    + _HEAD
    + r"""case $t in unchanged) ;; *) t=changed;; esac
printf 'pueue-watcher-poll 1\n%s\n%s\n%s\ndaemon %s\n%s\npueue-watcher-end %s\n' "$b" "$n" "$l" "$u" "$t" "$e"
) </dev/null; done
"""
)
SESSION_END = b"pueue-watcher-end "


# Hygiene, in one round trip. $1 pueue, $2 the mode, $3 the pueue directory, $4 the state file's fingerprint
# the plan was made from ('' when unknown), $5 pueue's configuration file and $6 its profile ('' = none), $7
# the number of Done tasks in the state file the plan was made from ('' when unknown), then the groups.
# Modes: "host" runs one `pueue clean -s` of the whole host, then `pueue clean --group=G` for each group named
# (none, unless failed tasks are to go too); "successful" runs `pueue clean -s --group=G` and "all"
# `pueue clean --group=G` for each group named. Why one whole-host clean rather than one per group: pueued's
# clean scans every task for each Done task under its lock, before it looks at the group, so each per-group
# clean costs as much as a whole-host one (watcher/hygiene.py; README, "State hygiene").
# Each group name is its own argument; nothing is spliced into the script. A name is attached to its option
# (`--group=NAME`): pueue (clap) would read a name that starts with "-" as an option of its own.
#
# The guard: when a task finished since the plan, nothing is cleaned and the script says so: `pueue clean`
# would remove a finished task the watcher has never seen. It counts the Done tasks of the state file
# (`"status":{"Done"`: that byte sequence cannot occur inside a JSON string, where a quote is escaped, and
# `"prev_status"` (3.4.1) does not match it) and compares the count with the plan's ($7): a task that finished
# since is one more; tasks added meanwhile (queued, running) change nothing, so a host that keeps receiving
# `pueue add` is still cleaned. Without a count (or a grep), the fingerprint ($4) stands in: any change
# defers. The check narrows the window from the length of a cycle to the few milliseconds until pueue
# receives the command (watcher/hygiene.py vanished_successes covers those).
CLEAN_SCRIPT = (
    r"""p=$1 m=$2 d=$3 k=$4 cf=$5 pf=$6 n=$7
shift 7
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + _PUEUE_CALL
    + _PUEUE_DIR
    + _STATE_FILE
    + r"""command -v grep >/dev/null 2>&1 || n=
if [ -n "$n" ]; then
case $f in
*.gz) x=$(gzip -dc "$f" | grep -o '"status":{"Done"' | wc -l);;
?*) x=$(grep -o '"status":{"Done"' "$f" | wc -l);;
*) x=;;
esac
x=${x##* }
if [ "$x" != "$n" ]; then echo "pueue-watcher-clean-deferred done $x, planned $n"; exit 0; fi
elif [ -n "$k" ] && [ "$s" != "$k" ]; then echo pueue-watcher-clean-deferred; exit 0; fi
if [ "$m" = host ]; then P clean -s || exit; m=all; fi
for g do
if [ "$m" = all ]; then P clean --group="$g" || exit; else P clean -s --group="$g" || exit; fi
done
"""
)
CLEAN_DEFERRED = b"pueue-watcher-clean-deferred"

# Bulk removal (hygiene scope "bulk"), one chunk per round trip: $1 pueue, $2 the pueue directory, $3 pueue's
# configuration file, $4 its profile, then one ID=CREATED argument per candidate (CREATED: the task's
# created_at to the second, as written in the state file). `pueue remove` checks neither the status nor the
# identity of a task, so the script first looks each candidate up in the state file: pueue writes compact
# JSON, each task starting `"ID":{"id":ID,"created_at":"…` (3.4.1 and 4.0.4), and that sequence cannot occur
# inside a JSON string. Only the ids found with their own created_at are removed: a task id that was reused
# after someone else's clean (pueue numbers from max id + 1, from 0 once empty) has another created_at and
# stays. The patterns are built here from the arguments (nothing is spliced into the script). A compressed
# state file (state.json.gz) or a grep without -o / -F / -f - makes the script say so (BULK_UNAVAILABLE), and
# the watcher plans a `pueue clean` instead. pueue's answer when it keeps some of the ids (a task an
# unfinished one depends on, "The command failed for tasks: …") is no failure: the next poll shows them.
REMOVE_SCRIPT = (
    r"""p=$1 d=$2 cf=$3 pf=$4
shift 4
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + _PUEUE_CALL
    + _PUEUE_DIR
    + _STATE_FILE
    + r"""case $f in *.json) ;; *) echo "pueue-watcher-bulk-unavailable state file ${f##*/}"; exit 0;; esac
i=$(for a do printf '"%s":{"id":%s,"created_at":"%s\n' "${a%%=*}" "${a%%=*}" "${a#*=}"; done |
grep -oF -f - "$f")
case $? in 0|1) ;; *) echo "pueue-watcher-bulk-unavailable grep"; exit 0;; esac
set --
for x in $i; do x=${x#\"}; set -- "$@" "${x%%\"*}"; done
echo "pueue-watcher-bulk-matched $#"
[ $# -gt 0 ] || exit 0
o=$(P remove "$@" 2>&1 </dev/null) || case $o in
*"failed for tasks"*) ;;
*) printf '%s\n' "$o" >&2; exit 1;;
esac
"""
)
BULK_UNAVAILABLE = b"pueue-watcher-bulk-unavailable"
BULK_MATCHED = re.compile(rb"pueue-watcher-bulk-matched ([0-9]{1,9})")

# sshd hands the whole remote command to the login shell as one argument, which Linux caps at 128 KiB
# (MAX_ARG_STRLEN), and a NUL would cut it short: values that cannot travel are left out.
ARGUMENTS_BUDGET = 64 * 1024


def fitting_arguments(values: Sequence[str], budget: int = ARGUMENTS_BUDGET) -> list[str]:
    """The values, in order, that can travel as arguments of one remote command: no NUL, and no more than
    ``budget`` bytes once quoted, all of them together."""
    chosen: list[str] = []
    for value in values:
        size = len(shlex.quote(value).encode(errors="surrogatepass")) + 1
        if "\0" not in value and size <= budget:
            chosen.append(value)
            budget -= size
    return chosen


def clean_argv(
    host: HostConfig,
    groups: Sequence[str],
    mode: str,
    fingerprint: str = "",
    *,
    whole_host: bool = False,
    done: int | None = None,
) -> list[str]:
    """The clean, done only while no task finished since the plan (the state file holds ``done`` Done
    tasks; when that is unknown, its fingerprint is still ``fingerprint``): ``pueue clean`` (``-s`` unless
    ``mode`` is "all") of each of ``groups``; with ``whole_host``, one ``pueue clean -s`` of the whole host
    first, and then ``pueue clean --group=G`` of each of ``groups``."""
    count = "" if done is None else str(done)
    where = [host.pueue, "host" if whole_host else mode, host.pueue_dir or "", fingerprint,
             host.pueue_config or "", host.pueue_profile or "", count]  # fmt: skip
    return ["sh", "-c", CLEAN_SCRIPT, "pueue-watcher-clean", *where, *groups]


def remove_argv(host: HostConfig, candidates: Sequence[str]) -> list[str]:
    """One chunk of a bulk removal: ``pueue remove`` of those ``candidates`` (``ID=CREATED``) that the state
    file still holds as the same task (REMOVE_SCRIPT)."""
    where = [host.pueue, host.pueue_dir or "", host.pueue_config or "", host.pueue_profile or ""]
    return ["sh", "-c", REMOVE_SCRIPT, "pueue-watcher-remove", *where, *candidates]


# Any other pueue command (`pueue start -g G`, `pueue pause -g G`): the arguments follow the binary.
PUEUE_SCRIPT = (
    r"""p=$1 cf=$2 pf=$3
shift 3
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
case $cf in "~/"*) cf=$HOME/${cf#"~/"};; esac
"""
    + _PUEUE_CALL
    + r"""P "$@"
"""
)


def pueue_argv(host: HostConfig, *args: str) -> list[str]:
    """``pueue ARGS…`` on the host, with its configuration file and profile, if any."""
    where = [host.pueue, host.pueue_config or "", host.pueue_profile or ""]
    return ["sh", "-c", PUEUE_SCRIPT, "pueue-watcher-pueue", *where, *args]


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

    def payload(self, limit: int = MAX_ANSWER_BYTES) -> bytes | bytearray | memoryview:
        """The JSON document: decompressed, or read from the local file, at most ``limit`` bytes. CPU-heavy
        for a large state (or a compression bomb, up to its limit), so the poller calls it from a worker
        thread."""
        if self.kind == "handoff":
            return read_local_state(bytes(self.body).decode(), limit)
        return _decompress(self.body, self.encoding, limit)


def poll_argv(host: HostConfig, known: str, *, confirm: bool = False) -> list[str]:
    """The command of one poll of ``host``; ``known`` is the fingerprint seen last time ("" for none).
    ``confirm`` asks pueue itself (``pueue status``) even when the state file could be read."""
    read_state = "1" if host.read_state_file and not confirm else "0"
    handoff = "1" if host.transport == "local" else "0"
    probes = "1" if host.probes else "0"
    return ["sh", "-c", SCRIPT, "pueue-watcher", host.pueue, host.pueue_dir or "", known,
            host.remote_compression, read_state, handoff, probes, host.pueue_config or "",
            host.pueue_profile or ""]  # fmt: skip


def session_argv() -> list[str]:
    """The command that starts a host's long-lived poll session."""
    return ["sh", "-c", SESSION_SCRIPT, "pueue-watcher-session"]


def session_request(host: HostConfig, known: str, token: str) -> bytes | None:
    """One request to the session: the token, then SCRIPT's arguments, a line each. None when a value holds
    a newline (it cannot travel as a line): such a host is polled with SCRIPT alone."""
    values = [token, *poll_argv(host, known)[4:]]
    if any("\n" in v or "\r" in v for v in values):
        return None
    return ("\n".join(values) + "\n").encode()


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
    )


def read_local_state(path: str, limit: int | None = None) -> bytes | bytearray | memoryview:
    """The state file itself, on this machine (the ``handoff`` answer of the local transport).

    A plain file is mapped rather than read: the parser works on the page cache directly, without a 76 MB
    copy. pueue replaces the file by rename, so the mapped inode never changes under us. The pages are not
    populated up front: the parser touches them a few MB at a time and hands them back as it goes
    (watcher/pueue/parse.py ``_decode_mapped``), so that the whole file is never resident at once.

    Only a regular file is read, never through a symbolic link (O_NOFOLLOW), and the open itself cannot block
    (O_NONBLOCK: a FIFO would otherwise hold a worker thread until a writer comes). A ``.gz`` file
    decompresses to at most ``limit`` bytes (default MAX_ANSWER_BYTES), as a remote payload does."""
    limit = base.MAX_ANSWER_BYTES if limit is None else limit
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        why = "it is a symbolic link" if exc.errno == errno.ELOOP else exc.strerror or str(exc)
        raise BadPollOutput(f"cannot read {path}: {why}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise BadPollOutput(f"cannot read {path}: not a regular file")
        if info.st_size == 0:
            return b""
        mapped = mmap.mmap(fd, 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
    except OSError as exc:
        raise BadPollOutput(f"cannot read {path}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)  # a mapping keeps its own reference to the file
    if path.endswith(".gz"):
        with mapped, memoryview(mapped) as view:
            return _decompress(view, "gzip", limit)
    return memoryview(mapped)


def release(payload: bytes | bytearray | memoryview) -> None:
    """Unmap a mapped state file now rather than whenever the garbage collector gets to it."""
    if isinstance(payload, memoryview):
        owner = payload.obj
        payload.release()
        if isinstance(owner, mmap.mmap):
            owner.close()


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


def _decompress(
    data: memoryview, encoding: str, limit: int = MAX_ANSWER_BYTES
) -> bytes | bytearray | memoryview:
    """The payload, decompressed; more than ``limit`` bytes of output (a compression bomb) is refused."""
    try:
        if encoding == "gzip":
            inflater = zlib.decompressobj(wbits=31)
            out: bytes | bytearray = inflater.decompress(data, limit + 1)
        elif encoding == "zstd":
            import zstandard  # only hosts configured for zstd need it

            # Read in chunks: the frame's content size is unknown (zstd -c from a pipe), and a bomb must be
            # stopped after `limit` bytes, not buffered whole.
            out = bytearray()
            with zstandard.ZstdDecompressor().stream_reader(data, read_across_frames=True) as reader:
                while len(out) <= limit and (chunk := reader.read(CHUNK)):
                    out += chunk
        elif encoding == "none":
            return data
        else:
            raise BadPollOutput(f"unknown payload encoding {encoding!r}")
    except BadPollOutput:
        raise
    except Exception as exc:
        raise BadPollOutput(f"cannot decompress the {encoding} payload: {exc}") from None
    if len(out) > limit:
        raise BadPollOutput(f"the {encoding} payload decompresses to more than {base.size_text(limit)}")
    return out


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
