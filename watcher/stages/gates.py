"""Stage gates: act on this host's pending gates whose phase's checks have all finished (``watcher/gates.py``
decides: start the next group, or hold it)."""

from __future__ import annotations

from collections.abc import Sequence

from watcher.config import GateConfig, HostConfig
from watcher.cycle import Cycle
from watcher.events import gate_action
from watcher.gates import apply, decide
from watcher.store import Store
from watcher.transport import Transport


class Gates:
    name = "gates"
    always = False

    def __init__(self, host: HostConfig, store: Store, gates: Sequence[GateConfig], transport: Transport,
                 timeout: float) -> None:  # fmt: skip
        self.host = host
        self.store = store
        self.configs = {(g.after, g.start): g for g in gates if g.host == host.name}
        self.transport = transport
        self.timeout = timeout  # of the pueue command that starts or pauses a group
        self._maybe = True  # the store may hold pending gates of this host (see stages/checks.py)

    def reset(self) -> None:
        self._maybe = True

    async def run(self, cycle: Cycle) -> None:
        outcome = cycle.outcome
        if not (self._maybe or outcome.gates):
            return
        pending = await self.store.gate_actions(host=self.host.name, pending=True)
        waiting = False
        for action in pending:
            runs = await self.store.check_runs(phase_id=action.phase_id)
            gate = self.configs.get((action.after, action.start))
            if gate is None or any(r.status == "pending" for r in runs):
                waiting = waiting or gate is not None  # checks still to run: look again next cycle
                continue
            phases = await self.store.phases(host=self.host.name, group=action.after)
            phase = next((p for p in phases if p.id == action.phase_id), None)
            start, reason = decide(gate, phase, runs)
            done = await apply(self.host, self.transport, action, start, reason, self.timeout)
            event = gate_action(done)
            await self.store.commit(self.host.name, gates=[done], events=[event] if event else [])
            outcome.gates.append(done)
            outcome.events += [event] if event else []
        self._maybe = waiting
