"""The stages of one host's cycle, in the order they run (``watcher/cycle.py`` says what a stage is):

- :mod:`.availability`: ``host.down`` after failed polls in a row, ``host.up`` on recovery;
- :mod:`.probes`: the host's load, memory and swap, and the breaches that last;
- :mod:`.vanished`: the tasks a clean removed just as they succeeded, handed to the observation;
- :mod:`.observe`: the groups' tracks stepped through the snapshot, phases and events committed;
- :mod:`.checks`: the pending integrity checks of completed phases;
- :mod:`.gates`: the pending gates whose checks have all finished;
- :mod:`.cleaning`: the record of the clean that ended, and the next clean when the state file is too large;
- :mod:`.schedule`: when to poll the host next.

Each stage's policy lives in the module of the same subject one level up (``watcher/gates.py``,
``watcher/hygiene.py``, ``watcher/schedule.py``, ``watcher/phases/``); a stage holds its state between cycles
and its store queries.
"""
