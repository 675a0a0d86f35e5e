"""The built-in ClickHouse checks on a 10-million-row table: wall time per check, best of 3.

A real clickhouse-server (Debian's 18.16) on loopback, one MergeTree table ``bars`` generated server-side
from ``system.numbers``: 1000 symbols × 10 000 one-minute bars, with known defects:

- negatives: ``volume`` below zero on every 100 003rd row (100 rows);
- duplicates: every 10 007th row repeats the (symbol, ts) of the row 1000 before it (999 rows);
- NULLs: ``price`` is NULL on every 1009th row (9911 rows).

Each check runs through the project's client with the production limits (``readonly=1``,
``max_threads = 2``), so a time here is what one check costs the server after a phase completes. A check's
time includes its samples query, which runs only when there are violations.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import save, table
from checks.base import CheckContext, ClickHouse
from checks.clickhouse.client import ClickHouseClient
from checks.clickhouse.custom_sql import CustomSqlCheck
from checks.clickhouse.duplicates import DuplicatesCheck
from checks.clickhouse.negatives import NegativesCheck
from checks.clickhouse.null_coverage import NullCoverageCheck
from checks.config import DuplicatesConfig, NegativesConfig, NullCoverageConfig, SqlConfig
from tests.harness.clickhouse import ClickHouseServer

ROWS = 10_000_000
RUNS = 3
MAX_THREADS = 2

CREATE = (
    "CREATE TABLE bars (symbol String, threshold Float64, ts DateTime, volume Float64,"
    " price Nullable(Float64)) ENGINE = MergeTree ORDER BY (symbol, ts)"
)
# Row n is symbol n % 1000 at minute n / 1000; every 10 007th row takes the minute of row n - 1000 (same
# symbol), a duplicate key.
FILL = """
INSERT INTO bars
SELECT
    concat('S', toString(number % 1000)) AS symbol,
    (number % 100) / 100 AS threshold,
    toDateTime(1704067200 + 60 * (intDiv(number, 1000) - (number % 10007 = 0 AND number >= 1000))) AS ts,
    if(number % 100003 = 0, -1 - toFloat64(number % 7), toFloat64(number % 1000 + 1)) AS volume,
    if(number % 1009 = 0, NULL, toFloat64(number % 5000) / 10) AS price
FROM system.numbers
LIMIT 10000000
"""

EXPECTED = {
    "negatives_by_symbol": 100,
    "negatives_rows": 100,
    "duplicates": 999,
    "duplicates_since_phase_start": 500,
    "null_count": 9911,
    "null_ratio": 9911 / ROWS,
    "sql_number": 100,
}


class _NoHost:
    probes: dict[str, float | None] = {}  # noqa: RUF012 - a stub, never changed

    async def run(self, argv: Any, timeout: float) -> tuple[int, bytes, bytes]:
        raise AssertionError("ClickHouse checks never run commands")


def checks() -> dict[str, Any]:
    table: dict[str, Any] = {"clickhouse": "main", "table": "bars"}
    both = ["volume", "threshold"]
    null_columns = ["price", "volume"]
    return {
        "negatives_by_symbol": NegativesCheck(
            NegativesConfig(name="n1", kind="negatives", columns=both, group_by=["symbol"], **table)
        ),
        "negatives_rows": NegativesCheck(NegativesConfig(name="n2", kind="negatives", columns=both, **table)),
        "duplicates": DuplicatesCheck(
            DuplicatesConfig(name="d1", kind="duplicates", key=["symbol", "ts"], **table)
        ),
        # The second half of the minutes: the where clause narrows the scan by the table's sort key.
        "duplicates_since_phase_start": DuplicatesCheck(
            DuplicatesConfig(
                name="d2",
                kind="duplicates",
                key=["symbol", "ts"],
                where="ts >= toDateTime(1704067200 + 60 * 5000)",
                **table,
            )
        ),
        "null_count": NullCoverageCheck(
            NullCoverageConfig(name="c1", kind="null_coverage", columns=null_columns, **table)
        ),
        "null_ratio": NullCoverageCheck(
            NullCoverageConfig(name="c2", kind="null_coverage", columns=null_columns, ratio=True, **table)
        ),
        "sql_number": CustomSqlCheck(
            SqlConfig(
                name="s1", kind="sql", clickhouse="main", sql="SELECT count() FROM bars WHERE volume < 0"
            )
        ),
    }


async def _measure(client: ClickHouseClient) -> dict[str, dict[str, Any]]:
    async def connect(_name: str) -> ClickHouse:
        return client

    ctx = CheckContext(host="bench", group="bars", phase=None, clickhouse=connect, host_reader=_NoHost())
    figures: dict[str, dict[str, Any]] = {}
    for name, check in checks().items():
        times = []
        for _ in range(RUNS):
            started = time.perf_counter()
            result = await check.run(ctx)
            times.append(time.perf_counter() - started)
        expected = EXPECTED[name]
        assert abs(result.violations - expected) < 1e-12, (name, result.violations, expected)
        figures[name] = {
            "best_seconds": min(times),
            "runs_seconds": times,
            "violations": result.violations,
            "rows_per_second": ROWS / min(times),
            "sql": result.sql,
        }
    return figures


def _disk_bytes(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="pw-bench-ch-") as tmp:
        server = ClickHouseServer(Path(tmp) / "clickhouse").start()
        try:
            started = time.perf_counter()
            server.execute(CREATE, FILL, "OPTIMIZE TABLE bars FINAL")
            fill_seconds = time.perf_counter() - started
            rows = int(server.execute("SELECT count() FROM bars"))
            disk = _disk_bytes(Path(tmp) / "clickhouse" / "data" / "data" / "default" / "bars")
            client = ClickHouseClient(
                host="127.0.0.1",
                port=server.port,
                user="default",
                password="",
                database="default",
                max_execution_time=120,
                max_threads=MAX_THREADS,
                connect_timeout=5,
            )

            async def measure() -> dict[str, dict[str, Any]]:
                try:
                    return await _measure(client)
                finally:
                    await client.close()

            per_check = asyncio.run(measure())
            version = server.execute("SELECT version()").strip()
        finally:
            server.stop()

    figures: dict[str, Any] = {
        "clickhouse": version,
        "rows": rows,
        "table_bytes_on_disk": disk,
        "fill_seconds": fill_seconds,
        "max_threads": MAX_THREADS,
        "runs": RUNS,
        "checks": per_check,
    }
    print(
        f"ClickHouse {version}: {rows:,} rows, {disk / 1e6:.1f} MB on disk, filled in {fill_seconds:.1f} s "
        f"({os.cpu_count()} cores, max_threads = {MAX_THREADS})"
    )
    lines: list[tuple[str, ...]] = [("check", "best of 3", "Mrows/s", "violations")]
    for name, row in per_check.items():
        lines.append(
            (
                name,
                f"{row['best_seconds']:.3f} s",
                f"{row['rows_per_second'] / 1e6:.0f}",
                f"{row['violations']:g}",
            )
        )
    print(table(lines))
    print(f"saved {save('checks_10m', figures)}")
    return figures


if __name__ == "__main__":
    run()
