"""The fault suite's ledger: what was injected, what the watcher survived, and what it lost or repeated.

Every fault test takes the session-wide ``ledger`` fixture and wraps each fault in :meth:`Ledger.fault`: the
fault counts as injected when the block starts, and as survived when the block (the injection *and* the
assertions about the watcher's behaviour) ends without an exception. Tests that compare what the watcher
recorded with what a receiver got report it through :meth:`Ledger.events`. ``conftest.py`` prints the totals
at the end of the run and writes them to ``build/faults-summary.json``.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Ledger:
    faults_injected: int = 0
    faults_survived: int = 0
    events_expected: int = 0
    events_lost: int = 0
    phase_events_duplicated: int = 0
    hostile_inputs_tried: int = 0
    faults: list[dict[str, object]] = field(default_factory=list)
    #: Per case of the hostile-fleet suite: what it cost the watcher (tests/faults/hostile_fleet.py Figures).
    figures: list[dict[str, object]] = field(default_factory=list)

    @contextmanager
    def fault(self, name: str, count: int = 1) -> Iterator[None]:
        """Inject ``count`` faults of kind ``name`` inside the block; they are survived if it completes."""
        self.faults_injected += count
        entry: dict[str, object] = {"fault": name, "count": count, "survived": False}
        self.faults.append(entry)
        yield
        self.faults_survived += count
        entry["survived"] = True

    @contextmanager
    def case(self, name: str) -> Iterator[dict[str, object]]:
        """A fault kind whose count is known only once it has run: set ``entry["count"]`` (how many were
        injected) and ``entry["lost"]`` (events of other hosts that never arrived) inside the block."""
        entry: dict[str, object] = {"fault": name, "count": 0, "lost": 0, "survived": False}
        self.faults.append(entry)
        try:
            yield entry
        finally:
            self.faults_injected += int(str(entry["count"]))
        self.faults_survived += int(str(entry["count"]))
        entry["survived"] = True

    def events(
        self, expected: Iterable[str], received: Iterable[str], phase_received: Iterable[str] = ()
    ) -> None:
        """``expected``: event ids the watcher committed; ``received``: ids a receiver got (repeats allowed:
        delivery is at least once); ``phase_received``: the phase ids (``host/group/finished_at``) of the
        phase events in history or at a receiver, where each must appear once."""
        wanted = set(expected)
        self.events_expected += len(wanted)
        self.events_lost += len(wanted - set(received))
        self.phase_events_duplicated += sum(n - 1 for n in Counter(phase_received).values() if n > 1)

    def hostile(self, count: int = 1) -> None:
        self.hostile_inputs_tried += count

    def summary_line(self) -> str:
        return (
            f"faults injected {self.faults_injected}, survived {self.faults_survived}; "
            f"events lost {self.events_lost} of {self.events_expected}; "
            f"phase events duplicated {self.phase_events_duplicated}; "
            f"hostile inputs tried {self.hostile_inputs_tried}"
        )

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(self), indent=2) + "\n")
