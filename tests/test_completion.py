"""Shell completion (issue 14): the shell asks through argcomplete's protocol, the parser answers."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.harness.fleet import REPO


def complete(line: str) -> list[str]:
    """What bash would be offered for ``line`` (argcomplete writes the words to file descriptor 8)."""
    read, write = os.pipe()
    env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n", "COMP_LINE": line,
           "COMP_POINT": str(len(line)), "_ARGCOMPLETE_SUPPRESS_SPACE": "1"}  # fmt: skip
    # The shell gives argcomplete its fd 8 (and 9, for its debug output): the child gets them here, before
    # exec (close_fds=False: closing the others would run after this and take fd 8 too).
    subprocess.run([sys.executable, "-m", "watcher"], cwd=REPO, env=env, stdin=subprocess.DEVNULL,
                   capture_output=True, timeout=60, check=False, close_fds=False,
                   preexec_fn=lambda: (os.dup2(write, 8), os.dup2(write, 9)))  # fmt: skip
    os.close(write)
    with os.fdopen(read) as answer:
        return sorted(answer.read().split())


def test_commands_and_options_complete() -> None:
    assert complete("pueue-watcher con") == ["config"]
    assert {"docs", "init", "schema", "validate"} <= set(complete("pueue-watcher config "))
    assert "--from-ssh-config" in complete("pueue-watcher config init --")
