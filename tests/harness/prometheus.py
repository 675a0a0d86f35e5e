"""A real Prometheus server (Debian's 2.42) on loopback, scraping given targets every second, and promtool.

:meth:`PrometheusServer.start` returns once ``/-/ready`` answers (about 1 s here); :meth:`query` runs an
instant query through the HTTP API and returns its ``data.result`` vector.
"""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.harness.services import free_port, http_ok, require_binary, terminate, wait_until_ready

PROMETHEUS_BINARIES = ("/usr/bin/prometheus", "prometheus")
PROMTOOL_BINARIES = ("/usr/bin/promtool", "promtool")

_CONFIG = """\
global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: {job}
{options}    static_configs:
      - targets: {targets}
"""


def promtool_check_metrics(text: str) -> subprocess.CompletedProcess[str]:
    """``promtool check metrics`` on an exposition; a clean one exits 0 and prints nothing."""
    binary = require_binary(*PROMTOOL_BINARIES)
    return subprocess.run(
        [binary, "check", "metrics"], input=text, capture_output=True, text=True, timeout=30, check=False
    )


@dataclass
class PrometheusServer:
    """One prometheus process with its configuration and TSDB in ``root``."""

    root: Path
    targets: Sequence[str]
    job: str = "pueue-watcher"
    port: int = 0
    #: More options of the scrape job, such as ``{"sample_limit": 5000}``.
    scrape_options: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.port = self.port or free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> PrometheusServer:
        """Start Prometheus and wait until it is ready to serve queries."""
        binary = require_binary(*PROMETHEUS_BINARIES)
        config = self.root / "prometheus.yml"
        options = "".join(f"    {k}: {v}\n" for k, v in self.scrape_options.items())
        targets = json.dumps(list(self.targets))
        config.write_text(_CONFIG.format(job=self.job, options=options, targets=targets))
        with (self.root / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.root / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                cwd=self.root,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        ready = f"{self.url}/-/ready"
        wait_until_ready(self.proc, lambda: http_ok(ready), timeout, f"prometheus on port {self.port}",
                         self.log_tail)  # fmt: skip
        return self

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query: the ``data.result`` list of ``{"metric": {...}, "value": [t, "v"]}``."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback http
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise RuntimeError(
                f"prometheus refused {promql!r}: {exc.read().decode(errors='replace')}"
            ) from None
        if body.get("status") != "success":
            raise RuntimeError(f"prometheus query {promql!r} failed: {body}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def wait_for(self, promql: str, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Query until the result is not empty (the first scrapes land a second or two after start)."""
        deadline = time.monotonic() + timeout
        while not (result := self.query(promql)):
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} stayed empty for {timeout}s: {self.log_tail()}")
            time.sleep(0.2)
        return result

    def stop(self) -> None:
        terminate(self.proc)
        self.proc = None

    def log_tail(self, size: int = 2000) -> str:
        path = self.root / "prometheus.log"
        return path.read_text(errors="replace")[-size:] if path.exists() else "(no log)"
