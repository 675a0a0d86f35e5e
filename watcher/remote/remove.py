"""Hygiene's bulk removal (scope "bulk"): ``pueue remove`` of tasks the state file still holds as planned.

``sh -c REMOVE_SCRIPT pueue-watcher-remove PUEUE DIR CONFIG PROFILE ID=CREATED…``, one chunk per round trip:
``$1`` pueue, ``$2`` the pueue directory, ``$3`` pueue's configuration file, ``$4`` its profile, then one
``ID=CREATED`` argument per candidate (CREATED: the task's created_at to the second, as written in the state
file). It prints ``pueue-watcher-bulk-matched N`` (BULK_MATCHED), the candidates it found and removes.

``pueue remove`` checks neither the status nor the identity of a task, so the script first looks each
candidate up in the state file: pueue writes compact JSON, each task starting
``"ID":{"id":ID,"created_at":"…`` (3.4.1 and 4.0.4), and that sequence cannot occur inside a JSON string.
Only the ids found with their own created_at are removed: a task id that was reused after someone else's
clean (pueue numbers from max id + 1, from 0 once empty) has another created_at and stays. The patterns are
built here from the arguments (nothing is spliced into the script). A compressed state file (state.json.gz)
or a grep without -o / -F / -f - makes the script say so (BULK_UNAVAILABLE), and the watcher plans a
``pueue clean`` instead. pueue's answer when it keeps some of the ids (a task an unfinished one depends on,
"The command failed for tasks: …") is no failure: the next poll shows them.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from watcher.config import HostConfig
from watcher.remote.shell import PUEUE_CALL, PUEUE_DIR, STATE_FILE

REMOVE_SCRIPT = (
    r"""p=$1 d=$2 cf=$3 pf=$4
shift 4
case $p in "~/"*) p=$HOME/${p#"~/"};; esac
"""
    + PUEUE_CALL
    + PUEUE_DIR
    + STATE_FILE
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


def remove_argv(host: HostConfig, candidates: Sequence[str]) -> list[str]:
    """One chunk of a bulk removal: ``pueue remove`` of those ``candidates`` (``ID=CREATED``) that the state
    file still holds as the same task (REMOVE_SCRIPT)."""
    where = [host.pueue, host.pueue_dir or "", host.pueue_config or "", host.pueue_profile or ""]
    return ["sh", "-c", REMOVE_SCRIPT, "pueue-watcher-remove", *where, *candidates]
