"""Hygiene's ``pueue clean``, in one round trip, guarded against a task that finished since the plan.

``sh -c CLEAN_SCRIPT pueue-watcher-clean PUEUE MODE DIR FINGERPRINT CONFIG PROFILE DONE GROUP…``: ``$1``
pueue, ``$2`` the mode, ``$3`` the pueue directory, ``$4`` the state file's fingerprint the plan was made from
('' when unknown), ``$5`` pueue's configuration file and ``$6`` its profile ('' = none), ``$7`` the number of
Done tasks in the state file the plan was made from ('' when unknown), then the groups.

Modes: "host" runs one ``pueue clean -s`` of the whole host, then ``pueue clean --group=G`` for each group
named (none, unless failed tasks are to go too); "successful" runs ``pueue clean -s --group=G`` and "all"
``pueue clean --group=G`` for each group named. Why one whole-host clean rather than one per group: pueued's
clean scans every task for each Done task under its lock, before it looks at the group, so each per-group
clean costs as much as a whole-host one (watcher/hygiene.py; README, "State hygiene"). Each group name is its
own argument; nothing is spliced into the script. A name is attached to its option (``--group=NAME``): pueue
(clap) would read a name that starts with "-" as an option of its own.

The guard: when a task finished since the plan, nothing is cleaned and the script says so (CLEAN_DEFERRED):
``pueue clean`` would remove a finished task the watcher has never seen. It counts the Done tasks of the
state file (``"status":{"Done"``: that byte sequence cannot occur inside a JSON string, where a quote is
escaped, and ``"prev_status"`` (3.4.1) does not match it) and compares the count with the plan's (``$7``): a
task that finished since is one more; tasks added meanwhile (queued, running) change nothing, so a host that
keeps receiving ``pueue add`` is still cleaned. Without a count (or a grep), the fingerprint (``$4``) stands
in: any change defers. The check narrows the window from the length of a cycle to the few milliseconds until
pueue receives the command (watcher/hygiene.py vanished_successes covers those).
"""

from __future__ import annotations

from collections.abc import Sequence

from watcher.config import HostConfig
from watcher.remote.shell import PUEUE_CALL, PUEUE_DIR, STATE_FILE

# How much of a hygiene command's stdout is looked at: the script's own lines (CLEAN_DEFERRED, BULK_*) come
# first, behind a login banner at most.
REPLY_BYTES = 64 << 10

CLEAN_SCRIPT = (
    r"""p=$1 m=$2 d=$3 k=$4 cf=$5 pf=$6 n=$7
shift 7
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + PUEUE_CALL
    + PUEUE_DIR
    + STATE_FILE
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
