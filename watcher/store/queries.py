"""The store's reads and writes, as plain functions of a connection. They run in the store's thread only.

Records are kept as msgspec JSON (it keeps each datetime's UTC offset and microseconds, where msgpack would
turn it into UTC); the columns beside a body are copies of what queries filter and sort on.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import NamedTuple

import msgspec

from watcher.records import CheckRun, CleanRecord, DeliveryStatus, Event, GateAction, PhaseRecord, PhaseStatus
from watcher.store.connection import transaction

_encode = msgspec.json.Encoder().encode
_phase = msgspec.json.Decoder(PhaseRecord)
_event = msgspec.json.Decoder(Event)
_clean = msgspec.json.Decoder(CleanRecord)
_check_run = msgspec.json.Decoder(CheckRun)
_gate = msgspec.json.Decoder(GateAction)


def _body(record: PhaseRecord | Event | CleanRecord | CheckRun | GateAction) -> str:
    return _encode(record).decode()


def utc_text(at: datetime) -> str:
    """``at`` as sortable text: UTC, microseconds, fixed width. Naive datetimes are refused."""
    if at.utcoffset() is None:
        raise ValueError(f"the store keeps timezone-aware datetimes only, got {at.isoformat()}")
    return at.astimezone(UTC).isoformat(timespec="microseconds")


def _now() -> str:
    return utc_text(datetime.now(UTC))


def load_tracks(conn: sqlite3.Connection, host: str) -> dict[str, bytes]:
    rows = conn.execute("SELECT group_name, state FROM tracks WHERE host = ?", (host,))
    return {group: bytes(state) for group, state in rows}


def commit(
    conn: sqlite3.Connection,
    host: str,
    digest: str | None,
    tracks: Mapping[str, bytes | None],
    phases: Sequence[PhaseRecord],
    events: Sequence[Event],
    check_runs: Sequence[CheckRun] = (),
    gates: Sequence[GateAction] = (),
) -> None:
    """Write everything of one poll cycle in one transaction. Records are encoded inside it, so that one that
    cannot be encoded leaves nothing of the cycle behind."""
    now = _now()
    with transaction(conn):
        conn.execute(
            "INSERT INTO meta (key, value) VALUES ('first_commit_at', ?) ON CONFLICT DO NOTHING", (now,)
        )
        conn.execute(
            "INSERT INTO hosts (host, digest, committed_at) VALUES (?, ?, ?) ON CONFLICT (host) DO UPDATE"
            " SET digest = coalesce(excluded.digest, digest), committed_at = excluded.committed_at",
            (host, digest, now),
        )
        for group, state in tracks.items():
            if state is None:
                conn.execute("DELETE FROM tracks WHERE host = ? AND group_name = ?", (host, group))
            else:
                conn.execute(
                    "INSERT INTO tracks (host, group_name, state, updated_at) VALUES (?, ?, ?, ?)"
                    " ON CONFLICT (host, group_name) DO UPDATE SET state = excluded.state,"
                    " updated_at = excluded.updated_at",
                    (host, group, state, now),
                )
        conn.executemany(
            "INSERT INTO phases (id, host, group_name, status, opened_at, completed_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET host = excluded.host,"
            " group_name = excluded.group_name, status = excluded.status, opened_at = excluded.opened_at,"
            " completed_at = excluded.completed_at, body = excluded.body",
            (
                (p.id, p.host, p.group, p.status, utc_text(p.opened_at),
                 None if p.completed_at is None else utc_text(p.completed_at), _body(p))
                for p in phases
            ),
        )  # fmt: skip
        # An event that exists already was stored by an earlier attempt at the same cycle: keep that one, and
        # its delivery state, so that a replay never alerts twice.
        conn.executemany(
            "INSERT INTO events (id, event, host, group_name, at, created_at, body)"
            " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING",
            ((e.id, e.event, e.host, e.group, utc_text(e.at), now, _body(e)) for e in events),
        )
        _upsert_check_runs(conn, check_runs, now)
        _upsert_gates(conn, gates, now)


def _upsert_check_runs(conn: sqlite3.Connection, runs: Sequence[CheckRun], now: str) -> None:
    if not runs:
        return
    conn.executemany(
        "INSERT INTO check_runs (phase_id, check_name, host, group_name, status, updated_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (phase_id, check_name) DO UPDATE SET"
        " status = excluded.status, updated_at = excluded.updated_at, body = excluded.body",
        ((r.phase_id, r.check, r.host, r.group, r.status, now, _body(r)) for r in runs),
    )


def _upsert_gates(conn: sqlite3.Connection, gates: Sequence[GateAction], now: str) -> None:
    if not gates:
        return
    conn.executemany(
        "INSERT INTO gate_actions (phase_id, start_group, host, status, updated_at, body)"
        " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (phase_id, start_group) DO UPDATE SET"
        " status = excluded.status, updated_at = excluded.updated_at, body = excluded.body",
        ((g.phase_id, g.start, g.host, g.status, now, _body(g)) for g in gates),
    )


def check_runs(
    conn: sqlite3.Connection, host: str | None, phase_id: str | None, pending: bool
) -> list[CheckRun]:
    where, params = _filters(host=host, phase_id=phase_id)
    if pending:
        where += (" AND" if where else " WHERE") + " status = 'pending'"
    rows = conn.execute(f"SELECT body FROM check_runs{where} ORDER BY phase_id, check_name", params)  # noqa: S608
    return [_check_run.decode(body) for (body,) in rows]


def gate_actions(
    conn: sqlite3.Connection, host: str | None, phase_id: str | None, pending: bool
) -> list[GateAction]:
    where, params = _filters(host=host, phase_id=phase_id)
    if pending:
        where += (" AND" if where else " WHERE") + " status = 'pending'"
    rows = conn.execute(f"SELECT body FROM gate_actions{where} ORDER BY phase_id, start_group", params)  # noqa: S608
    return [_gate.decode(body) for (body,) in rows]


def phases(
    conn: sqlite3.Connection,
    host: str | None,
    group: str | None,
    status: PhaseStatus | None,
    limit: int | None,
) -> list[PhaseRecord]:
    where, params = _filters(host=host, group_name=group, status=status)
    rows = conn.execute(
        f"SELECT body FROM phases{where} ORDER BY coalesce(completed_at, opened_at) DESC, id DESC LIMIT ?",  # noqa: S608
        (*params, -1 if limit is None else limit),
    )
    return [_phase.decode(body) for (body,) in rows]


def undelivered(conn: sqlite3.Connection, limit: int) -> list[Event]:
    rows = conn.execute("SELECT body FROM events WHERE delivered_at IS NULL ORDER BY seq LIMIT ?", (limit,))
    return [_event.decode(body) for (body,) in rows]


def record_clean(conn: sqlite3.Connection, record: CleanRecord) -> None:
    """A clean is recorded before it runs and again, with its outcome, after: one row per (host, at)."""
    with transaction(conn):
        conn.execute("DELETE FROM cleans WHERE host = ? AND at = ?", (record.host, utc_text(record.at)))
        conn.execute(
            "INSERT INTO cleans (host, at, body) VALUES (?, ?, ?)",
            (record.host, utc_text(record.at), _body(record)),
        )


def cleans(conn: sqlite3.Connection, host: str | None) -> list[CleanRecord]:
    where, params = _filters(host=host)
    rows = conn.execute(f"SELECT body FROM cleans{where} ORDER BY at, seq", params)  # noqa: S608
    return [_clean.decode(body) for (body,) in rows]


def hosts(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute(
        "SELECT host FROM hosts UNION SELECT host FROM tracks UNION SELECT host FROM phases"
        " UNION SELECT host FROM events UNION SELECT host FROM cleans ORDER BY host"
    )
    return [host for (host,) in rows]


def _filters(**columns: str | None) -> tuple[str, tuple[str, ...]]:
    """A WHERE clause for the columns that are not None. Column names come from our code, values are bound."""
    chosen = {column: value for column, value in columns.items() if value is not None}
    if not chosen:
        return "", ()
    return " WHERE " + " AND ".join(f"{column} = ?" for column in chosen), tuple(chosen.values())


def dispatch(conn: sqlite3.Connection, routes: Mapping[str, Sequence[str]]) -> None:
    """Mark events dispatched and give each of them one pending delivery per sink in ``routes[event_id]``."""
    now = _now()
    with transaction(conn):
        for event_id, sinks in routes.items():
            row = conn.execute(
                "UPDATE events SET delivered_at = ? WHERE id = ? AND delivered_at IS NULL RETURNING seq",
                (now, event_id),
            ).fetchone()
            if row is None:
                continue  # dispatched already (a replay)
            conn.executemany(
                "INSERT INTO deliveries (event_seq, sink, status, updated_at) VALUES (?, ?, 'pending', ?)"
                " ON CONFLICT DO NOTHING",
                ((row[0], sink, now) for sink in sinks),
            )


def pending_deliveries(conn: sqlite3.Connection, sink: str, limit: int) -> list[Event]:
    """The sink's next batch, fair between hosts: each host's events in order, the hosts taking turns (its
    first pending event of every host, then the second of every host, ...), so that a host that floods the
    outbox delays its own alerts, not another host's."""
    rows = conn.execute(
        "SELECT body FROM (SELECT e.body, d.event_seq,"
        " row_number() OVER (PARTITION BY e.host ORDER BY d.event_seq) AS turn"
        " FROM deliveries d JOIN events e ON e.seq = d.event_seq WHERE d.sink = ? AND d.status = 'pending')"
        " ORDER BY turn, event_seq LIMIT ?",
        (sink, limit),
    )
    return [_event.decode(body) for (body,) in rows]


def settle_deliveries(
    conn: sqlite3.Connection, sink: str, ids: Sequence[str], status: DeliveryStatus, error: str | None
) -> None:
    """``status`` "delivered", "failed" (permanently), or "pending" (one more failed attempt)."""
    now = _now()
    with transaction(conn):
        conn.executemany(
            "UPDATE deliveries SET status = ?, attempts = attempts + 1, last_error = ?, updated_at = ?"
            " WHERE sink = ? AND event_seq = (SELECT seq FROM events WHERE id = ?)",
            ((status, error, now, sink, event_id) for event_id in ids),
        )


def outbox_depth(conn: sqlite3.Connection) -> int:
    undispatched = conn.execute("SELECT count(*) FROM events WHERE delivered_at IS NULL").fetchone()[0]
    pending = conn.execute("SELECT count(*) FROM deliveries WHERE status = 'pending'").fetchone()[0]
    return int(undispatched) + int(pending)


class SinkDeliveries(NamedTuple):
    """One sink's deliveries, for ``health``: what waits, and how the sink's last attempt went."""

    sink: str
    pending: int  # not delivered yet, to be tried (again)
    retrying: int  # of those, tried at least once
    failed: int  # refused for good
    last_status: DeliveryStatus | None  # of the last attempt ("pending": it failed, to be retried)
    last_error: str | None
    last_at: str | None
    last_delivered_at: str | None


def sink_deliveries(conn: sqlite3.Connection) -> list[SinkDeliveries]:
    rows = conn.execute(
        "SELECT sink, count(*) FILTER (WHERE status = 'pending'),"
        " count(*) FILTER (WHERE status = 'pending' AND attempts > 0),"
        " count(*) FILTER (WHERE status = 'failed'),"
        " max(updated_at) FILTER (WHERE status = 'delivered')"
        " FROM deliveries GROUP BY sink ORDER BY sink"
    ).fetchall()
    found = []
    for sink, pending, retrying, failed, delivered_at in rows:
        status, error, at = conn.execute(
            "SELECT status, last_error, updated_at FROM deliveries WHERE sink = ? AND attempts > 0"
            " ORDER BY updated_at DESC, event_seq DESC LIMIT 1",
            (sink,),
        ).fetchone() or (None, None, None)
        found.append(SinkDeliveries(sink, pending, retrying, failed, status, error, at, delivered_at))
    return found


def last_event(conn: sqlite3.Connection, host: str, kinds: Sequence[str]) -> Event | None:
    marks = ", ".join("?" for _ in kinds)
    row = conn.execute(
        f"SELECT body FROM events WHERE host = ? AND event IN ({marks}) ORDER BY seq DESC LIMIT 1",  # noqa: S608
        (host, *kinds),
    ).fetchone()
    return None if row is None else _event.decode(row[0])
