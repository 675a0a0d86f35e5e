"""``pueue-watcher config init``: a first configuration, commented, that validates as it is.

It is written to ``~/.config/pueue-watcher/config.toml`` (the user unit's path, and one the commands look in)
unless another path is given, and never over an existing file without ``--force``. With
``--from-ssh-config``, every plain ``Host`` alias of ``~/.ssh/config`` (no wildcards) becomes a watched host
that SSH reaches as the operator's ``ssh ALIAS`` would; without it, the local pueue is watched.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

_ALIAS = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@:+-]{0,63}$")  # what a host name may be (config.py)

HEADER = """\
# pueue-watcher configuration, written by `pueue-watcher config init`.
# Every key: `pueue-watcher config docs`. Check it: `pueue-watcher config validate`.
# Environment variables override it (PUEUE_WATCHER__WATCHER__POLL_INTERVAL=30s); secrets go in files
# (`password_file = "/path"`) or systemd credentials, never here.

[watcher]
poll_interval = "5m"            # a number of seconds, or "30s", "5m", "1h"
state_path = "~/.local/state/pueue-watcher/state.db"

[metrics]
listen = "127.0.0.1:9925"       # loopback only; "" turns the endpoint off

# Alerts (uncomment one): every event goes to the log until a sink is set.
# [[alerts]]
# name = "team"
# kind = "slack"                 # slack | webhook | alertmanager
# url_file = "~/.config/pueue-watcher/slack-url"
"""

LOCAL_HOST = """
# The pueue of this machine, as the user who runs the watcher.
[[hosts]]
name = "local"
transport = "local"
"""


def default_path() -> Path:
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "pueue-watcher" / "config.toml"


def ssh_aliases(ssh_config: Path) -> list[str]:
    """The plain ``Host`` aliases of an ssh_config file (patterns and negations left out), in order."""
    aliases: list[str] = []
    try:
        lines = ssh_config.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return aliases
    for line in lines:
        words = line.split("#", 1)[0].split()
        if len(words) < 2 or words[0].lower() != "host":
            continue
        for alias in words[1:]:
            if _ALIAS.match(alias) and alias not in aliases and not set(alias) & set("*?!"):
                aliases.append(alias)
    return aliases


def template(aliases: list[str]) -> str:
    """The configuration: the local pueue, or one host per alias."""
    if not aliases:
        return HEADER + LOCAL_HOST
    hosts = "".join(
        f"\n[[hosts]]\nname = {json.dumps(a)}\naddress = {json.dumps(a)}   # as `ssh {a}` reaches it\n"
        for a in aliases
    )
    intro = "\n# Hosts from ~/.ssh/config. Host keys are verified against ~/.ssh/known_hosts.\n"
    return HEADER + intro + hosts
