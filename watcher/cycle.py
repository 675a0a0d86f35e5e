"""One host's cycle: what a cycle produces (:class:`CycleOutcome`), what its stages share while it runs
(:class:`Cycle`), and what a stage is (:class:`Stage`).

A cycle is one poll and the stages it goes through, in this order (``watcher/stages/``, built and run by
:class:`watcher.watch.HostWatch`):

availability → probes → vanished → observe → checks → gates → cleaning → schedule

Each stage owns its state between cycles and its own store queries. What one stage hands the next within a
cycle is a field of :class:`Cycle`, never an attribute of another stage. After a failed poll only the stages
marked ``always`` run (availability, schedule); after a store failure too, and every stage is ``reset()``:
what ran ahead of the store is forgotten, and the next cycle starts again from what the store holds.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from watcher.poll.poller import PollResult
    from watcher.pueue.model import Task
    from watcher.records import CheckRun, CleanRecord, Event, GateAction, PhaseRecord


@dataclass(slots=True)
class CycleOutcome:
    """What one cycle did: the daemon's log line and ``once``'s exit status are made from it."""

    result: PollResult
    events: list[Event] = field(default_factory=list)
    phases: list[PhaseRecord] = field(default_factory=list)
    checks: list[CheckRun] = field(default_factory=list)
    gates: list[GateAction] = field(default_factory=list)
    clean: CleanRecord | None = None
    error: str | None = None  # a failure after the poll itself (store, clean)


@dataclass(slots=True)
class Cycle:
    """One cycle in progress: the poll's result and what the stages hand each other."""

    result: PollResult
    polled_at: float  # monotonic, when the poll began
    clean: bool = True  # hygiene may start a clean (``once`` asks for none in the cycle that only settles)
    outcome: CycleOutcome = field(init=False)
    #: The host's latest probe values (stage probes), recorded with each completed phase (stage observe).
    health: Mapping[str, float | None] = field(default_factory=dict)
    #: Tasks a clean removed that the tracker saw unfinished, as the successes they were (stage vanished),
    #: stepped through with this poll's snapshot (stage observe).
    vanished: dict[str, list[Task]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.outcome = CycleOutcome(self.result)

    @property
    def polled(self) -> bool:
        """The poll succeeded and gave a snapshot: the stages that read the queue may run."""
        return self.result.ok and self.result.snapshot is not None


class Stage(Protocol):
    """One step of a host's cycle."""

    name: str
    #: Runs after a failed poll or a store failure too (availability, schedule).
    always: bool

    async def run(self, cycle: Cycle) -> None:
        """Do this stage's part of ``cycle``. Raises :class:`watcher.errors.StoreError` when the store
        fails; the cycle then skips the stages that are not ``always``."""
        ...

    def reset(self) -> None:
        """After a store failure: forget what ran ahead of the store (the next cycle reloads it)."""
        ...
