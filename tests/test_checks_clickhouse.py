"""The built-in ClickHouse checks against a real ClickHouse 18.16 server, and the same SQL through chdb.

Each scenario runs on both backends: Debian's clickhouse-server 18.16 through the project's client, and chdb
(a current ClickHouse, in-process) fed the same SQL rendered by ``render``. Equal answers from both prove that
the SQL works on old and new releases. The rest is about the real server only: readonly, limits, errors,
retries.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import tenacity
from structlog.testing import capture_logs

from checks.base import CheckContext, CheckResult, CheckStatus, ClickHouse, QueryResult
from checks.clickhouse import client as ch
from checks.clickhouse.client import CheckQueryError, ClickHouseClient, render
from checks.clickhouse.custom_sql import CustomSqlCheck
from checks.clickhouse.duplicates import DuplicatesCheck
from checks.clickhouse.negatives import NegativesCheck
from checks.clickhouse.null_coverage import NullCoverageCheck
from checks.config import DuplicatesConfig, NegativesConfig, NullCoverageConfig, SqlConfig
from tests.harness.clickhouse import ClickHouseServer
from tests.harness.services import IN_CI, free_port
from watcher.records import PhaseRecord

pytestmark = pytest.mark.integration

# (symbol, threshold, ts, volume, price). Known defects:
#   negatives (volume, threshold): rows 4, 5 (BTC) and 6 (ETH); row 5 has both negative
#   duplicates (symbol, ts): BTC 00:00 three times (2 extra), ETH 00:01 twice (1 extra)
#   NULL price: rows 3, 5, 7, 11
ROWS = [
    ("BTC", 0.1, "2024-01-01 00:00:00", 10, "100"),
    ("BTC", 0.1, "2024-01-01 00:00:00", 10, "100"),
    ("BTC", 0.1, "2024-01-01 00:00:00", 10, "NULL"),
    ("BTC", 0.1, "2024-01-01 00:01:00", -5, "101"),
    ("BTC", -0.2, "2024-01-01 00:02:00", -1, "NULL"),
    ("ETH", 0.1, "2024-01-01 00:00:00", -3, "10"),
    ("ETH", 0.1, "2024-01-01 00:01:00", 4, "NULL"),
    ("ETH", 0.1, "2024-01-01 00:01:00", 4, "11"),
    ("ETH", 0.1, "2024-01-02 00:00:00", 7, "12"),
    ("SOL", 0.3, "2024-01-02 00:00:00", 1, "1"),
    ("SOL", 0.3, "2024-01-02 00:01:00", 2, "NULL"),
]
SEED = (
    "CREATE TABLE bars (symbol String, threshold Float64, ts DateTime, volume Float64,"
    " price Nullable(Float64)) ENGINE = MergeTree ORDER BY (symbol, ts)",
    "INSERT INTO bars VALUES " + ", ".join(f"('{s}', {t}, '{ts}', {v}, {p})" for s, t, ts, v, p in ROWS),
    # NULL and 0 hash alike in the duplicates prefilter (assumeNotNull), yet they are different keys.
    "CREATE TABLE conflated (k Nullable(Float64), n UInt8) ENGINE = MergeTree ORDER BY n",
    "INSERT INTO conflated VALUES (NULL, 1), (0, 2), (NULL, 3)",
)
HOST = "bigblack"


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def phase(start: str, end: str, group: str = "BTC") -> PhaseRecord:
    return PhaseRecord(
        id="phase-1",
        host=HOST,
        group=group,
        status="completed",
        opened_at=at(start),
        completed_at=at(end),
        first_start=at(start),
        last_end=at(end),
    )


class _NoHost:
    """ClickHouse checks never read the host."""

    probes: Mapping[str, float | None] = {}

    async def run(self, argv: Sequence[str], timeout: float) -> tuple[int, bytes, bytes]:
        raise AssertionError("a ClickHouse check ran a command on the host")


def context(clickhouse: ClickHouse, group: str = "BTC", phase: PhaseRecord | None = None) -> CheckContext:
    async def connect(name: str) -> ClickHouse:
        assert name == "main"
        return clickhouse

    return CheckContext(host=HOST, group=group, phase=phase, clickhouse=connect, host_reader=_NoHost())


def make_check(kind: str, **options: Any) -> Any:
    options = {"name": f"{kind}-check", "kind": kind, "clickhouse": "main", **options}
    if kind == "sql":
        return CustomSqlCheck(SqlConfig(**options))
    options.setdefault("table", "bars")
    if kind == "negatives":
        return NegativesCheck(NegativesConfig(**options))
    if kind == "duplicates":
        return DuplicatesCheck(DuplicatesConfig(**options))
    return NullCoverageCheck(NullCoverageConfig(**options))


# --- backends ------------------------------------------------------------------------------------------


class ChdbClickHouse:
    """The ``ClickHouse`` protocol on chdb; the SQL is rendered by the client's own ``render``."""

    def __init__(self, session: Any) -> None:
        self.session = session

    async def query(self, sql: str, params: Mapping[str, Any] | None = None) -> QueryResult:
        text = sql if params is None else render(sql, params)
        answer = json.loads(self.session.query(text, "JSONCompact").bytes())
        columns = [meta["name"] for meta in answer["meta"]]
        return QueryResult(columns=columns, rows=[tuple(row) for row in answer["data"]])


def _chdb_session(path: Path) -> Any:
    try:
        from chdb import session
    except ImportError as exc:
        message = f"chdb is not installed ({exc}); it is the current ClickHouse these tests compare with"
        if IN_CI:
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return session.Session(str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse")).start()
    try:
        server.execute(*SEED)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def chdb_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    session = _chdb_session(tmp_path_factory.mktemp("chdb"))
    for statement in SEED:
        session.query(statement)
    yield session
    session.close()


@pytest.fixture(autouse=True)
def instant_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ch, "RETRY_WAIT", tenacity.wait_none())


def connect(port: int, **overrides: Any) -> ClickHouseClient:
    options: dict[str, Any] = {
        "host": "127.0.0.1",
        "port": port,
        "user": "default",
        "password": "",
        "database": "default",
        "max_execution_time": 7,
        "max_threads": 2,
        "connect_timeout": 2,
        **overrides,
    }
    return ClickHouseClient(**options)


@pytest.fixture
async def real(server: ClickHouseServer) -> AsyncIterator[ClickHouseClient]:
    client = connect(server.port)
    yield client
    await client.close()


@pytest.fixture(params=["clickhouse-18.16", "chdb"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[ClickHouse]:
    if request.param == "chdb":
        yield ChdbClickHouse(request.getfixturevalue("chdb_session"))
        return
    client = connect(request.getfixturevalue("server").port)
    yield client
    await client.close()


# --- the same scenarios on both backends ---------------------------------------------------------------


@dataclass(frozen=True)
class Scenario:
    id: str
    kind: str
    options: dict[str, Any]
    violations: float
    samples: list[dict[str, Any]]
    group: str = "BTC"
    phase: PhaseRecord | None = None
    status: CheckStatus = field(default=CheckStatus.FAIL)


SCENARIOS = [
    Scenario(
        "negatives-by-symbol",
        "negatives",
        {"columns": ["volume", "threshold"], "group_by": ["symbol"]},
        3,
        [
            {"symbol": "BTC", "rows": 2, "volume < 0": 2, "threshold < 0": 1},
            {"symbol": "ETH", "rows": 1, "volume < 0": 1, "threshold < 0": 0},
        ],
    ),
    Scenario(
        "negatives-rows",
        "negatives",
        {"columns": ["volume", "threshold"]},
        3,
        [
            {"volume": -5, "threshold": 0.1},
            {"volume": -3, "threshold": 0.1},
            {"volume": -1, "threshold": -0.2},
        ],
    ),
    Scenario(
        "negatives-where-group",
        "negatives",
        {"columns": ["volume", "threshold"], "where": "symbol = %(group)s"},
        2,
        [{"volume": -5, "threshold": 0.1}, {"volume": -1, "threshold": -0.2}],
    ),
    Scenario("negatives-none", "negatives", {"columns": ["price"]}, 0, [], status=CheckStatus.OK),
    Scenario(
        "duplicates",
        "duplicates",
        {"key": ["symbol", "ts"]},
        3,
        [
            {"symbol": "BTC", "ts": "2024-01-01 00:00:00", "rows": 3},
            {"symbol": "ETH", "ts": "2024-01-01 00:01:00", "rows": 2},
        ],
    ),
    Scenario(
        "duplicates-where-phase",
        "duplicates",
        {"key": ["symbol", "ts"], "where": "ts >= %(phase_start)s"},
        1,
        [{"symbol": "ETH", "ts": "2024-01-01 00:01:00", "rows": 2}],
        phase=phase("2024-01-01 00:01:00", "2024-01-02 00:00:00"),
    ),
    Scenario(
        "duplicates-null-key",
        "duplicates",
        {"key": ["symbol", "price"]},
        2,
        [{"symbol": "BTC", "price": 100, "rows": 2}, {"symbol": "BTC", "price": None, "rows": 2}],
    ),
    Scenario(
        "duplicates-null-is-not-zero",
        "duplicates",
        {"table": "conflated", "key": ["k"]},
        1,
        [{"k": None, "rows": 2}],
    ),
    Scenario(
        "duplicates-one-key",
        "duplicates",
        {"key": ["symbol"]},
        8,
        [{"symbol": "BTC", "rows": 5}, {"symbol": "ETH", "rows": 4}, {"symbol": "SOL", "rows": 2}],
    ),
    Scenario(
        "null-count",
        "null_coverage",
        {"columns": ["price", "volume"]},
        4,
        [{"column": "price", "nulls": 4, "rows": 11, "ratio": 4 / 11}],
    ),
    Scenario(
        "null-ratio",
        "null_coverage",
        {"columns": ["price", "volume"], "ratio": True, "fail_above": 0.5, "warn_above": 0.25},
        4 / 11,
        [{"column": "price", "nulls": 4, "rows": 11, "ratio": 4 / 11}],
        status=CheckStatus.WARN,
    ),
    Scenario(
        "null-ratio-where-group",
        "null_coverage",
        {"columns": ["price"], "ratio": True, "where": "symbol = %(group)s", "fail_above": 0.4},
        0.5,
        [{"column": "price", "nulls": 1, "rows": 2, "ratio": 0.5}],
        group="SOL",
    ),
    Scenario(
        "null-ratio-no-rows",
        "null_coverage",
        {"columns": ["price"], "ratio": True, "where": "symbol = %(group)s"},
        0,
        [],
        group="DOGE",
        status=CheckStatus.OK,
    ),
    Scenario("null-none", "null_coverage", {"columns": ["volume"]}, 0, [], status=CheckStatus.OK),
    Scenario(
        "sql-number",
        "sql",
        {"sql": "SELECT count() FROM bars WHERE symbol = %(group)s AND volume < 0"},
        2,
        [],
    ),
    Scenario(
        "sql-rows",
        "sql",
        {"sql": "SELECT symbol, ts, price FROM bars WHERE price IS NULL ORDER BY symbol, ts"},
        4,
        [
            {"symbol": "BTC", "ts": "2024-01-01 00:00:00", "price": None},
            {"symbol": "BTC", "ts": "2024-01-01 00:02:00", "price": None},
            {"symbol": "ETH", "ts": "2024-01-01 00:01:00", "price": None},
            {"symbol": "SOL", "ts": "2024-01-02 00:01:00", "price": None},
        ],
    ),
    Scenario(
        "sql-many-rows",
        "sql",
        {
            "sql": "SELECT symbol, volume FROM bars ORDER BY symbol, ts, volume",
            "fail_above": 20,
            "warn_above": 10,
        },
        11,
        [
            {"symbol": "BTC", "volume": 10},
            {"symbol": "BTC", "volume": 10},
            {"symbol": "BTC", "volume": 10},
            {"symbol": "BTC", "volume": -5},
            {"symbol": "BTC", "volume": -1},
        ],
        status=CheckStatus.WARN,
    ),
    Scenario(
        "sql-every-parameter",
        "sql",
        {
            "sql": "SELECT count() FROM bars WHERE ts BETWEEN %(phase_start)s AND %(phase_end)s"
            " AND symbol = %(group)s AND %(host)s = 'bigblack'"
        },
        4,
        [],
        phase=phase("2024-01-01 00:00:00", "2024-01-01 00:01:00"),
    ),
    Scenario(
        "sql-no-rows",
        "sql",
        {"sql": "SELECT symbol FROM bars WHERE volume > 1000"},
        0,
        [],
        status=CheckStatus.OK,
    ),
]


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.id for s in SCENARIOS])
async def test_checks_find_exact_violations_and_samples(backend: ClickHouse, scenario: Scenario) -> None:
    """Each built-in kind reports the exact violations, samples and status on ClickHouse 18.16 and on chdb."""
    check = make_check(scenario.kind, **scenario.options)
    result: CheckResult = await check.run(context(backend, scenario.group, scenario.phase))
    assert (result.name, result.kind) == (f"{scenario.kind}-check", scenario.kind)
    assert result.violations == scenario.violations
    assert list(result.samples) == scenario.samples
    assert result.status is scenario.status
    assert result.duration_seconds > 0
    assert result.threshold == {
        "warn_above": scenario.options.get("warn_above"),
        "fail_above": scenario.options.get("fail_above", 0),
    }


async def test_backends_are_old_and_new_clickhouse(backend: ClickHouse) -> None:
    """The two backends really are the old server (18.16) and a current release (chdb)."""
    version = str((await backend.query("SELECT version()")).rows[0][0])
    major = int(version.split(".")[0])
    assert major == 18 if isinstance(backend, ClickHouseClient) else major >= 23


# --- thresholds and the reported SQL -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("warn_above", "fail_above", "status"),
    [
        (None, 3, CheckStatus.OK),
        (2, 5, CheckStatus.WARN),
        (None, 2, CheckStatus.FAIL),
        (1, 2, CheckStatus.FAIL),
        (3, 5, CheckStatus.OK),
    ],
)
async def test_thresholds_decide_the_status(
    real: ClickHouseClient, warn_above: float | None, fail_above: float, status: CheckStatus
) -> None:
    """Three negatives are ok, warn or fail according to warn_above and fail_above (strictly above)."""
    check = make_check(
        "negatives", columns=["volume", "threshold"], warn_above=warn_above, fail_above=fail_above
    )
    result = await check.run(context(real))
    assert (result.violations, result.status) == (3, status)
    assert result.threshold == {"warn_above": warn_above, "fail_above": fail_above}


async def test_reported_sql_is_the_count_query_with_placeholders(real: ClickHouseClient) -> None:
    """The result's ``sql`` is the count query as sent, with ``%(group)s`` and never the value pasted in."""
    check = make_check("negatives", columns=["volume"], where="symbol = %(group)s")
    result = await check.run(context(real, group="ETH"))
    assert result.sql == "SELECT count() FROM `bars` WHERE (`volume` < 0) AND (\nsymbol = %(group)s\n)"
    assert result.violations == 1


async def test_where_with_a_trailing_comment_still_works(real: ClickHouseClient) -> None:
    """An operator's ``where`` ending in a ``--`` comment cannot swallow the closing parenthesis."""
    check = make_check("duplicates", key=["symbol", "ts"], where="symbol = %(group)s -- only this group")
    assert (await check.run(context(real))).violations == 2


async def test_replacing_merge_tree_duplicates_vanish_after_optimize_final(
    server: ClickHouseServer, real: ClickHouseClient
) -> None:
    """Duplicates inserted in two parts of a ReplacingMergeTree are found, and gone after OPTIMIZE FINAL."""
    server.execute(
        "CREATE TABLE trades (id UInt64, symbol String, qty Float64) ENGINE = ReplacingMergeTree ORDER BY id",
        "SYSTEM STOP MERGES trades",  # else a background merge may dedupe before the first check
        "INSERT INTO trades VALUES (1, 'BTC', 1), (2, 'BTC', 2), (3, 'ETH', 3)",
        "INSERT INTO trades VALUES (2, 'BTC', 2), (3, 'ETH', 3)",
    )
    check = make_check("duplicates", table="default.trades", key=["id"])
    before = await check.run(context(real))
    assert (before.violations, before.status) == (2, CheckStatus.FAIL)
    assert list(before.samples) == [{"id": 2, "rows": 2}, {"id": 3, "rows": 2}]
    server.execute("SYSTEM START MERGES trades", "OPTIMIZE TABLE trades FINAL")
    after = await check.run(context(real))
    assert (after.violations, after.status, list(after.samples)) == (0, CheckStatus.OK, [])


# --- the readonly guard and the limits -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("sql", "refusal"),
    [
        ("INSERT INTO bars VALUES ('XRP', 0, '2024-01-03 00:00:00', -1, NULL)", "Cannot insert into table"),
        ("ALTER TABLE bars DELETE WHERE 1", "Cannot execute query"),
        ("DROP TABLE bars", "Cannot drop table"),
        ("SELECT count() FROM bars SETTINGS readonly = 0, max_threads = 64", "Cannot execute SET query"),
    ],
    ids=["insert", "alter-delete", "drop", "settings"],
)
async def test_writes_are_refused_by_the_server(
    server: ClickHouseServer, real: ClickHouseClient, sql: str, refusal: str
) -> None:
    """A custom sql check that writes, deletes, drops or lifts its limits is refused (readonly=1)."""
    with pytest.raises(CheckQueryError) as caught:
        await make_check("sql", sql=sql).run(context(real))
    assert str(caught.value) == f"ClickHouse 127.0.0.1:{server.port}: Code: 164. {refusal} in readonly mode"
    assert not caught.value.temporary
    assert real.retries == 0
    assert server.execute("SELECT count() FROM bars").strip() == "11"


async def test_every_query_carries_the_configured_limits(real: ClickHouseClient) -> None:
    """readonly, max_threads and max_execution_time are in force for each query."""
    answer = await real.query(
        "SELECT name, value FROM system.settings WHERE name IN %(names)s ORDER BY name",
        {"names": ("max_execution_time", "max_threads", "readonly")},
    )
    assert [tuple(row) for row in answer.rows] == [
        ("max_execution_time", "7"),
        ("max_threads", "2"),
        ("readonly", "1"),
    ]


async def test_max_execution_time_stops_a_long_query(server: ClickHouseServer) -> None:
    """A query longer than max_execution_time is stopped by the server and reported as one line."""
    client = connect(server.port, max_execution_time=1)
    started = time.monotonic()
    try:
        with pytest.raises(
            CheckQueryError, match=r"^ClickHouse 127\.0\.0\.1:\d+: Code: 159\. Timeout exceeded"
        ):
            await client.query("SELECT count() FROM system.numbers")
    finally:
        await client.close()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(("user", "max_threads"), [("reader", None), ("settable_reader", "2")])
async def test_read_only_profiles_still_refuse_writes(
    server: ClickHouseServer, user: str, max_threads: str | None
) -> None:
    """Users whose profile is readonly=1 or readonly=2 run checks, and writes stay refused."""
    client = connect(server.port, user=user)
    try:
        assert (await client.query("SELECT count() FROM bars")).rows == [(11,)]
        with pytest.raises(CheckQueryError, match=r"Code: 164\. Cannot drop table in readonly mode"):
            await client.query("DROP TABLE bars")
        sent = await client.query("SELECT value FROM system.settings WHERE name = 'max_threads'")
    finally:
        await client.close()
    if max_threads is not None:  # readonly=2 lets the client send its limits (readonly=1: the profile's)
        assert sent.rows == [(max_threads,)]


async def test_a_refused_query_leaves_readonly_in_force(
    server: ClickHouseServer, real: ClickHouseClient
) -> None:
    """After the server refuses a query's own SETTINGS, the next queries still run with readonly = 1."""
    with pytest.raises(CheckQueryError, match=r"Code: 164\."):
        await real.query("SELECT count() FROM bars SETTINGS max_threads = 8")
    answer = await real.query("SELECT value FROM system.settings WHERE name = 'readonly'")
    assert answer.rows == [("1",)]
    with pytest.raises(CheckQueryError, match=r"Code: 164\. Cannot execute query in readonly mode"):
        await real.query("ALTER TABLE bars DELETE WHERE 1")
    assert server.execute("SELECT count() FROM bars").strip() == "11"


class _ReadOnlyProfileDriver:
    """A driver client for a current server: it refuses what a read-only session may not change."""

    def __init__(self, readonly: int, calls: list[dict[str, Any]]) -> None:
        self.readonly = readonly  # the user's profile
        self.calls = calls
        self.connection = self
        self.connected = True
        self.server_info = self

    def get_timezone(self) -> str:
        return "UTC"

    def execute(
        self, text: str, with_column_types: bool = False, settings: dict[str, Any] | None = None
    ) -> Any:
        settings = dict(settings or {})
        self.calls.append(settings)
        if "system.settings" in text and not with_column_types:  # the client's look at its profile
            return [(str(self.readonly),)]
        refused = [name for name in settings if self.readonly == 1 or (self.readonly and name == "readonly")]
        in_force = settings.get("readonly", self.readonly)
        if in_force and "SETTINGS max_threads" in text:  # the query's own clause, under readonly
            refused.append("max_threads")
        if refused:
            message = f"DB::Exception: Cannot modify '{refused[0]}' setting in readonly mode. (READONLY)"
            raise ch.driver_errors.ServerException(message, 164)
        return [(1,)], [("1", "UInt8")]

    def disconnect(self) -> None:
        pass


@pytest.mark.parametrize(
    ("readonly", "kept"),
    [(2, {"max_execution_time": 7, "max_threads": 2}), (1, {})],
    ids=["readonly-2", "readonly-1"],
)
async def test_settings_a_read_only_profile_refuses_are_never_sent(
    monkeypatch: pytest.MonkeyPatch, readonly: int, kept: dict[str, int]
) -> None:
    """The profile is read once: readonly=2 gets the limits without readonly, readonly=1 gets no setting."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ch, "Client", lambda **_connection: _ReadOnlyProfileDriver(readonly, calls))
    client = connect(9000)
    with capture_logs() as logs:
        assert (await client.query("SELECT 1", {})).rows == [(1,)]
        assert (await client.query("SELECT 1", {})).rows == [(1,)]
    assert calls == [{}, kept, kept]
    assert [e["event"] for e in logs] == ["clickhouse.readonly_profile"]
    assert client.retries == 0


async def test_a_refused_setting_never_turns_readonly_off(monkeypatch: pytest.MonkeyPatch) -> None:
    """A query's SETTINGS refused under readonly=1 (error 164) fails alone; later queries keep readonly."""
    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(ch, "Client", lambda **_connection: _ReadOnlyProfileDriver(0, calls))
    client = connect(9000)
    with pytest.raises(CheckQueryError, match=r"Code: 164\. Cannot modify 'max_threads' setting"):
        await client.query("SELECT count() FROM bars SETTINGS max_threads = 8")
    with pytest.raises(CheckQueryError, match=r"Code: 164\. Cannot modify 'max_threads' setting"):
        await client.query("SELECT count() FROM bars SETTINGS max_threads = 8")
    assert (await client.query("ALTER TABLE bars DELETE WHERE 1")).rows == [(1,)]
    limits = {"max_execution_time": 7, "max_threads": 2, "readonly": 1}
    assert calls == [{}, limits, limits, limits]


def test_on_current_clickhouse_a_query_cannot_turn_readonly_off(tmp_path: Path) -> None:
    """On chdb, a check's SETTINGS refused under readonly fails alone, and a later ALTER is still refused."""
    try:
        import chdb  # noqa: F401
    except ImportError:
        _chdb_session(tmp_path)  # skips, or fails under CI, as the other chdb tests do
    settings = "SELECT count() FROM bars SETTINGS max_threads = 8"
    alter = "ALTER TABLE bars DELETE WHERE 1"
    proc = subprocess.run(
        [sys.executable, "-m", "tests.harness.chdb_driver", str(tmp_path / "db"), settings, alter],
        cwd=Path(__file__).resolve().parent.parent,
        capture_output=True,
        text=True,
        check=True,
    )
    answers = json.loads(proc.stdout.splitlines()[-1])
    assert "Cannot modify 'max_threads' setting in readonly mode" in answers[settings]
    assert "Cannot execute query in readonly mode" in answers[alter]
    assert answers["count"] == 1


class _AddressedDriver(_ReadOnlyProfileDriver):
    """A driver client that records where it connected and whether it was closed."""

    def __init__(self, where: tuple[str, int], log: list[Any]) -> None:
        super().__init__(0, [])
        self.where = where
        self.log = log
        self.closed = False
        log.append(self)

    def disconnect(self) -> None:
        self.closed = True


async def test_the_tunnel_endpoint_is_asked_before_each_query(monkeypatch: pytest.MonkeyPatch) -> None:
    """A client behind a tunnel connects where the tunnel is now; connections to a former port are closed."""
    made: list[_AddressedDriver] = []
    monkeypatch.setattr(ch, "Client", lambda **c: _AddressedDriver((c["host"], c["port"]), made))
    ports = iter([40001, 40001, 40002])

    async def endpoint() -> tuple[str, int]:
        return "127.0.0.1", next(ports)

    client = connect(9000, host="ch.internal", endpoint=endpoint)
    await client.query("SELECT 1")
    await client.query("SELECT 1")
    await client.query("SELECT 1")  # the SSH connection was replaced: a new tunnel, a new port
    assert [d.where for d in made] == [("127.0.0.1", 40001), ("127.0.0.1", 40002)]
    assert made[0].closed and not made[1].closed
    assert client.address == "ch.internal:9000"  # messages name the server, not the tunnel
    await client.close()


async def test_a_tunnel_that_cannot_be_opened_is_the_query_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """When the tunnel cannot be opened, the query fails with one temporary line and no connection."""
    made: list[_AddressedDriver] = []
    monkeypatch.setattr(ch, "Client", lambda **c: _AddressedDriver((c["host"], c["port"]), made))

    async def endpoint() -> tuple[str, int]:
        raise OSError("bigblack: connection refused")

    client = connect(9000, host="ch.internal", endpoint=endpoint)
    with pytest.raises(CheckQueryError, match=r"^ClickHouse ch.internal:9000: no tunnel: bigblack") as caught:
        await client.query("SELECT 1")
    assert caught.value.temporary
    assert made == []


# --- errors ---------------------------------------------------------------------------------------------


async def test_unreachable_port_fails_fast_with_a_clear_message() -> None:
    """Nothing listening: three quick attempts, two logged retries, then one clear temporary error."""
    client = connect(free_port())
    started = time.monotonic()
    with capture_logs() as logs, pytest.raises(CheckQueryError) as caught:
        await make_check("negatives", columns=["volume"]).run(context(client))
    await client.close()
    assert time.monotonic() - started < 2
    assert str(caught.value) == f"cannot connect to ClickHouse at {client.address}: Connection refused"
    assert caught.value.temporary
    retries = [entry for entry in logs if entry["event"] == "clickhouse.retry"]
    assert [(r["attempt"], r["server"]) for r in retries] == [(1, client.address), (2, client.address)]
    assert client.retries == 2


async def test_server_errors_are_one_line_and_not_retried(real: ClickHouseClient) -> None:
    """A syntax error is reported once, on one line, without the server's stack trace."""
    with capture_logs() as logs, pytest.raises(CheckQueryError) as caught:
        await make_check("sql", sql="SELEC 1").run(context(real))
    message = str(caught.value)
    assert message.startswith(f"ClickHouse {real.address}: Code: 62. Syntax error")
    assert "\n" not in message and "Stack trace" not in message and len(message) <= 300
    assert real.retries == 0 and logs == []


async def test_a_missing_table_is_an_error_not_ok(real: ClickHouseClient) -> None:
    """A check on a table that does not exist raises (the runner's status error), it never reads as ok."""
    with pytest.raises(CheckQueryError, match=r"Code: 60\. Table default\.nope doesn't exist"):
        await make_check("null_coverage", table="nope", columns=["price"]).run(context(real))


async def test_wrong_password_is_never_shown(server: ClickHouseServer) -> None:
    """A refused login is reported without the password and without retries."""
    client = connect(server.port, password="hunter2-do-not-print")  # noqa: S106 - a made-up password
    with pytest.raises(CheckQueryError) as caught:
        await client.query("SELECT 1")
    await client.close()
    assert "hunter2" not in str(caught.value)
    assert str(caught.value).startswith(f"ClickHouse {client.address}: Code: 193. Wrong password")
    assert client.retries == 0


async def test_unknown_parameter_is_named(real: ClickHouseClient) -> None:
    """A custom query using a parameter that does not exist says which one, and what exists."""
    with pytest.raises(CheckQueryError) as caught:
        await make_check("sql", sql="SELECT count() FROM bars WHERE symbol = %(symbol)s").run(context(real))
    assert str(caught.value) == (
        "the query uses %(symbol)s, which is not a parameter (group, host, phase_end, phase_start)"
    )


async def test_nan_is_an_error_not_ok(real: ClickHouseClient) -> None:
    """A custom query answering NaN raises: NaN compares false with every threshold and would read as ok."""
    with pytest.raises(ValueError, match="NaN"):
        await make_check("sql", sql="SELECT 0 / 0").run(context(real))


# --- retries ---------------------------------------------------------------------------------------------


async def test_transient_error_is_retried_then_succeeds(
    real: ClickHouseClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A network error on the first attempt is logged as a retry; the second attempt answers."""
    attempts: list[str] = []
    run = real._run

    def flaky(sql: str, params: Mapping[str, Any] | None, where: tuple[str, int]) -> QueryResult:
        attempts.append(sql)
        if len(attempts) == 1:
            raise ch.driver_errors.NetworkError("Connection reset by peer")
        return run(sql, params, where)

    monkeypatch.setattr(real, "_run", flaky)
    with capture_logs() as logs:
        result = await make_check("sql", sql="SELECT count() FROM bars").run(context(real))
    assert (result.violations, len(attempts), real.retries) == (11, 2, 1)
    assert [(e["event"], e["log_level"], e["attempt"]) for e in logs] == [("clickhouse.retry", "warning", 1)]
    assert logs[0]["error"] == f"ClickHouse {real.address}: connection lost: Connection reset by peer"


async def test_retry_reaches_a_server_that_comes_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed under a pooled connection and restarted during the backoff is reached by a retry."""
    server = ClickHouseServer(tmp_path / "clickhouse").start()
    client = connect(server.port)
    try:
        assert (await client.query("SELECT 1")).rows == [(1,)]
        server.kill()
        monkeypatch.setattr(ch, "RETRY_WAIT", tenacity.wait_fixed(1.0))
        restart = threading.Timer(0.2, server.start)
        restart.start()
        try:
            answer = await client.query("SELECT 2")
        finally:
            await asyncio.to_thread(restart.join)
        assert answer.rows == [(2,)]
        assert client.retries >= 1
    finally:
        await client.close()
        server.stop()


# --- render ---------------------------------------------------------------------------------------------


def test_render_escapes_values_like_the_driver() -> None:
    """render() writes strings, NULL, dates and aware datetimes (in the server's zone) as the driver does."""
    sql = "SELECT %(s)s, %(n)s, %(i)s, %(d)s, %(t)s, %(l)s, 100%%"
    params = {
        "s": "it's\\ok",
        "n": None,
        "i": 42,
        "d": date(2024, 1, 2),
        "t": datetime.fromisoformat("2024-01-01T12:00:00+02:00"),
        "l": ("a", "b"),
    }
    assert render(sql, params) == (
        "SELECT 'it\\'s\\\\ok', NULL, 42, '2024-01-02', '2024-01-01 10:00:00', ('a', 'b'), 100%"
    )
    assert render("SELECT %(t)s", {"t": at("2024-01-01 10:00:00")}, timezone="Europe/Berlin") == (
        "SELECT '2024-01-01 11:00:00'"
    )
