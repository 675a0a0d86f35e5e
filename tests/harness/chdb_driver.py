"""The project's ClickHouse client over chdb (current ClickHouse, in process), in place of the network driver.

The native protocol sends a query's settings with it, and the server applies them before the query's own
``SETTINGS`` clause. Here each ``execute`` opens a fresh chdb session on the same data and ``SET``s the
settings first: the same order, and nothing is left over from one query to the next (a ``SET readonly = 1``
cannot be undone in a session). chdb allows one session per process, so this runs in a child process:

    python -m tests.harness.chdb_driver DIR SQL...   →  one JSON line: {SQL: "ok" | the client's error}

``DIR`` gets a table ``bars`` (one row) when it is empty; ``count`` in the answer is its row count after.
"""

from __future__ import annotations

import asyncio
import json
import re
import sys
from typing import Any

from checks.clickhouse import client as ch


class ChdbDriver:
    """What the client uses of ``clickhouse_driver.Client``, over chdb."""

    path = ""

    def __init__(self, **_connection: Any) -> None:
        self.connection = self
        self.connected = True
        self.server_info = self

    def get_timezone(self) -> str:
        return "UTC"

    def disconnect(self) -> None:
        pass

    def execute(self, text: str, with_column_types: bool = False, settings: Any = None) -> Any:
        from chdb import session

        chdb = session.Session(self.path)
        try:
            for name, value in (settings or {}).items():
                chdb.query(f"SET {name} = {int(value)}")
            try:
                raw = chdb.query(text, "JSONCompact").bytes()
            except Exception as exc:  # chdb's text: "Code: 164. DB::Exception: …"
                code = re.search(r"Code: (\d+)", str(exc))
                raise ch.driver_errors.ServerException(str(exc), int(code.group(1)) if code else 0) from None
        finally:
            chdb.close()
        answer = json.loads(raw) if raw.strip() else {"meta": [], "data": []}
        rows = [tuple(row) for row in answer["data"]]
        types = [(meta["name"], meta["type"]) for meta in answer["meta"]]
        return (rows, types) if with_column_types else rows


async def main(path: str, queries: list[str]) -> dict[str, Any]:
    from chdb import session

    seed = session.Session(path)
    seed.query("CREATE TABLE IF NOT EXISTS bars (x Int32) ENGINE = MergeTree ORDER BY x")
    if seed.query("SELECT count() FROM bars", "CSV").bytes().strip() == b"0":
        seed.query("INSERT INTO bars VALUES (1)")
    seed.close()
    ChdbDriver.path = path
    ch.Client = ChdbDriver
    client = ch.ClickHouseClient(
        host="chdb", port=9000, user="default", password="", database="default",
        max_execution_time=7, max_threads=2, connect_timeout=2,
    )  # fmt: skip
    answers: dict[str, Any] = {}
    for sql in queries:
        try:
            await client.query(sql)
            answers[sql] = "ok"
        except ch.CheckQueryError as exc:
            answers[sql] = str(exc)
    answers["count"] = ChdbDriver().execute("SELECT count() FROM bars")[0][0]
    return answers


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2:]))))
