"""The files an operator deploys beside the program, shipped inside it: a pipx user has no repository.

``pueue-watcher kit DIR`` writes them out: the systemd units (system-wide and per user), the Grafana
dashboard and the Prometheus alert rules, plus a Prometheus scrape snippet. In the repository they live under
``deploy/``; ``watcher/kit/`` links to them, and the wheel carries their content.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

#: The shipped files, as they are named in the package and written out.
FILES = (
    "pueue-watcher.service",
    "pueue-watcher.user.service",
    "grafana-dashboard.json",
    "prometheus-alerts.yml",
)

SCRAPE_SNIPPET = """\
# Prometheus: scrape the watcher (its rules in prometheus-alerts.yml assume job="pueue-watcher").
# The daemon listens on 127.0.0.1:9925 by default (metrics.listen): loopback only, so run Prometheus on the
# same machine or set metrics.listen (and the unit's SocketBindAllow=) to an address it can reach.
scrape_configs:
  - job_name: pueue-watcher
    sample_limit: 10000            # about 40 series per host plus 17 per watched group; leave room
    label_value_length_limit: 128  # the watcher's own bound on a label value
    static_configs:
      - targets: ["127.0.0.1:9925"]
"""


def shipped(name: str) -> bytes:
    return resources.files("watcher").joinpath("kit", name).read_bytes()


def write_kit(directory: Path, *, force: bool = False) -> list[Path]:
    """Write every shipped file (and the scrape snippet) into ``directory``; an existing file is kept unless
    ``force``. Returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    contents = {name: shipped(name) for name in FILES} | {"prometheus-scrape.yml": SCRAPE_SNIPPET.encode()}
    written = []
    for name, content in contents.items():
        path = directory / name
        if path.exists() and not force:
            continue
        path.write_bytes(content)
        written.append(path)
    return written
