"""What the hostile-input tests share: the fuzz settings and hostile strings as a strategy, the check that a
terminal or Slack gets nothing it would act on, a pueue socket client, and TOML and CLI helpers."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.conftest import examples
from tests.faults import hostile
from tests.harness.fleet import watcher
from tests.pueue_sim.config import settings_from_yaml
from tests.pueue_sim.protocol import connect
from tests.pueue_sim.scenario import SimHost

# Keep each property to a few seconds on a shared 2-core machine; no deadline: the machine is shared, and a
# hang would show as a test that never ends, not as a slow example.
FUZZ = settings(max_examples=examples(1000), deadline=None, suppress_health_check=[HealthCheck.too_slow])

STRINGS = st.sampled_from(
    [
        *hostile.SLACK,
        *hostile.MARKDOWN,
        *hostile.TERMINAL,
        *hostile.shell(Path("/nonexistent/m")),
        "a\x00b",
        "",
    ]
) | st.text(max_size=30)

# What a terminal must never receive from remote text: C0 and C1 controls (a newline apart), bidi overrides
# and isolates, line and paragraph separators.
TERMINAL_UNSAFE = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def assert_inert(payload: dict[str, Any]) -> None:
    """No Slack control sequence survives in any text of the payload."""
    texts = [payload["text"]] + [b["text"]["text"] for b in payload["blocks"]]
    for text in texts:
        assert "<" not in text and ">" not in text, repr(text[:300])
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), repr(text[:300])


class PueueSocket:
    """Requests to a simulated pueue daemon over its socket, as any pueue_lib client sends them: the way to
    give pueue values that no command line can carry (a NUL, a 1 MB label), and fast for many requests."""

    def __init__(self, sim: SimHost) -> None:
        settings = settings_from_yaml(sim.config_path.read_text(), sim.flavor, sim.config_path)
        settings.unix_socket_path_ = sim.socket_path
        self.conn, _ = connect(settings, sim.flavor)
        self.work = sim.work_dir

    def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.conn.send(request)
        answer: dict[str, Any] = self.conn.receive()
        assert answer["type"] == "success", (answer, repr(request)[:300])
        return answer

    def group(self, name: str, *, paused: bool) -> None:
        self({"cmd": "group", "action": "add", "name": name, "parallel": None})
        if paused:
            self({"cmd": "pause", "selection": {"all": False, "group": name, "ids": []}, "wait": False})

    def start(self, name: str) -> None:
        self({"cmd": "start", "selection": {"all": False, "group": name, "ids": []}})

    def add(self, group: str, command: str, label: str | None, path: Path | None = None, **extra: Any) -> int:
        request = {"cmd": "add", "command": command, "path": str(path or self.work), "envs": {"PATH": "/bin"},
                   "group": group, "dependencies": [], "priority": None, "label": label, "stashed": False,
                   "enqueue_at": None, "immediate": False, "print_task_id": True} | extra  # fmt: skip
        return int(self(request)["text"])

    def close(self) -> None:
        self.conn.close()


def toml_value(value: Any) -> str:
    """A TOML value (JSON strings are TOML basic strings while they hold no astral character)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)


def toml(sections: dict[str, dict[str, Any]], arrays: dict[str, list[dict[str, Any]]]) -> str:
    lines = []
    for name, values in sections.items():
        lines += [f"[{name}]", *(f"{k} = {toml_value(v)}" for k, v in values.items())]
    for name, tables in arrays.items():
        for table in tables:
            lines += [f"[[{name}]]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return watcher(*args, timeout=180)
