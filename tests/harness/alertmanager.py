"""A real Alertmanager (Debian's prometheus-alertmanager 0.25) on loopback, in a directory of its own.

A single node (``--cluster.listen-address=`` empty), with one route to a webhook receiver (our
:class:`tests.harness.receiver.Receiver`) and short timers so that notifications come within about a second:
group_wait and group_interval 1 s, repeat_interval 1 h (so a repeated notification in a test is a bug, never
the timer). :meth:`Alertmanager.start` returns once ``/-/ready`` answers 200.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.services import free_port, http_ok, kill, require_binary, terminate, wait_until_ready

BINARIES = ("/usr/bin/prometheus-alertmanager", "prometheus-alertmanager", "alertmanager")

_CONFIG = """\
route:
  receiver: hook
  group_by: {group_by}
  group_wait: {group_wait}
  group_interval: {group_interval}
  repeat_interval: 1h
receivers:
  - name: hook
    webhook_configs:
      - url: {webhook_url}
        send_resolved: true
"""


@dataclass
class Alertmanager:
    root: Path
    webhook_url: str
    group_by: list[str] = field(default_factory=lambda: ["alertname", "host"])
    group_wait: str = "1s"
    group_interval: str = "1s"
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> Alertmanager:
        binary = require_binary(*BINARIES)
        self.root.mkdir(parents=True, exist_ok=True)
        config = self.root / "alertmanager.yml"
        config.write_text(
            _CONFIG.format(
                group_by=json.dumps(self.group_by),
                group_wait=self.group_wait,
                group_interval=self.group_interval,
                webhook_url=json.dumps(self.webhook_url),
            )
        )
        with (self.root / "stderr.log").open("ab") as stderr:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--cluster.listen-address=",
                    "--log.level=debug",
                ],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        ready = f"{self.url}/-/ready"
        wait_until_ready(self.proc, lambda: http_ok(ready), timeout, f"alertmanager on port {self.port}",
                         self.log_tail)  # fmt: skip
        return self

    def alerts(self, **filters: str) -> list[dict[str, Any]]:
        """``GET /api/v2/alerts`` (active, silenced, inhibited and unprocessed alerts unless filtered)."""
        query = "&".join(f"{k}={v}" for k, v in filters.items())
        with urllib.request.urlopen(f"{self.url}/api/v2/alerts?{query}", timeout=5) as response:  # noqa: S310
            result: list[dict[str, Any]] = json.load(response)
            return result

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def kill(self) -> None:
        kill(self.proc)
        self.proc = None

    def log_tail(self, size: int = 3000) -> str:
        path = self.root / "stderr.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"
