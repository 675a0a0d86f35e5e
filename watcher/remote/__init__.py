"""The shell scripts the watcher runs on a host, one module each, with its contract in its docstring.

- ``poll``: the one round trip of a poll (host probes, the state file's fingerprint, the daemon, the state)
  and the reader of its answer; ``payload`` decodes what the answer carries (decompression, the local
  handoff).
- ``session``: a long-lived shell per SSH host that answers a poll without a new session.
- ``clean``: hygiene's ``pueue clean``, guarded against a task that finished since the plan.
- ``remove``: hygiene's bulk ``pueue remove`` of the tasks the state file still holds as planned.
- ``pueue``: any other pueue command (``start``, ``pause``), and pueue's errors as one line.
- ``shell``: the fragments they share (pueue's paths, the state file, the daemon's pid, the ``P`` function
  that runs the client), and how much one command line can carry.

Every script is a constant, run as ``sh -c SCRIPT NAME ARG…``: each configured or remote value travels as
its own argument, and no text is ever spliced into shell code.
"""
