"""A long-lived poll session (SSH only): one shell per host that answers a poll per request.

An unchanged queue then costs the host neither a new SSH session nor a login shell, only this loop's
subshell and two processes (stat, df).

``sh -c SESSION_SCRIPT pueue-watcher-session`` reads requests on stdin. A request is ten lines: a token,
then ``$1`` to ``$9`` of the poll's SCRIPT (``watcher/remote/poll.py``; no value may hold a newline, which
:func:`session_request` checks). The answer is SCRIPT's header, with ``changed`` in place of anything that
would carry a payload, then ``pueue-watcher-end TOKEN``; the watcher then fetches the payload with SCRIPT.
The system name and CPU count are asked once, at the start (``pw_os``, ``pw_cpus``).
"""

from __future__ import annotations

from watcher.config import HostConfig
from watcher.remote.poll import HEAD, poll_argv

SESSION_SCRIPT = (
    r"""pw_os=$(uname -s 2>/dev/null) pw_cpus=$(getconf _NPROCESSORS_ONLN 2>/dev/null || nproc 2>/dev/null)
while IFS= read -r e && IFS= read -r p && IFS= read -r d && IFS= read -r k && IFS= read -r c &&
IFS= read -r r && IFS= read -r h && IFS= read -r o && IFS= read -r cf && IFS= read -r pf; do (
"""
    + HEAD
    + r"""case $t in unchanged) ;; *) t=changed;; esac
printf 'pueue-watcher-poll 1\n%s\n%s\n%s\ndaemon %s\n%s\npueue-watcher-end %s\n' "$b" "$n" "$l" "$u" "$t" "$e"
) </dev/null; done
"""
)
SESSION_END = b"pueue-watcher-end "


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
