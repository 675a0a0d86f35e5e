"""SIGKILL of the running daemon at 50 seeded-random moments of its cycle, with a restart after each.

The daemon runs as a real process against a simulated pueue host behind a real sshd, a real ClickHouse (a slow
check at every completion of the group ``chk``), a webhook receiver, and hygiene that cleans every complete
group. Batches of tasks keep completing between the kills. Each kill is aimed from the outside at one stage:

* ``poll``: a proxy in front of sshd holds the watcher's next request, so the poll is waiting for its answer;
* ``commit``: the log shows ``phase.recorded`` (the phase and its event are committed, nothing delivered yet);
* ``delivery``: the receiver holds open the POST that carries the new phase's event;
* ``check``: ClickHouse lists the check's query as running;
* ``clean``: the host's ``pueue`` has been asked to ``clean`` and is still at it;
* ``random``: a seeded-random delay after the process started (imports, store, connect, anything).

When it has all drained: every phase is in history exactly once, every committed event reached the receiver at
least once (no phase event missing, none doubled under another id), and ``PRAGMA integrity_check`` is ok.

A batch's tasks wait on gates until the watcher has seen them running and no clean is in flight, as backfill
tasks that run for a while do. The daemon defers a clean when the state file changed after the poll that
planned it (watcher/remote/clean.py; tests/test_transport_ssh.py pins it), but ``pueue clean -g``
cannot be limited to the tasks the watcher saw: a task added *and* finished while pueue itself runs the clean
(milliseconds; here the host's ``pueue`` is slowed down to be caught cleaning) would be removed unseen. That
residual window is a known limit, not played here.

The second test pins a defect the kills brought out: a change caught by the poll after a clean was never
stepped through, so a completion in that moment went unreported until the state file changed again.
"""

from __future__ import annotations

import json
import random
import shlex
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any, TypeVar

import pytest

from tests.conftest import SSHFactory
from tests.faults.ledger import Ledger
from tests.faults.scenario import (
    HoldingProxy,
    LogTail,
    clean_running,
    cleans_started,
    integrity,
    known_hosts_for,
    noting_pueue,
    read_store,
    received_events,
)
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.daemon import DaemonProcess
from tests.harness.fleet import sim_env, sim_host, ssh_entry, to_toml, watcher, write_config
from tests.harness.receiver import Receiver, Reply, Request
from tests.harness.sshd import SSHServer
from tests.pueue_sim.scenario import SimHost

pytestmark = pytest.mark.integration

SEED = 20260808
PLAN = {"poll": 9, "commit": 8, "delivery": 8, "check": 9, "clean": 8, "random": 8}  # 50 kills
AIMED_AT_LEAST = 3  # each aimed stage must really be hit this often (a miss falls back to a random kill)
GROUPS = ("a", "b", "chk")
HOLD = 3.0  # how long the receiver holds a POST open (the sink's timeout is longer)
STAGE_DEADLINE = 25.0  # seconds to reach an aimed stage before falling back to a random kill

T = TypeVar("T")


class HoldingReceiver(Receiver):
    """The webhook receiver; while ``hold_group`` is set, it holds open the first POST that carries a
    ``phase.completed`` event of that group (it is recorded on arrival, and answered after ``HOLD``)."""

    def __init__(self) -> None:
        super().__init__()
        self.hold_group: str | None = None
        self.holding = threading.Event()

    def _record(self, request: Request) -> Reply:
        reply = super()._record(request)
        group = self.hold_group
        events = request.json()["events"] if request.body else []
        if group is not None and any(e["event"] == "phase.completed" and e["group"] == group for e in events):
            self.hold_group = None
            self.holding.set()
            return Reply(delay=HOLD)
        return reply


def wait(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.03) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what}: not within {timeout}s")
        time.sleep(interval)


class Scenario:
    """The services, the daemon, and the bookkeeping of the batches the test gave pueue."""

    def __init__(
        self, root: Path, sim: SimHost, hook: HoldingReceiver, proxy: HoldingProxy, ch: ClickHouseServer
    ) -> None:
        self.root = root
        self.sim = sim
        self.hook = hook
        self.proxy = proxy
        self.clickhouse = ch
        self.state = root / "state.db"
        self.marker = root / "cleans.txt"
        self.marker.touch()
        self.log = LogTail(root / "daemon.log")
        self.daemon = DaemonProcess(Path(), root / "daemon.log")
        self.batches = Counter[str]()
        self.started_at = 0.0
        self._up = False

    def configure(self, server: SSHServer) -> Path:
        pueue = noting_pueue(self.sim.pueue_bin, self.root / "pueue", self.marker, clean_seconds=0.3)
        known_hosts = known_hosts_for(server, self.proxy.port, self.root / "known_hosts")
        entry = ssh_entry(
            "bigblack", server, self.sim, port=self.proxy.port, pueue=str(pueue), known_hosts=str(known_hosts)
        )
        config = write_config(
            self.root / "c.toml",
            [entry],
            watcher={"poll_interval": "1s", "fast_interval": "0.3s", "state_path": str(self.state),
                     "host_timeout": "30s", "grace_period": "2s"},
            # A clean the kill left unseen is taken up for its budget after the restart: kept short here.
            hygiene={"max_state_bytes": 1000, "cooldown": "0.1s", "timeout": "10s"},
            metrics={"listen": ""},
        )  # fmt: skip
        tables: dict[str, dict[str, Any]] = {
            "clickhouse": {"name": "main", "port": self.clickhouse.port},
            "checks": {"name": "slow", "kind": "sql", "clickhouse": "main", "sql": "SELECT sleep(1)",
                       "groups": ["chk"], "timeout": "60s"},
            "alerts": {"name": "hook", "kind": "webhook", "url": f"{self.hook.url}/hook", "timeout": "10s"},
        }  # fmt: skip
        with config.open("a") as out:
            for name, values in tables.items():
                out.write(f"[[{name}]]\n" + "".join(f"{k} = {to_toml(v)}\n" for k, v in values.items()))
        self.daemon.config = config
        return config

    # ------------------------------------------------------------------------------ the daemon

    def start(self) -> None:
        self.log.new()
        self.daemon.start()
        self.started_at = time.monotonic()
        self._up = False

    def started(self) -> None:
        """Wait for the ``started`` line of the daemon's latest start."""
        if not self._up:
            self.until(lambda: any(e.get("event") == "started" for e in self.log.new()), "the daemon's start")
            self._up = True

    def until(self, predicate: Callable[[], T], what: str, timeout: float = 60, interval: float = 0.03) -> T:
        """``wait`` while the daemon runs: its exit is a failure, with its last words."""

        def alive() -> T:
            proc = self.daemon.proc
            if proc is not None and proc.poll() is not None:
                tail = self.daemon.log.read_text(errors="replace")[-3000:]
                raise AssertionError(
                    f"the daemon exited ({proc.returncode}) while waiting for {what}:\n{tail}"
                )
            return predicate()

        return wait(alive, timeout, what, interval)

    # ------------------------------------------------------------------------------ pueue work

    def phases(self) -> dict[str, list[str]]:
        """Each group's phase statuses, as the store has them now."""
        found: dict[str, list[str]] = {}
        for group, status in read_store(self.state, "SELECT group_name, status FROM phases"):
            found.setdefault(group, []).append(status)
        return found

    def free(self, groups: tuple[str, ...]) -> list[str]:
        """Groups whose every batch so far is recorded as a completed phase: a new batch is a new phase."""
        phases = self.phases()
        done = {g: phases.get(g, []) for g in groups}
        return [g for g in groups if done[g].count("completed") == self.batches[g] and "open" not in done[g]]

    def batch(self, rng: random.Random, groups: tuple[str, ...]) -> str:
        """1-3 tasks in a free group, released once the watcher has seen them running and no clean is in
        flight; the group."""
        group = rng.choice(self.until(lambda: self.free(groups), f"a free group among {groups}", 60, 0.1))
        self.batches[group] += 1
        gates = [f"{group}-{self.batches[group]}-{n}" for n in range(rng.randint(1, 3))]
        for gate in gates:
            self.sim.add_gated(gate, group=group, label=gate)
        self.until(lambda: "open" in self.phases().get(group, []), f"the watcher to see {gates}", 60, 0.05)
        self.until(lambda: not clean_running(self.marker), "the cleans to finish", 60, 0.05)
        for gate in gates:
            self.sim.finish(gate)
        return group

    # ------------------------------------------------------------------------------ aiming

    def aim(self, stage: str, rng: random.Random) -> bool:
        """Bring the daemon to ``stage`` and return True there; False when it was not reached in time."""
        try:
            if stage == "poll":
                time.sleep(rng.uniform(0, 1))
                self.proxy.arm()
                return self.proxy.held.wait(STAGE_DEADLINE)
            if stage == "commit":
                group = self.batch(rng, GROUPS)
                self.until(lambda: self._recorded(group), "phase.recorded", STAGE_DEADLINE)
            elif stage == "delivery":
                self.hook.holding.clear()
                self.hook.hold_group = self.batch(rng, ("a", "b"))
                return self.hook.holding.wait(STAGE_DEADLINE)
            elif stage == "check":
                self.batch(rng, ("chk",))
                self.until(self._check_running, "the check's query", STAGE_DEADLINE, 0.05)
            elif stage == "clean":
                cleans = cleans_started(self.marker)
                self.batch(rng, ("a", "b"))
                self.until(lambda: cleans_started(self.marker) > cleans, "a clean", STAGE_DEADLINE)
            else:
                raise AssertionError(stage)
            return True
        except TimeoutError:
            return False
        finally:
            self.proxy.disarm()
            self.hook.hold_group = None

    def _recorded(self, group: str) -> bool:
        return any(e.get("event") == "phase.recorded" and e.get("group") == group for e in self.log.new())

    def _check_running(self) -> bool:
        sql = (
            "SELECT count() FROM system.processes"
            " WHERE query LIKE '%sleep(1)%' AND query NOT LIKE '%system.processes%'"
        )
        return int(self.clickhouse.execute(sql).strip() or 0) > 0

    def drained(self) -> bool:
        """Every batch is a completed phase, every check has run and every event is delivered."""
        done = sum(statuses.count("completed") for statuses in self.phases().values())
        ((left,),) = read_store(
            self.state,
            "SELECT (SELECT count(*) FROM events WHERE delivered_at IS NULL)"
            " + (SELECT count(*) FROM deliveries WHERE status != 'delivered')"
            " + (SELECT count(*) FROM check_runs WHERE status = 'pending')",
        )
        return done == sum(self.batches.values()) and left == 0


@pytest.fixture
def clickhouse(tmp_path: Path) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmp_path / "clickhouse").start()
    try:
        yield server
    finally:
        server.stop()


def test_sigkill_at_50_points_loses_and_repeats_nothing(
    tmp_path: Path, sshd_factory: SSHFactory, clickhouse: ClickHouseServer, ledger: Ledger
) -> None:
    """50 kill -9 aimed at poll, commit→delivery, check, clean and random moments: afterwards every phase
    is in history once, every committed event reached the receiver, none is missing, the store is sound."""
    rng = random.Random(SEED)
    plan = [stage for stage, n in PLAN.items() for _ in range(n)]
    rng.shuffle(plan)
    hit = Counter[str]()
    hook = HoldingReceiver()
    with sim_host(tmp_path / "sim", "v4") as sim, hook, ExitStack() as faults:
        for group in GROUPS:
            sim.pueue("group", "add", group, check=True)
        server = sshd_factory.start(sim_env(sim))
        proxy = HoldingProxy(server.port).start()
        faults.callback(proxy.stop)
        run = Scenario(tmp_path, sim, hook, proxy, clickhouse)
        config = run.configure(server)
        faults.callback(run.daemon.stop)
        # The first sight of the host: its groups are empty, so every later phase is news (and fires).
        run.start()
        run.started()
        run.until(lambda: read_store(run.state, "SELECT host FROM hosts"), "the first commit")

        for stage in plan:
            if run.daemon.proc is None:
                run.start()
            if stage != "random":
                run.started()
            aimed = stage != "random" and run.aim(stage, rng)
            if not aimed:
                time.sleep(max(0.0, run.started_at + rng.uniform(0, 3) - time.monotonic()))
            kind = stage if aimed else "random"
            hit[kind] += 1
            faults.enter_context(ledger.fault(f"sigkill: {kind}"))
            run.daemon.kill()
            # What the killed daemon left: no phase beyond the batches given, none abandoned.
            phases = run.phases()
            assert all(phases.get(g, []).count("completed") <= run.batches[g] for g in GROUPS), phases
            assert not any("abandoned" in statuses for statuses in phases.values()), phases

        run.start()  # the last run: until every batch is a recorded phase and every event is delivered
        run.started()  # (everything may have drained before the kill: SIGTERM must find the handler in place)
        run.until(run.drained, "everything to drain", 180, 0.2)
        assert run.daemon.terminate() == 0

        proc = watcher("history", "--json", "-c", str(config))
        assert proc.returncode == 0, proc.stderr
        history = json.loads(proc.stdout)
        committed = {event_id for (event_id,) in read_store(run.state, "SELECT id FROM events")}
        received = received_events(hook.requests)
        phase_events = {e["id"]: e["phase"] for e in received if e["event"] == "phase.completed"}
        ledger.events(committed, [e["id"] for e in received], phase_events.values())

        assert Counter(p["id"] for p in history).most_common(1)[0][1] == 1, "a phase is in history twice"
        assert Counter(p["group"] for p in history if p["status"] == "completed") == run.batches
        assert [p for p in history if p["status"] != "completed" or p["outcome"] != "success"] == []
        assert sorted(committed - {e["id"] for e in received}) == [], "committed but never delivered"
        assert sorted(phase_events.values()) == sorted(p["id"] for p in history), "a phase event is missing"
        for phase in (p for p in history if p["group"] == "chk"):
            assert [(c["name"], c["status"]) for c in phase["checks"]] == [("slow", "ok")]
        assert integrity(run.state) == ["ok"]
        for stage in PLAN:
            if stage != "random":
                assert hit[stage] >= AIMED_AT_LEAST, f"{stage} was reached {hit[stage]} times: {hit}"


def test_a_completion_during_a_clean_is_still_reported(tmp_path: Path, sshd_factory: SSHFactory) -> None:
    """The last task of a group ends while hygiene cleans another group: its completion is reported, although
    the poll after the clean already saw it and the polls after that answer "unchanged"."""
    with sim_host(tmp_path / "sim", "v4") as sim:
        for group in ("done", "busy"):
            sim.pueue("group", "add", group, check=True)
        sim.wait_for_status(sim.add("true", group="done", label="old"), "Done")
        last = sim.add_gated("last", group="busy", label="last")
        sim.wait_for_status(last, "Running")
        real = shlex.quote(str(sim.pueue_bin))
        gate, temp = (shlex.quote(str(sim.gate_dir / name)) for name in ("last", ".last.tmp"))
        pueue = tmp_path / "pueue"  # cleaning, it first lets `last` finish, and waits until pueue has it Done
        pueue.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = clean ]; then\n'
            f"  echo 0 > {temp} && mv {temp} {gate}\n"
            f"  PUEUED_TEST_ENV_VARIABLE=true {real} wait {last} >/dev/null\n"
            "fi\n"
            f'exec {real} "$@"\n'
        )
        pueue.chmod(0o755)
        server = sshd_factory.start(sim_env(sim))
        config = write_config(
            tmp_path / "c.toml",
            [ssh_entry("bigblack", server, sim, pueue=str(pueue))],
            watcher={"poll_interval": "1s", "fast_interval": "0.3s", "state_path": str(tmp_path / "s.db")},
            hygiene={"max_state_bytes": 1000},
            metrics={"listen": ""},
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            daemon.wait_for(lambda: daemon.events("state.cleaned"))
            (done,) = daemon.wait_for(lambda: daemon.events("phase.completed"), timeout=30)
            assert (done["group"], done["outcome"]) == ("busy", "success")
            assert daemon.terminate() == 0
        finally:
            daemon.stop()


def test_a_task_a_clean_removes_after_the_watcher_was_killed_completes_its_phase(
    tmp_path: Path, sshd_factory: SSHFactory
) -> None:
    """The kill the 50 kills once brought out, played deterministically: the watcher is killed while its
    whole-host ``clean -s`` runs; group b's last task, seen running, succeeds before pueue gets the clean
    (which goes on without the watcher) and is removed by it. The restarted watcher takes the unseen clean up
    from its record: b's phase is completed, as a success, not abandoned; the clean's record is settled."""
    with sim_host(tmp_path / "sim", "v4") as sim:
        for group in ("a", "b"):
            sim.pueue("group", "add", group, check=True)
        sim.wait_for_status(sim.add("true", group="a", label="old"), "Done")
        last = sim.add_gated("last", group="b", label="last")
        sim.wait_for_status(last, "Running")
        real = shlex.quote(str(sim.pueue_bin))
        started, go, ended = (tmp_path / name for name in ("clean.started", "clean.go", "clean.ended"))
        pueue = tmp_path / "pueue"  # a clean is held until the test says go (the watcher is dead by then)
        pueue.write_text(
            "#!/bin/sh\n"
            'if [ "$1" = clean ]; then\n'
            f"  touch {shlex.quote(str(started))}\n"
            f"  while [ ! -e {shlex.quote(str(go))} ]; do sleep 0.05; done\n"
            f'  {real} "$@" >/dev/null 2>&1; touch {shlex.quote(str(ended))}; exit 0\n'
            "fi\n"
            f'exec {real} "$@"\n'
        )
        pueue.chmod(0o755)
        server = sshd_factory.start(sim_env(sim))
        config = write_config(
            tmp_path / "c.toml",
            [ssh_entry("bigblack", server, sim, pueue=str(pueue))],
            watcher={"poll_interval": "1s", "fast_interval": "0.3s", "state_path": str(tmp_path / "s.db")},
            hygiene={"max_state_bytes": 1000, "timeout": "5s"},
            metrics={"listen": ""},
        )
        daemon = DaemonProcess(config, tmp_path / "daemon.log").start()
        try:
            wait(started.exists, 60, "the clean to reach pueue")
            assert ("b", "open") in read_store(tmp_path / "s.db", "SELECT group_name, status FROM phases")
            sim.finish("last")
            sim.wait_for_status(last, "Done")
            daemon.kill()
            go.touch()
            wait(ended.exists, 30, "the clean to end")
            assert str(last) not in sim.status()["tasks"], "the clean did not remove the task"
            assert ("b", "open") in read_store(tmp_path / "s.db", "SELECT group_name, status FROM phases")

            daemon = DaemonProcess(config, tmp_path / "again.log").start()
            (done,) = daemon.wait_for(lambda: daemon.events("phase.completed"), timeout=30)
            assert (done["group"], done["outcome"]) == ("b", "success")
            assert daemon.events("state.clean_recovered") != []
            cleaned = daemon.wait_for(lambda: daemon.events("state.cleaned"), timeout=30)
            assert "restart" in cleaned[0]["note"]
            assert daemon.terminate() == 0
        finally:
            daemon.stop()
        phases = read_store(tmp_path / "s.db", "SELECT group_name, status FROM phases WHERE group_name = 'b'")
        assert phases == [("b", "completed")]
