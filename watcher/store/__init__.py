"""The state store: the daemon's memory, in SQLite at ``watcher.state_path``. The records it
keeps are in ``watcher/records.py``.

::

    sqlite.py       Store: the async API; every sqlite3 call runs in one dedicated thread
    queries.py      the reads and writes, as functions of a connection
    schema.py       what a file must be before we touch it, and the migrations (PRAGMA user_version)
    connection.py   WAL + synchronous=FULL, transactions, sqlite3 errors → StoreError
"""

from watcher.store.sqlite import Store

__all__ = ["Store"]
