"""Compromised hosts against the real daemon over real sshd (issue 13's acceptance), one case per kind.

Each case runs the daemon (``python -m watcher run``) on one honest host and the case's hostile hosts
(hostile_fleet.py says how), lets every hostile host be polled a few times, completes a phase on the honest
host, and records, for the summary and the assertions:

- the daemon's peak RSS, which must stay under twice an idle daemon's RSS plus the answer cap;
- the longest event-loop stall its own probe saw, which must stay at or under 100 ms;
- that the honest host kept being polled and that its alert reached the webhook;
- that no hostile session got the operator's agent, display or variables;
- that no local file's content appears anywhere (log, store, webhook, metrics);
- that Prometheus, with the README's sample_limit and label_value_length_limit, kept scraping (up = 1).

The ClickHouse cases (readonly, via_host) are in test_hostile_clickhouse.py.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.faults.hostile_fleet import (
    Hostile,
    check,
    delivered,
    fleet,
    leaks,
    run_case,
    sample,
    state_document,
    wait_until,
    write_atomically,
)
from tests.faults.ledger import Ledger
from tests.harness.sshd import ClientKeys

pytestmark = pytest.mark.integration

STOLEN = "stolen-group-3f9a1c"  # in a pueue-shaped file on the watcher's machine


def test_a_handoff_to_a_local_file_or_fifo(tmp_path: Path, agent: Path, client_keys: ClientKeys,
                                           idle_rss: float, ledger: Ledger) -> None:  # fmt: skip
    """Hosts that answer a handoff to a pueue-shaped local file and to a FIFO: refused at every poll."""
    secret = tmp_path / "secret" / "state.json"
    secret.parent.mkdir()
    secret.write_bytes(state_document({STOLEN: "Running"}))
    fifo = tmp_path / "secret" / "fifo.json"
    os.mkfifo(fifo)
    hostile = [Hostile("stealer", "handoff", secret), Hostile("blocker", "handoff", fifo)]
    with ledger.case("hostile: handoff to a local file and a FIFO") as entry, \
            fleet(tmp_path / "fleet", hostile, agent, client_keys) as f:  # fmt: skip
        figures = run_case(f, "handoff to a file and a FIFO", idle_rss)
        figures.leaked = leaks(f, STOLEN)
        check(figures, ledger, entry)
        assert figures.hostile_failures.get("parse", 0) >= 4, figures.line()


def test_a_hostile_ssh_config_gives_no_host_the_agent(tmp_path: Path, agent: Path, client_keys: ClientKeys,
                                                      idle_rss: float, ledger: Ledger) -> None:  # fmt: skip
    """~/.ssh/config asks for ForwardAgent, ForwardX11, SendEnv and SetEnv, and the host's sshd would grant
    them: the hostile host's sessions get none (it answers a valid queue, so every poll is a session)."""
    state = tmp_path / "state.json"
    state.write_bytes(state_document({"p1": "Running"}))
    hostile = [Hostile("curious", "state", state)]
    with ledger.case("hostile: ~/.ssh/config forwarding agent, X11, environment") as entry, \
            fleet(tmp_path / "fleet", hostile, agent, client_keys) as f:  # fmt: skip
        figures = run_case(f, "~/.ssh/config ForwardAgent/ForwardX11/SendEnv", idle_rss, hostile_polls=3)
        figures.leaked = leaks(f, "hunter2-operator-env")
        check(figures, ledger, entry)
        assert not list(f.records.glob("agent.*"))  # no session had an agent socket to ask


@pytest.mark.parametrize(
    ("mode", "reason"),
    [("stderr", "pueue"), ("header", "parse"), ("probe", "parse")],
    ids=["256 MiB of stderr", "64 MiB of header lines", "64 MiB probe block"],
)
def test_a_flood(mode: str, reason: str, tmp_path: Path, agent: Path, client_keys: ClientKeys,
                 idle_rss: float, ledger: Ledger) -> None:  # fmt: skip
    """A host that floods stderr, the header or the probe block fails its polls with one line each and
    costs the daemon a bounded amount of memory and no stall."""
    with ledger.case(f"hostile: {mode} flood") as entry, \
            fleet(tmp_path / "fleet", [Hostile("flooder", mode)], agent, client_keys) as f:  # fmt: skip
        figures = run_case(f, f"{mode} flood", idle_rss)
        check(figures, ledger, entry)
        assert sum(figures.hostile_failures.values()) >= 3, figures.line()
        assert reason in figures.hostile_failures or mode == "stderr", figures.line()
        lines = f.root.joinpath("daemon.log").read_text(errors="replace").splitlines()
        assert max(len(line) for line in lines) < 4000


def test_100k_groups_and_1_mb_names(tmp_path: Path, agent: Path, client_keys: ClientKeys,
                                   idle_rss: float, ledger: Ledger) -> None:  # fmt: skip
    """A host with 100,000 groups is not read (over 20 x max_groups: one line); one with 1,000 is, and the
    watcher keeps max_groups of them and says so; one with 1 MB group names and a 1 MB task label that fails
    gets none of the long names watched and a bounded label; the scrape stays under the limits."""
    many = tmp_path / "many.json"
    many.write_bytes(state_document({f"g{i:06d}": "Running" for i in range(100_000)}, tasks_in=100))
    several = tmp_path / "several.json"
    several.write_bytes(state_document({f"s{i:04d}": "Running" for i in range(1000)}, tasks_in=100))
    huge = "<!channel> " + "N" * (1 << 20)
    names = tmp_path / "names.json"
    groups = {huge + "1": "Running", huge + "2": "Running", "p9": "Running"}
    names.write_bytes(state_document(groups))
    hostile = [Hostile("many", "state", many), Hostile("several", "state", several),
               Hostile("names", "state", names)]  # fmt: skip
    with ledger.case("hostile: 100k groups and 1 MB names") as entry, \
            fleet(tmp_path / "fleet", hostile, agent, client_keys) as f:  # fmt: skip
        f.wait_polls("names", 2)
        write_atomically(names, state_document({**groups, "p9": "Done"}, {"p9": "L" * (1 << 20)}))
        figures = run_case(f, "100k groups and 1 MB names", idle_rss)
        check(figures, ledger, entry)
        text = f.scrape()
        assert figures.hostile_failures.get("parse", 0) >= 2, figures.line()
        log = f.root.joinpath("daemon.log").read_text()
        assert '"error": "the host lists over 4000 groups (' in log
        assert sample(text, "pueue_watcher_groups_dropped", host="several", reason="count") == 800
        assert sample(text, "pueue_watcher_groups_dropped", host="names", reason="name_length") == 2
        assert sum(1 for line in text.splitlines() if 'host="several"' in line and 'group="' in line) < 4000
        assert f.hook is not None
        hook = f.hook

        def p9() -> list[dict[str, object]]:
            return delivered(hook, "phase.completed", group="p9")

        (completed,) = wait_until(p9, 60, "the completion of p9 on the host with 1 MB names")
        assert all(len(label) <= 200 for label in completed["failed_labels"])  # type: ignore[attr-defined]
        assert not any(huge[:1000] in json.dumps(e) for e in delivered(hook))
