"""The state store: the daemon's memory, in SQLite at ``watcher.state_path``.

::

    sqlite.py       Store: the async API; every sqlite3 call runs in one dedicated thread
    queries.py      the reads and writes, as functions of a connection
    schema.py       what a file must be before we touch it, and the migrations (PRAGMA user_version)
    connection.py   WAL + synchronous=FULL, transactions, sqlite3 errors → StoreError
    records.py      CleanRecord
"""

from watcher.store.records import CheckRun, CleanRecord, GateAction
from watcher.store.sqlite import Store

__all__ = ["CheckRun", "CleanRecord", "GateAction", "Store"]
