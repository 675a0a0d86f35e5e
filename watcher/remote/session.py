"""A long-lived poll session (SSH only): one shell per host that answers a poll per request.

An unchanged queue then costs the host neither a new SSH session nor a login shell, only this loop's
subshell and two processes (stat, df).

``sh -c SESSION_SCRIPT pueue-watcher-session`` reads requests on stdin. A request is ten lines: a token,
then ``$1`` to ``$9`` of the poll's SCRIPT (``watcher/remote/poll.py``; no value may hold a newline, which
:func:`session_request` checks). The answer is SCRIPT's header, with ``changed`` in place of anything that
would carry a payload, then ``pueue-watcher-end TOKEN``; the watcher then fetches the payload with SCRIPT.
The system name and CPU count are asked once, at the start (``pw_os``, ``pw_cpus``).

**A long poll.** The token line may carry a number of seconds after a space (``TOKEN 300``): when the state
file is unchanged, the session then waits, up to that long, for it to change before it answers. Three ways to
wait, cheapest first (``./dev bench long-poll`` measures each):

* ``inotifywait`` on the pueue directory, where the host has it: one wait of at most :data:`WAKE_CHECK`
  seconds, then one ``stat`` of the fingerprint (an event that falls between two waits is seen at the next
  ``stat``);
* else the shell's builtin ``[ FILE -nt REF ]``, every 2 s, against a reference file the session made with
  ``mktemp`` (removed when it ends) and touches when a wait begins; a ``stat`` every 10 s besides (a file
  system whose clock ticks coarsely could give a write the reference's own time);
* else (no ``mktemp``) the fingerprint, by ``stat``, once a second.

The marker file ``WAKE_MARKER`` beside the state file, touched by pueue's ``callback``, wakes it too, for the
changes pueue does not save (a DependencyFailed ending); the answer is then ``changed`` though the file is
not, and the watcher asks pueue itself (``watcher/poll/poller.py``). The marker's fingerprint as the last
wait left it comes with the next request (``TOKEN 300 FINGERPRINT``): a touch between two waits wakes the
next one at once.
"""

from __future__ import annotations

from watcher.config import HostConfig
from watcher.remote.poll import HEAD, poll_argv

#: The file beside pueue's state that a pueue ``callback`` may touch to wake a waiting session.
WAKE_MARKER = "pueue-watcher.wake"
#: The longest single wait on inotify: an event that falls between two waits is seen within this (seconds).
WAKE_CHECK = 5

SESSION_SCRIPT = (
    r"""pw_os=$(uname -s 2>/dev/null) pw_cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)
pw_ref=
if ! command -v inotifywait >/dev/null 2>&1 && pw_ref=$(mktemp 2>/dev/null); then
trap 'rm -f "$pw_ref"' EXIT; trap 'rm -f "$pw_ref"; exit 1' HUP INT TERM; fi
while IFS= read -r e && IFS= read -r p && IFS= read -r d && IFS= read -r k && IFS= read -r c &&
IFS= read -r r && IFS= read -r h && IFS= read -r o && IFS= read -r cf && IFS= read -r pf; do
pw_wait=0 pw_mark=
case $e in *" "*) pw_wait=${e#* } e=${e%% *}
case $pw_wait in *" "*) pw_mark=${pw_wait#* } pw_wait=${pw_wait%% *};; esac;; esac
case $pw_wait in ''|*[!0-9]*) pw_wait=0;; esac
pw_wake= m=
(
"""
    + HEAD
    + r"""if [ "$t" = unchanged ] && [ "$pw_wait" -gt 0 ]; then
m=$d/"""
    + WAKE_MARKER
    + r"""
if stat -c %i / >/dev/null 2>&1; then fp() { stat -L -c '%s %.9Y %i' "$@" 2>/dev/null; }
else fp() { stat -L -f '%z %Fm %i' "$@" 2>/dev/null; }; fi
case $pw_mark in '') v=$(fp "$f" "$m");; none) v=$s;; *) v="$s
$pw_mark";; esac
iw= nt=
if command -v inotifywait >/dev/null 2>&1; then iw=1
elif [ -n "$pw_ref" ] && touch "$pw_ref" 2>/dev/null; then nt=1; fi
[ -z "$nt$pw_mark" ] || [ "$(fp "$f" "$m")" = "$v" ] || t=changed
i=0
while [ "$t" = unchanged ] && [ "$pw_wait" -gt 0 ]; do
if [ -n "$iw" ]; then
x=$pw_wait; [ $x -gt """
    + str(WAKE_CHECK)
    + r""" ] && x="""
    + str(WAKE_CHECK)
    + r"""
inotifywait -qq -t $x "$d" >/dev/null 2>&1
case $? in 0) sleep 0.2 2>/dev/null || sleep 1; pw_wait=$((pw_wait-1));; 2) pw_wait=$((pw_wait-x));;
*) sleep 1; pw_wait=$((pw_wait-1));; esac
elif [ -n "$nt" ]; then
sleep 2; pw_wait=$((pw_wait-2)) i=$((i+1))
if [ "$f" -nt "$pw_ref" ] || [ "$m" -nt "$pw_ref" ]; then t=changed; break; fi
[ $((i % 5)) = 0 ] || continue
else sleep 1; pw_wait=$((pw_wait-1)); fi
[ "$(fp "$f" "$m")" = "$v" ] || { t=changed; break; }
done
fi
case $t in unchanged) ;; *) t=changed;; esac
[ -n "$m" ] && { pw_wake=$(fp "$m"); pw_wake="wake ${pw_wake:-none}"; }
printf 'pueue-watcher-poll 1\n%s\n%s\n%s\ndaemon %s\n%s\n%s\npueue-watcher-end %s\n' \
"$b" "$n" "$l" "$u" "$pw_wake" "$t" "$e"
) </dev/null; done
"""
)
SESSION_END = b"pueue-watcher-end "


def session_argv() -> list[str]:
    """The command that starts a host's long-lived poll session."""
    return ["sh", "-c", SESSION_SCRIPT, "pueue-watcher-session"]


def session_request(host: HostConfig, known: str, token: str, wait: int = 0, mark: str = "") -> bytes | None:
    """One request to the session: the token (and ``wait``, the seconds of a long poll, and ``mark``, the
    wake marker's fingerprint as the last long poll saw it: a touch since then wakes this one at once), then
    SCRIPT's arguments, a line each. None when a value holds a newline (it cannot travel as a line): such a
    host is polled with SCRIPT alone."""
    first = " ".join(x for x in (token, str(wait) if wait > 0 else "", mark if wait > 0 else "") if x)
    values = [first, *poll_argv(host, known)[4:]]
    if any("\n" in v or "\r" in v for v in values):
        return None
    return ("\n".join(values) + "\n").encode()
