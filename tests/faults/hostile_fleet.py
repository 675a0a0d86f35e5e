"""A fleet with compromised hosts, watched by the real daemon, and the figures that say what they cost it.

Each hostile host is a real sshd whose ``authorized_keys`` forces :data:`HOSTILE_SCRIPT` on every session
(sshd runs it whatever the watcher asked for), in the mode its sshd sets (``HOSTILE``). One honest host, a
simulated pueue behind its own sshd and key, completes a phase while the hostile hosts do their worst: its
alert must reach a webhook on time. The daemon runs as the operator would run it, with a hostile
``~/.ssh/config`` (ForwardAgent, ForwardX11, SendEnv, SetEnv), a real ssh-agent and a ``DISPLAY``; every
hostile session writes down what it was given. A real Prometheus scrapes the daemon with the limits the
README suggests.

What a run measures (:class:`Figures`): the daemon's peak RSS (``VmHWM``) against an idle daemon's RSS, the
longest event-loop stall (the daemon's own probe, ``pueue_watcher_event_loop_lag_max_seconds``), how many
polls the honest host got against how many its interval allows, how long its alert took, what Prometheus
scraped, and whether a hostile session ever saw the operator's agent, display or variables.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.faults.ledger import Ledger
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry, to_toml
from tests.harness.prometheus import PrometheusServer
from tests.harness.receiver import Receiver
from tests.harness.services import free_port
from tests.harness.sshd import ClientKeys, SSHServer
from tests.pueue_sim.scenario import SimHost

HOSTILE_SCRIPT = r"""#!/bin/sh
# What the session was given: the operator's agent, display or variables must never be among it.
env > "$RECORD_DIR/session.$$.env"
if [ -n "$SSH_AUTH_SOCK" ]; then ssh-add -l > "$RECORD_DIR/agent.$$" 2>&1; fi
marker='pueue-watcher-poll 1'
case $HOSTILE in
handoff) printf '%s\nfile state.json 10 1.5 7\ndaemon up\nhandoff %s\n' "$marker" "$TARGET";;
stderr) yes "$(printf '\377')" | head -c 268435456 >&2
        printf '%s\ndaemon down\nstatus none\n' "$marker"; printf 'Error: flooded\npueue-watcher-rc 1\n' >&2;;
header) printf '%s\n' "$marker"; yes x | head -c 67108864;;
probe) printf '%s\nprobe-begin\n' "$marker"; yes -- '--x' | head -c 67108864;;
state) printf '%s\nfile state.json %s %s 7\ndaemon up\nstate none\n' "$marker" "$(wc -c < "$TARGET")" "$$"
       cat "$TARGET";;
esac
"""

#: The limits the README suggests for Prometheus' scrape of the watcher ("Trust model").
SCRAPE_LIMITS = {"sample_limit": 10000, "label_value_length_limit": 128}
#: The daemon's answer cap in these runs: the "state size cap" of the memory bound.
ANSWER_CAP = 32 << 20
INTERVAL = 1.0  # the poll interval of every host
HOSTILE_SSH_CONFIG = (
    "Host *\n  ForwardAgent yes\n  ForwardX11 yes\n  ForwardX11Trusted yes\n"
    "  SendEnv WATCHER_TEST_*\n  SetEnv WATCHER_TEST_SET=from-config\n"
)
#: What the operator's environment holds that no host may see.
OPERATOR_SECRET = "hunter2-operator-env"


def metrics_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        return str(response.read().decode())


def sample(text: str, name: str, **labels: str) -> float | None:
    """One sample's value from an exposition, or None."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    pattern = re.escape(name) + (r"\{" + re.escape(want) + r"\}" if want else "") + r" (\S+)$"
    for line in text.splitlines():
        if match := re.match(pattern, line):
            return float(match.group(1))
    return None


def rss_kib(pid: int, field_name: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field_name + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field_name} for {pid}")


@dataclass
class Figures:
    case: str
    idle_rss_mib: float = 0.0
    peak_rss_mib: float = 0.0
    rss_bound_mib: float = 0.0
    loop_lag_max_ms: float = 0.0
    honest_polls: int = 0
    honest_polls_due: int = 0
    alert_seconds: float | None = None
    hostile_polls: int = 0
    hostile_failures: dict[str, int] = field(default_factory=dict)
    scrape_samples_max: float | None = None
    scrape_up_min: float | None = None
    sessions_recorded: int = 0
    forwarded: list[str] = field(default_factory=list)  # what a hostile session was given that it must not
    leaked: list[str] = field(default_factory=list)  # where a local secret appeared

    def line(self) -> str:
        alert = "none" if self.alert_seconds is None else f"{self.alert_seconds:.1f} s"
        bound = f"{self.rss_bound_mib:.0f} = 2 x idle {self.idle_rss_mib:.0f} + cap {ANSWER_CAP >> 20}"
        return (
            f"{self.case}: peak RSS {self.peak_rss_mib:.0f} MiB (bound {bound}), "
            f"loop stall max {self.loop_lag_max_ms:.0f} ms, "
            f"honest polls {self.honest_polls}/{self.honest_polls_due} due, honest alert after {alert}, "
            f"hostile polls {self.hostile_polls} (failures {self.hostile_failures}), "
            f"scrape samples max {self.scrape_samples_max}, up min {self.scrape_up_min}, "
            f"hostile sessions {self.sessions_recorded} given nothing: {not self.forwarded}, "
            f"local secret seen: {self.leaked or 'nowhere'}"
        )


@dataclass
class Hostile:
    """One hostile host: its mode and the sshd environment that selects it."""

    name: str
    mode: str
    target: Path | None = None


class Fleet:
    """The honest host, the hostile ones, the webhook, Prometheus and the daemon, for one case."""

    def __init__(
        self, root: Path, hostile: list[Hostile], agent: Path, extra: list[str] | None = None
    ) -> None:
        self.root = root
        self.hostile = hostile
        self.agent = agent
        self.extra = extra or []  # more configuration (TOML lines): ClickHouse, checks
        self.records = root / "records"
        self.records.mkdir(parents=True)
        self.metrics_port = free_port()
        self.stack = ExitStack()
        self.sim: SimHost | None = None
        self.servers: list[SSHServer] = []
        self.hook: Receiver | None = None
        self.prometheus: PrometheusServer | None = None
        self.daemon: DaemonProcess | None = None

    def _hostile_servers(self) -> list[dict[str, Any]]:
        keys = ClientKeys(self.root / "hostile-keys")
        script = self.root / "hostile.sh"
        script.write_text(HOSTILE_SCRIPT)
        script.chmod(0o755)
        public = keys.authorized_keys.read_text().strip()
        # No no-agent-forwarding and no no-X11-forwarding: the host would take whatever the watcher offered.
        keys.authorized_keys.write_text(f'command="{script}" {public}\n')
        entries = []
        for host in self.hostile:
            env = {"HOSTILE": host.mode, "RECORD_DIR": str(self.records), "TARGET": str(host.target or "")}
            granting = ("AcceptEnv *", "AllowAgentForwarding yes", "X11Forwarding yes")
            server = SSHServer(self.root / host.name, keys, env, extra_config=granting)
            self.servers.append(server.start())
            entries.append(ssh_entry(host.name, server, None, pueue="pueue", compression="none"))
        return entries

    def _config(self, hosts: list[Mapping[str, Any]]) -> Path:
        lines = [
            "[watcher]",
            f'state_path = "{self.root / "state.db"}"',
            f'poll_interval = "{INTERVAL:g}s"',
            f'fast_interval = "{INTERVAL:g}s"',
            'host_timeout = "60s"',
            f"max_answer_bytes = {ANSWER_CAP}",
            "[metrics]",
            f'listen = "127.0.0.1:{self.metrics_port}"',
            "[hygiene]",
            'clean = "off"',
        ]
        for host in hosts:
            lines.append("[[hosts]]")
            lines += [f"{k} = {to_toml(v)}" for k, v in host.items()]
        assert self.hook is not None
        lines += ["[[alerts]]", 'name = "hook"', 'kind = "webhook"', f'url = "{self.hook.url}/hook"']
        lines += self.extra
        path = self.root / "config.toml"
        path.write_text("\n".join(lines) + "\n")
        return path

    def start(self, honest_keys: ClientKeys, *, with_hostile: bool = True) -> None:
        self.sim = self.stack.enter_context(sim_host(self.root / "sim", "v4"))
        self.sim.pueue("group", "add", "p1", check=True)
        self.task = self.sim.add_gated("y2026", group="p1", label="y2026")
        honest = SSHServer(self.root / "honest", honest_keys, sim_env(self.sim)).start()
        self.servers.append(honest)
        hosts = [ssh_entry("honest", honest, self.sim)]
        if with_hostile:
            hosts += self._hostile_servers()
        self.hook = Receiver().start()
        self.prometheus = PrometheusServer(self.root / "prometheus", [f"127.0.0.1:{self.metrics_port}"],
                                           scrape_options=SCRAPE_LIMITS).start()  # fmt: skip
        home = self.root / "home"
        (home / ".ssh").mkdir(parents=True)
        (home / ".ssh" / "config").write_text(HOSTILE_SSH_CONFIG)
        env = {"HOME": str(home), "SSH_AUTH_SOCK": str(self.agent), "DISPLAY": ":99",
               "WATCHER_TEST_SECRET": OPERATOR_SECRET,
               **{k: v for k, v in os.environ.items() if k == "PUEUE_WATCHER_STALL_TRACE"}}  # fmt: skip
        self.daemon = DaemonProcess(self._config(hosts), self.root / "daemon.log", env=env).start()

    def scrape(self) -> str:
        assert self.daemon is not None
        return self.daemon.wait_for(lambda: _try(lambda: metrics_text(self.metrics_port)), timeout=60)

    def polls(self, host: str) -> int:
        return int(sample(self.scrape(), "pueue_watcher_poll_duration_seconds_count", host=host) or 0)

    def wait_polls(self, host: str, count: int, timeout: float = 240) -> None:
        assert self.daemon is not None
        self.daemon.wait_for(lambda: self.polls(host) >= count, timeout=timeout)

    def stop(self) -> None:
        if self.daemon is not None:
            self.daemon.stop()
        for server in self.servers:
            server.stop()
        if self.prometheus is not None:
            self.prometheus.stop()
        if self.hook is not None:
            self.hook.stop()
        self.stack.close()

    def sessions(self) -> Iterator[str]:
        for path in self.records.iterdir():
            yield path.read_text(errors="replace")


def delivered(hook: Receiver, event: str | None = None, **where: str) -> list[dict[str, Any]]:
    """The events the webhook received (each request is a batch: ``{"events": [...]}``), of kind ``event``
    and with the given ``where`` fields, if any."""
    every = [e for r in list(hook.requests) if r.body for e in json.loads(r.body).get("events", [])]
    wanted = [e for e in every if event in (None, e.get("event"))]
    return [e for e in wanted if all(e.get(k) == v for k, v in where.items())]


def _try(read: Any) -> Any:
    try:
        return read()
    except OSError:
        return None


@contextmanager
def fleet(root: Path, hostile: list[Hostile], agent: Path, honest_keys: ClientKeys,
          *, with_hostile: bool = True, extra: list[str] | None = None) -> Iterator[Fleet]:  # fmt: skip
    running = Fleet(root, hostile, agent, extra)
    try:
        running.start(honest_keys, with_hostile=with_hostile)
        yield running
    finally:
        running.stop()


def forwarded(session: str) -> list[str]:
    """What a hostile session's environment holds of the operator's: agent, display, passed variables."""
    found = []
    for line in session.splitlines():
        name = line.split("=", 1)[0]
        operator = name.startswith("WATCHER_TEST_") or OPERATOR_SECRET in line
        if operator or name in ("SSH_AUTH_SOCK", "DISPLAY"):
            found.append(line)
    return found


def state_document(
    groups: Mapping[str, str], labels: Mapping[str, str] | None = None, tasks_in: int | None = None
) -> bytes:
    """A pueue 4 state with one task per group (the first ``tasks_in`` groups only, if given), Running or
    Done (Failed)."""
    t0 = "2026-12-01T00:00:00Z"
    tasks = {}
    for i, (group, status) in enumerate(list(groups.items())[:tasks_in]):
        if status == "Done":
            state: Any = {"Done": {"enqueued_at": t0, "start": t0, "end": t0, "result": {"Failed": 1}}}
        else:
            state = {"Running": {"enqueued_at": t0, "start": t0}}
        tasks[str(i)] = {"id": i, "created_at": t0, "original_command": "x", "command": "x", "path": "/",
                         "envs": {"TOKEN": "s3cr3t"}, "group": group, "dependencies": [], "priority": 0,
                         "label": (labels or {}).get(group), "status": state}  # fmt: skip
    document = {"tasks": tasks, "groups": {g: {"status": "Running", "parallel_tasks": 1} for g in groups}}
    return json.dumps(document).encode()


def write_atomically(path: Path, data: bytes) -> None:
    partial = path.with_suffix(".partial")
    partial.write_bytes(data)
    os.replace(partial, path)


def wait_until(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := predicate():
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what}: not within {timeout:g}s")


LOOP_LAG_MAX = 0.100  # seconds: the longest stall a case may cause


def run_case(f: Fleet, case: str, idle: float, hostile_polls: int = 2) -> Figures:
    """Let each hostile host be polled ``hostile_polls`` times, complete the honest phase, wait for its
    alert and one more poll of each hostile host; then read every figure."""
    assert f.daemon is not None and f.daemon.proc is not None and f.sim is not None and f.hook is not None
    f.wait_polls("honest", 2)
    for host in f.hostile:
        f.wait_polls(host.name, hostile_polls)
    started, before = time.monotonic(), f.polls("honest")
    seen = {h.name: f.polls(h.name) for h in f.hostile}
    f.sim.finish("y2026", 0)
    f.sim.wait_for_status(f.task, "Done")
    done = time.monotonic()

    hook = f.hook

    def alerted() -> list[dict[str, object]]:
        return delivered(hook, "phase.completed", host="honest")

    wait_until(alerted, 120, "the honest host's alert")  # not a timed assertion: a hang guard
    alert_seconds = time.monotonic() - done
    for host in f.hostile:
        f.wait_polls(host.name, seen[host.name] + 1)
    elapsed = time.monotonic() - started
    text = f.scrape()
    figures = Figures(case=case, idle_rss_mib=idle)
    figures.peak_rss_mib = rss_kib(f.daemon.proc.pid, "VmHWM") / 1024
    figures.rss_bound_mib = 2 * idle + (ANSWER_CAP >> 20)
    figures.loop_lag_max_ms = 1000 * (sample(text, "pueue_watcher_event_loop_lag_max_seconds") or 0.0)
    figures.honest_polls = f.polls("honest") - before
    figures.honest_polls_due = int(elapsed / INTERVAL)
    figures.alert_seconds = alert_seconds
    for host in f.hostile:
        figures.hostile_polls += f.polls(host.name)
        for line in text.splitlines():
            if line.startswith("pueue_watcher_poll_failures_total{") and f'host="{host.name}"' in line:
                reason = line.split('reason="')[1].split('"')[0]
                if (count := int(float(line.split()[-1]))) > 0:
                    figures.hostile_failures[reason] = figures.hostile_failures.get(reason, 0) + count
    assert f.prometheus is not None
    samples = f.prometheus.wait_for("max_over_time(scrape_samples_scraped[10m])")
    figures.scrape_samples_max = float(samples[0]["value"][1])
    figures.scrape_up_min = float(f.prometheus.wait_for("min_over_time(up[10m])")[0]["value"][1])
    sessions = list(f.sessions())
    figures.sessions_recorded = sum(1 for s in sessions if "HOSTILE=" in s)
    figures.forwarded = [line for s in sessions for line in forwarded(s)]
    return figures


def check(figures: Figures, ledger: Ledger, entry: dict[str, object]) -> None:
    """The bounds every case must keep; the figures go to the summary first, kept or not."""
    print(figures.line())
    ledger.figures.append({"line": figures.line(), **figures.__dict__})
    entry["count"] = figures.hostile_polls
    entry["lost"] = 0 if figures.alert_seconds is not None else 1
    assert figures.peak_rss_mib < figures.rss_bound_mib, figures.line()
    assert figures.loop_lag_max_ms <= LOOP_LAG_MAX * 1000, figures.line()
    assert figures.honest_polls >= figures.honest_polls_due // 3, figures.line()
    assert figures.scrape_up_min == 1.0, figures.line()
    assert figures.scrape_samples_max is not None and figures.scrape_samples_max < 10000, figures.line()
    assert figures.sessions_recorded >= 1, figures.line()
    assert figures.forwarded == [], figures.line()
    assert not figures.leaked, figures.line()


def leaks(f: Fleet, secret: str) -> list[str]:
    """Where ``secret`` (content of a file on the watcher's machine) appears: log, store, webhook, metrics."""
    found = []
    if secret in f.root.joinpath("daemon.log").read_text(errors="replace"):
        found.append("daemon log")
    for path in f.root.glob("state.db*"):
        if secret.encode() in path.read_bytes():
            found.append(path.name)
    if f.hook is not None and any(secret.encode() in r.body for r in f.hook.requests):
        found.append("webhook")
    if secret in f.scrape():
        found.append("metrics")
    return found
