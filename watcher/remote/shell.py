"""The shell fragments that several scripts share, and how much one command line can carry.

Each fragment is POSIX sh, pasted into a script (never run alone) and documented by what it expects and
leaves in shell variables. Nothing in them is configured or remote text: the values come as arguments.
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence

# PUEUE_DIR finds pueue's paths as pueue does (pueue_lib/src/settings.rs, 3.4.1 and 4.0.4), from $cf, $pf
# and $d (the host's pueue_dir, '' = pueue's): the configuration file (-c, else $PUEUE_CONFIG_PATH, else
# ~/.config/pueue/pueue.yml, macOS's ~/Library/Application Support/pueue/pueue.yml, ./pueue.yml); from its
# `shared` section (or, with a profile, the profile's `shared`, which replaces it whole) pueue_directory,
# runtime_directory and pid_path, read with shell builtins (block-style YAML as pueue writes it; at most 500
# lines). Afterwards: $d the pueue directory, $rt the runtime directory (shared.runtime_directory, else
# $XDG_RUNTIME_DIR, else $d) and $pp the pid file (shared.pid_path, else $rt/pueue.pid).
PUEUE_DIR = r"""case $cf in "~/"*) cf=$HOME/${cf#"~/"};; esac
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
STATE_FILE = r"""f= s=
for x in "$d/state.json.gz" "$d/state.json"; do
if [ -r "$x" ] && { [ -z "$f" ] || [ "$x" -nt "$f" ]; }; then f=$x; fi
done
[ -n "$f" ] && s=$(stat -L -c '%s %.9Y %i' "$f" 2>/dev/null || stat -L -f '%z %Fm %i' "$f" 2>/dev/null)
"""
# Is the daemon up? Its pid file is looked for in the runtime directory first, then beside the state file (a
# daemon started without the $XDG_RUNTIME_DIR this login has). The pid must name a live process called
# pueued: a stale pid file whose pid was reused by another process does not count (/proc/PID/comm; where
# there is no /proc, macOS, `ps`).
DAEMON = r"""u=down
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
PUEUE_CALL = r"""P() {
if [ -n "$pf" ]; then set -- --profile "$pf" "$@"; fi
if [ -n "$cf" ]; then set -- -c "$cf" "$@"; fi
"$p" "$@"
}
"""

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
