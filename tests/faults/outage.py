"""Helpers of the dependency-outage tests: a webhook receiver that hangs on demand, the daemon's configuration
for a set of simulated hosts, and what the watcher committed to its store."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from tests.harness import state_db
from tests.harness.fleet import to_toml
from tests.harness.receiver import Receiver, Reply, Request
from watcher.records import Event

# Longer than any sink timeout here: a request held this long is a hang. Stopping the receiver ends it.
HANG = 600.0


class SwitchableReceiver(Receiver):
    """A :class:`Receiver` whose behaviour the test switches: while ``hanging``, each request is read and
    then held without an answer; otherwise it is answered 200 and kept in ``answered`` (the deliveries)."""

    def __init__(self) -> None:
        super().__init__()
        self.hanging = False
        self.answered: list[Request] = []

    def _record(self, request: Request) -> Reply:
        with self._changed:
            self.requests.append(request)
            hang = self.hanging
            if not hang:
                self.answered.append(request)
            self._changed.notify_all()
        return Reply(delay=HANG) if hang else Reply()


def event_ids(requests: Sequence[Request]) -> list[str]:
    """The ids of the events in these webhook requests, repeats kept."""
    return [e["id"] for r in requests for e in r.json()["events"]]


def phase_ids(requests: Sequence[Request]) -> list[str]:
    """The phase ids of the distinct ``phase.completed`` events in these webhook requests: one per event id.
    Delivery is at least once, so an event may arrive twice under its id (its idempotency key, which a
    receiver deduplicates on); a phase that appears here twice had two events, which is a defect."""
    events = [e for r in requests for e in r.json()["events"] if e["event"] == "phase.completed"]
    return list({e["id"]: e["phase"] for e in events}.values())


def redelivered(requests: Sequence[Request]) -> int:
    """How many events arrived again under an id already received (at least once: allowed, and counted)."""
    ids = event_ids(requests)
    return len(ids) - len(set(ids))


def config(
    path: Path,
    state: Path,
    hosts: Sequence[Mapping[str, Any]],
    *,
    watcher: Mapping[str, Any] | None = None,
    tables: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
) -> Path:
    """A daemon configuration: fast polling, no metrics endpoint, the hosts (without probes, so that the
    machine's load adds no events), then each array-of-tables section (``alerts``, ``checks``, …)."""
    section = {"state_path": str(state), "poll_interval": "1s", "fast_interval": "0.5s", **(watcher or {})}
    lines = ["[watcher]", *(f"{k} = {to_toml(v)}" for k, v in section.items()), "[metrics]", 'listen = ""']
    for host in hosts:
        lines += ["[[hosts]]", *(f"{k} = {to_toml(v)}" for k, v in ({"probes": False} | dict(host)).items())]
    for name, entries in (tables or {}).items():
        for entry in entries:
            lines += [f"[[{name}]]", *(f"{k} = {to_toml(v)}" for k, v in entry.items())]
    path.write_text("\n".join(lines) + "\n")
    return path


def committed(state: Path) -> list[Event]:
    """Every event the watcher committed to the store at ``state``, oldest first."""
    return state_db.events(state)


def history(state: Path) -> list[dict[str, Any]]:
    """``pueue-watcher history --json`` of the store at ``state``."""
    from tests.harness.fleet import watcher

    path = state.parent / "history.toml"
    path.write_text(f"[watcher]\nstate_path = {json.dumps(str(state))}\n")
    proc = watcher("history", "--json", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    result: list[dict[str, Any]] = json.loads(proc.stdout)
    return result
