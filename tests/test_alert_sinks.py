"""Alert sinks against real parts: a recording HTTP receiver, and Debian's Alertmanager 0.25."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import re
import time
import traceback
import unicodedata
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError
from structlog.testing import capture_logs

from tests.harness.alertmanager import Alertmanager
from tests.harness.receiver import Receiver, Reply
from tests.harness.services import free_port
from watcher.alerts import DeliveryError, build_sink, wants
from watcher.alerts._http import retry_after
from watcher.alerts.alertmanager import AlertmanagerSink, alerts
from watcher.alerts.config import AlertConfig, AlertmanagerConfig, SlackConfig, WebhookConfig
from watcher.alerts.console import ConsoleSink
from watcher.alerts.slack import SlackSink, payload
from watcher.alerts.webhook import WebhookSink, signature
from watcher.events import phase_completed
from watcher.records import Event, PhaseRecord

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
TOKEN = "T0KEN-b7f3e9c1d2a4"  # stands for the secret part of a Slack or webhook URL
SECRET = "hmac-s3cret-9f8e7d"
HOSTILE = ["<!channel>", "<@U123>", "<http://evil.example|click me>", "<!here|x>", "a & b", "*bold* _it_ `c`"]
BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
# A group name as a hostile host may choose it: a megabyte, a broadcast, and bidi and zero-width characters.
HUGE_GROUP = ("<!channel> \u202etrain\u202c\u200b@here " * 40_000)[:1_000_000]
ALERTS = TypeAdapter(list[AlertConfig])


def event(kind: str, *, host: str = "gpu-01", group: str | None = "train", at: datetime = T0,
          id: str | None = None, **data: Any) -> Event:  # fmt: skip
    """An event shaped as watcher/events.py builds them."""
    key = id or f"{kind}:{host}:{group}:{at.isoformat()}"
    return Event(id=key, event=kind, host=host, group=group, at=at, data=data)


def check_event(kind: str, status: str, level: str, *, host: str = "gpu-01", at: datetime = T0) -> Event:
    return event(kind, host=host, at=at, severity=level, check="negatives", status=status,
                 summary=f"{host}/train: check negatives {status}")  # fmt: skip


def failed_phase(labels: list[str], *, group: str = "train", tasks: int | None = None) -> Event:
    tasks = tasks if tasks is not None else len(labels) + 5
    record = PhaseRecord(
        id=f"gpu-01/{group}/1", host="gpu-01", group=group, status="completed", opened_at=T0,
        completed_at=T0 + timedelta(hours=1), outcome="failed", tasks=tasks,
        counts={"failed": tasks - 5, "success": 5}, failed_labels=labels,
    )  # fmt: skip
    return phase_completed(record)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as hook:
        yield hook


def webhook(receiver: Receiver, **options: Any) -> WebhookSink:
    config = WebhookConfig(name="ops", url=f"{receiver.url}/hook/{TOKEN}?token={TOKEN}", **options)  # type: ignore[arg-type]
    return WebhookSink(config, clock=lambda: 1_700_000_000.0)


# --- webhook --------------------------------------------------------------------------------------------


async def test_webhook_posts_the_documented_body_and_a_verifiable_signature(receiver: Receiver) -> None:
    """The body is ``{schema_version, events}``; the HMAC over ``"{timestamp}." + body`` verifies."""
    events = [
        failed_phase(["a", "b"]),
        event("host.down", group=None, id="host.down:gpu-01,ü", severity="critical"),
    ]
    sink = webhook(receiver, secret=SECRET)
    await sink.deliver(events)
    await sink.close()
    (request,) = receiver.requests
    assert request.method == "POST" and request.path == f"/hook/{TOKEN}?token={TOKEN}"
    assert request.headers["content-type"] == "application/json"
    assert request.json() == {"schema_version": 1, "events": [e.to_dict() for e in events]}
    ids = [unquote(i) for i in request.headers["x-pueue-watcher-event-ids"].split(",")]
    assert ids == [e.id for e in events]
    timestamp = request.headers["x-pueue-watcher-timestamp"]
    assert timestamp == "1700000000"
    expected = hmac.new(SECRET.encode(), f"{timestamp}.".encode() + request.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(request.headers["x-pueue-watcher-signature"], f"sha256={expected}")
    assert signature(SECRET, int(timestamp), request.body) == f"sha256={expected}"


async def test_webhook_without_a_secret_is_not_signed(receiver: Receiver) -> None:
    """No secret: no signature or timestamp header, the same body."""
    sink = webhook(receiver)
    await sink.deliver([event("gate.held", severity="warning")])
    await sink.close()
    (request,) = receiver.requests
    assert "x-pueue-watcher-signature" not in request.headers
    assert "x-pueue-watcher-timestamp" not in request.headers
    assert request.json()["events"][0]["event"] == "gate.held"


async def test_webhook_errors_are_classified_through_a_scripted_sequence(receiver: Receiver) -> None:
    """500, a hang past the timeout, 429 with Retry-After, 503 with an HTTP-date, then 200 delivers."""
    date = format_datetime(datetime.now(UTC) + timedelta(seconds=30), usegmt=True)
    receiver.script(
        Reply(500, b"boom"),
        Reply(200, delay=3),
        Reply(429, headers={"Retry-After": "1"}),
        Reply(503, headers={"Retry-After": date}),
    )
    sink = webhook(receiver, timeout=0.3)
    batch = [event("host.down", group=None)]
    outcomes = []
    for _ in range(4):
        started = time.monotonic()
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver(batch)
        outcomes.append((caught.value.temporary, caught.value.retry_after, time.monotonic() - started))
    await sink.deliver(batch)
    await sink.close()
    assert [o[:1] for o in outcomes] == [(True,)] * 4
    assert outcomes[0][1] is None and outcomes[1][1] is None and outcomes[2][1] == 1.0
    assert outcomes[3][1] is not None and 25 < outcomes[3][1] <= 30
    assert outcomes[1][2] < 1.5, "the hang is cut at the timeout"
    assert len(receiver.requests) == 5


@pytest.mark.parametrize("status", [400, 401, 404, 410, 301])
async def test_webhook_refusals_are_permanent(receiver: Receiver, status: int) -> None:
    """A 4xx other than 408/429 (or a redirect, never followed) will not get better by retrying."""
    receiver.script(Reply(status, b"invalid_token", headers={"Location": "http://127.0.0.1:1/"}))
    sink = webhook(receiver)
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver([event("host.down", group=None)])
    await sink.close()
    assert not caught.value.temporary
    assert f"HTTP {status}: invalid_token" in str(caught.value)


async def test_unreachable_target_is_temporary() -> None:
    """Connection refused is a temporary error naming the sink."""
    config = WebhookConfig(name="ops", url=f"http://127.0.0.1:{free_port()}/{TOKEN}")  # type: ignore[arg-type]
    sink = WebhookSink(config)
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver([event("host.down", group=None)])
    await sink.close()
    assert caught.value.temporary and str(caught.value).startswith("webhook 'ops': ConnectError")


async def test_a_secret_across_the_quote_cut_is_redacted_whole(receiver: Receiver) -> None:
    """A token that straddles the 200-character quote, or the 64 KiB that redaction reads, leaks no part."""
    long_secret = "k" + "".join(f"{i:04x}" for i in range(525))  # 2101 characters
    tail = 65_536 - 31 * len(long_secret)  # the 32nd copy straddles the end of what redaction reads
    receiver.script(
        Reply(400, b"x" * 190 + TOKEN.encode()),
        Reply(400, (long_secret * 31 + long_secret[:tail] + "?" * 5000).encode()),
    )
    sink = webhook(receiver, secret=long_secret)
    messages = []
    for _ in range(2):
        with pytest.raises(DeliveryError) as caught:
            await sink.deliver([event("host.down", group=None)])
        messages.append(str(caught.value))
    await sink.close()
    assert messages[0].endswith("x" * 190 + "***")
    assert TOKEN[:6] not in messages[0]
    assert long_secret[:6] not in messages[1] and messages[1].startswith(
        "webhook 'ops': HTTP 400: " + "*" * 93
    )


async def test_an_error_answer_in_a_codec_that_is_no_text_encoding_is_quoted(receiver: Receiver) -> None:
    """``charset=rot13`` (a known codec, not a text encoding) still gives a message, not a crash."""
    receiver.script(Reply(400, b"bad \x1b[2J request", headers={"Content-Type": "text/plain; charset=rot13"}))
    sink = webhook(receiver)
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver([event("host.down", group=None)])
    await sink.close()
    assert str(caught.value) == "webhook 'ops': HTTP 400: bad [2J request"


async def test_webhook_bounds_every_string_but_the_identities(receiver: Receiver) -> None:
    """A megabyte task label and summary arrive cut at 4096 characters; id, host, group, phase whole."""
    phase = failed_phase(["l" * 1_000_000, "ok"], group="g" * 5000)
    sink = webhook(receiver)
    await sink.deliver([phase])
    await sink.close()
    (request,) = receiver.requests
    (sent,) = request.json()["events"]
    expected = phase.to_dict()
    assert {k: sent[k] for k in ("id", "host", "group", "phase")} == {
        k: expected[k] for k in ("id", "host", "group", "phase")
    }
    assert sent["failed_labels"] == ["l" * 4095 + "…", "ok"] and sent["summary"].endswith("…")
    assert len(request.body) < 4 * 5100 + 2 * 4096 + 2000


def test_retry_after_reads_seconds_and_http_dates() -> None:
    """Retry-After is delay-seconds or an HTTP-date; anything else is ignored."""
    now = 1_700_000_000.0
    assert retry_after("120", now) == 120.0
    assert retry_after("Tue, 14 Nov 2023 22:15:00 GMT", now) == 100.0  # now + 100 s
    assert retry_after("Tue, 14 Nov 2023 22:00:00 GMT", now) == 0.0  # in the past
    assert retry_after("soon", now) is None
    assert retry_after(None, now) is None


# --- slack ----------------------------------------------------------------------------------------------


def _texts(message: dict[str, Any]) -> list[str]:
    return [message["text"]] + [b["text"]["text"] for b in message["blocks"]]


def assert_within_slack_limits(message: dict[str, Any]) -> None:
    blocks = message["blocks"]
    assert message["text"] and len(message["text"]) <= 3000
    assert 1 <= len(blocks) <= 50
    assert blocks[0]["type"] == "header" and len(blocks[0]["text"]["text"]) <= 150
    assert all(b["type"] == "section" and len(b["text"]["text"]) <= 3000 for b in blocks[1:])
    for text in _texts(message):
        assert "<" not in text and ">" not in text, text  # every < > is an entity: nothing pings or links
        assert not re.search(r"&(?!amp;|lt;|gt;)", text), text  # and no entity is cut in half


def test_slack_payload_respects_the_limits_with_many_large_events() -> None:
    """120 events with huge summaries and group names: 50 blocks, the last one "… and 72 more events"."""
    events = [
        event("check.failed", group="&" * 4000, id=f"e{i}", severity="critical", summary="<&" * 4000)
        for i in range(120)
    ]
    message = payload(events)
    assert_within_slack_limits(message)
    assert len(message["blocks"]) == 50
    assert message["blocks"][-1]["text"]["text"] == "… and 72 more events"
    assert message["blocks"][0]["text"]["text"] == "pueue-watcher: 120 events (120 critical)"


def test_slack_truncates_100_failed_labels_cleanly() -> None:
    """A phase with 100 failed labels lists 20 of them, then "… and 80 more"."""
    labels = [f"job-{i:03d}" for i in range(100)]
    message = payload([failed_phase(labels)])
    assert_within_slack_limits(message)
    section = message["blocks"][1]["text"]["text"]
    listed = re.findall(r"`(job-\d{3})`", section)
    assert listed == labels[:20]
    assert "`job-019`, … and 80 more" in section
    assert "*Failed (100):*" in section


def test_slack_counts_failed_tasks_beyond_the_kept_labels() -> None:
    """The phase record keeps 20 labels of 100 failures: the line still says "… and 80 more"."""
    message = payload([failed_phase([f"t{i}" for i in range(20)], tasks=105)])
    assert "… and 80 more" in message["blocks"][1]["text"]["text"]


def test_slack_escapes_mentions_and_links_in_remote_text() -> None:
    """Mentions, links and formatting in group names, labels and summaries arrive as inert text."""
    events = [
        failed_phase(HOSTILE, group="<!channel> team & co"),
        event("check.failed", group="<@U123>", severity="critical", summary=" ".join(HOSTILE) + " @channel"),
    ]
    message = payload(events)
    assert_within_slack_limits(message)
    raw = json.dumps(message, ensure_ascii=False)
    assert "<" not in raw and ">" not in raw and "@channel" not in raw
    prose = re.sub(r"`[^`]*`", "", raw)  # no formatting applies inside inline code
    assert "*bold*" not in prose and "_it_" not in prose
    section = message["blocks"][1]["text"]["text"]
    assert "`&lt;!channel&gt; team &amp; co`" in section
    assert "`&lt;http:∕∕evil․example|click me&gt;`" in section


def test_slack_defuses_bare_links_and_drops_bidi_and_zero_width_characters() -> None:
    """Bare URLs, domains and addresses are no links; bidi and zero-width characters are gone, so
    ``@\u200bchannel`` cannot slip a broadcast past the check; the configured host's dots stay."""
    tricks = "see http://evil.example/x or evil.example, mailto:bob@evil.example"
    tricks += " \u202egnp.exe\u202c @\u200bchannel"
    message = payload([
        event("check.failed", host="gpu-01.lab", group="www.evil.example\u2066", severity="critical",
              summary=tricks),
    ])  # fmt: skip
    assert_within_slack_limits(message)
    raw = json.dumps(message, ensure_ascii=False)
    for text in _texts(message):
        assert not re.search(
            r"://|[^\W_]\.[^\W\d_]|(?i:mailto):|(?<!\w)@|@(?i:channel)", text.replace("gpu-01.lab", "")
        )
        assert not [ch for ch in text if ch in BIDI + ZERO_WIDTH], text
    assert "http:∕∕evil․example/x or evil․example, mailto∶bob@evil․example gnp․exe ＠channel" in raw
    assert "`gpu-01.lab` / `www․evil․example`" in raw


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    count=st.integers(1, 70),
    group=st.text(max_size=300),
    labels=st.lists(st.text(max_size=200), max_size=40),
    summary=st.text(max_size=4000),
)
def test_slack_payload_limits_hold_for_any_remote_text(
    count: int, group: str, labels: list[str], summary: str
) -> None:
    """Whatever the host sends, the message fits Slack's limits and holds no raw < or >."""
    events = [failed_phase([*labels, *HOSTILE], group=group)] + [
        event("probe.breach", group=None, id=f"p{i}", severity="warning", summary=summary, probe=group)
        for i in range(count - 1)
    ]
    assert_within_slack_limits(payload(events))


async def test_slack_posts_the_payload_and_honours_429(receiver: Receiver) -> None:
    """429 with Retry-After: 7 is a temporary error after 7 s; then the same message is posted once."""
    receiver.script(Reply(429, b"rate_limited", headers={"Retry-After": "7"}))
    sink = SlackSink(SlackConfig(name="team", url=f"{receiver.url}/services/T000/B000/{TOKEN}"))  # type: ignore[arg-type]
    batch = [failed_phase(["a"]), event("host.down", group=None, severity="critical", summary="down")]
    with pytest.raises(DeliveryError) as caught:
        await sink.deliver(batch)
    assert caught.value.temporary and caught.value.retry_after == 7.0
    await sink.deliver(batch)
    await sink.close()
    assert [r.json() for r in receiver.requests] == [payload(batch)] * 2
    assert receiver.requests[1].headers["content-type"] == "application/json"


# --- secrets --------------------------------------------------------------------------------------------


async def test_no_secret_reaches_an_error_message_or_a_log_line(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    """URL tokens and HMAC secrets stay out of exceptions, tracebacks, reprs, structlog and httpx logs."""
    caplog.set_level(logging.DEBUG)
    echo = f"bad url {receiver.url}/hook/{TOKEN}?token={TOKEN} secret {SECRET}".encode()
    invalid = f"invalid_token {TOKEN} for {receiver.url}/services/T000/B000/{TOKEN}".encode()
    receiver.script(Reply(500, echo), Reply(403, invalid), Reply(200, delay=2))  # hook, team, hook
    hook = webhook(receiver, secret=SECRET, timeout=0.3)
    slack_config = SlackConfig(name="team", url=f"{receiver.url}/services/T000/B000/{TOKEN}")  # type: ignore[arg-type]
    team = SlackSink(slack_config)
    dead = WebhookSink(WebhookConfig(name="dead", url=f"http://127.0.0.1:{free_port()}/{TOKEN}"))  # type: ignore[arg-type]
    seen = [repr(vars(s)) for s in (hook, team, dead)] + [repr(vars(s._target)) for s in (hook, team, dead)]
    seen += [repr(slack_config), str(slack_config.model_dump())]
    with capture_logs() as logs:
        for sink in (hook, team, hook, dead):
            with pytest.raises(DeliveryError) as caught:
                await sink.deliver([event("host.down", group=None)])
            seen += [str(caught.value), "".join(traceback.format_exception(caught.value))]
        await team.deliver([event("host.up", group=None)])  # a success is logged too
        for sink in (hook, team, dead):
            await sink.close()
    with pytest.raises(ValidationError) as refused:
        WebhookConfig.model_validate({"name": "x", "url": f"ftp://{TOKEN}"})
    seen += [str(refused.value), repr(logs), caplog.text]
    assert any("HTTP Request: POST" in line for line in caplog.messages), "httpx's request lines were kept"
    for text in seen:
        assert TOKEN not in text and SECRET not in text, text


# --- alertmanager ---------------------------------------------------------------------------------------


def _labels(alert: dict[str, Any]) -> tuple[str, ...]:
    return tuple(f"{k}={v}" for k, v in sorted(alert["labels"].items()))


def test_events_map_to_alerts_with_stable_labels() -> None:
    """Each firing event maps to its alert; its resolving event resolves exactly the active label set."""
    now = T0 + timedelta(minutes=1)
    firing = [
        check_event("check.failed", "fail", "critical"),
        event("host.down", group=None, severity="critical"),
        event("probe.breach", group=None, severity="warning", probe="disk"),
        event("gate.held", group="eval", severity="warning"),
        failed_phase(["a"]),
        phase_completed(
            PhaseRecord(
                id="p",
                host="gpu-01",
                group="ok",
                status="completed",
                opened_at=T0,
                completed_at=T0,
                outcome="success",
            )
        ),
        event("state.cleaned", group=None),
    ]
    fired = alerts(firing, now=now)
    assert [_labels(a) for a in fired] == [
        ("alertname=PueueCheckFailing", "check=negatives", "group=train", "host=gpu-01", "severity=critical"),
        ("alertname=PueueHostDown", "host=gpu-01", "severity=critical"),
        ("alertname=PueueHostProbeBreach", "host=gpu-01", "probe=disk", "severity=warning"),
        ("alertname=PueueGateHeld", "group=eval", "host=gpu-01", "severity=warning"),
        (
            "alertname=PueuePhaseFailed",
            "group=train",
            "host=gpu-01",
            "phase=gpu-01/train/1",
            "severity=warning",
        ),
    ]
    assert fired[0]["annotations"]["status"] == "fail"
    assert fired[0]["startsAt"] == T0.isoformat()
    assert fired[0]["endsAt"] == (now + timedelta(days=30)).isoformat()
    assert fired[4]["endsAt"] == (T0 + timedelta(hours=2)).isoformat()  # one-shot: completed at T0 + 1 h
    later = T0 + timedelta(hours=2)
    resolving = [
        event("check.recovered", at=later, severity="info", check="negatives", status="ok"),
        event("host.up", group=None, at=later, severity="info"),
        event("probe.recovered", group=None, at=later, severity="info", probe="disk"),
        event("gate.started", group="eval", at=later, severity="info"),
    ]
    active = [a["labels"] for a in fired[:4]]
    resolved = alerts(resolving, now=later, active=active)
    assert [a["labels"] for a in resolved] == active
    assert all(a["endsAt"] == later.isoformat() for a in resolved)
    assert alerts(resolving, now=later) == [], "nothing active, nothing to resolve"
    assert alerts(firing[5:], now=now) == []


LABEL_NAMES = {"alertname", "host", "group", "check", "probe", "phase", "severity"}
ANNOTATION_NAMES = {"summary", "description", "event", "event_id", "status"}


def assert_sanitised(alert: dict[str, Any]) -> None:
    """Label names are ours; values bounded; nothing hidden, no mention; annotations bounded and link-free."""
    assert set(alert["labels"]) <= LABEL_NAMES and set(alert["annotations"]) <= ANNOTATION_NAMES
    assert all(len(v) <= 128 for v in alert["labels"].values()), alert["labels"]
    assert all(len(v) <= 2000 for v in alert["annotations"].values())
    for value in [*alert["labels"].values(), *alert["annotations"].values()]:
        assert not [ch for ch in value if unicodedata.category(ch) in ("Cc", "Cf") and ch != "\n"], value
        assert not re.search(r"[<>]|(?<!\w)@|@(?i:channel|here|everyone)", value), value
    for value in alert["annotations"].values():
        assert "://" not in value


@settings(max_examples=40, deadline=None)
@given(group=st.text(max_size=300), summary=st.text(max_size=3000), status=st.text(max_size=200))
def test_alertmanager_labels_and_annotations_are_sanitised_for_any_remote_text(
    group: str, summary: str, status: str
) -> None:
    """Whatever the host names and writes: fixed label names, bounded clean values, a resolve that matches."""
    group = group + HOSTILE[0] + BIDI + ZERO_WIDTH
    fired = alerts([
        event("check.failed", group=group, severity="critical", check="c", status=status + "<!here>",
              summary=summary + " @channel http://evil.example"),
        failed_phase([summary, *HOSTILE], group=group),
    ], now=T0)  # fmt: skip
    for alert in fired:
        assert_sanitised(alert)
    recovered = event("check.recovered", group=group, at=T0 + timedelta(hours=1), severity="info", check="c")
    (resolved,) = alerts([recovered], now=T0, active=[fired[0]["labels"]])
    assert resolved["labels"] == fired[0]["labels"]


def test_a_megabyte_group_name_makes_a_bounded_alert() -> None:
    """A 1 MB group with ``<!channel>`` and bidi characters: a 128-character label, a bounded body."""
    (alert,) = alerts([check_event_in(HUGE_GROUP, "check.failed")], now=T0)
    assert_sanitised(alert)
    assert alert["labels"]["group"].startswith("‹!channel› train＠here ‹!channel›")
    assert re.fullmatch(r".{119}~[0-9a-f]{8}", alert["labels"]["group"])
    assert len(json.dumps(alert, ensure_ascii=False)) < 4000


def check_event_in(group: str, kind: str, at: datetime = T0, **data: Any) -> Event:
    """A check event of ``group`` (a failure unless told otherwise)."""
    if kind == "check.recovered":
        return event(kind, group=group, at=at, severity="info", check="negatives", status="ok", **data)
    return event(kind, group=group, at=at, severity="critical", check="negatives", status="fail",
                 summary=f"gpu-01/{group}: check negatives fail", **data)  # fmt: skip


async def test_events_alertmanager_ignores_make_no_request(receiver: Receiver) -> None:
    """A batch of a successful phase and a clean sends nothing (and asks nothing)."""
    sink = AlertmanagerSink(AlertmanagerConfig(name="am", url=receiver.url))
    await sink.deliver([event("state.cleaned", group=None), event("phase.completed", outcome="success")])
    await sink.close()
    assert receiver.requests == []


@pytest.fixture
async def am(tmp_path: Path) -> AsyncIterator[tuple[Alertmanager, Receiver]]:
    with Receiver() as hook:
        manager = Alertmanager(tmp_path / "am", f"{hook.url}/notify").start()
        try:
            yield manager, hook
        finally:
            manager.stop()


def _notified(hook: Receiver) -> list[list[tuple[str, tuple[str, ...]]]]:
    """Each notification that reached the receiver: its alerts as (status, labels)."""
    return [[(a["status"], _labels(a)) for a in r.json()["alerts"]] for r in hook.requests]


async def _until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


CHECK_LABELS = ("alertname=PueueCheckFailing", "check=negatives", "group=train", "host=gpu-01")


@pytest.mark.integration
async def test_check_failed_fires_in_alertmanager_and_recovered_resolves(
    am: tuple[Alertmanager, Receiver],
) -> None:
    """check.failed is an active alert with the right labels; check.recovered resolves it."""
    manager, hook = am
    sink = AlertmanagerSink(AlertmanagerConfig(name="am", url=manager.url))
    now = datetime.now(UTC)
    await sink.deliver([check_event("check.failed", "fail", "critical", at=now)])
    (active,) = manager.alerts()
    assert _labels(active) == (*CHECK_LABELS, "severity=critical")
    assert active["status"]["state"] in ("active", "unprocessed")
    assert active["annotations"]["summary"] == "gpu-01/train: check negatives fail"
    await _until(lambda: len(hook.requests) >= 1)
    await sink.deliver([event("check.recovered", at=datetime.now(UTC), severity="info", check="negatives")])
    assert manager.alerts() == []
    await _until(lambda: len(hook.requests) >= 2)
    await sink.close()
    assert _notified(hook) == [
        [("firing", (*CHECK_LABELS, "severity=critical"))],
        [("resolved", (*CHECK_LABELS, "severity=critical"))],
    ]


@pytest.mark.integration
async def test_a_megabyte_hostile_group_reaches_alertmanager_bounded_and_resolves(
    am: tuple[Alertmanager, Receiver],
) -> None:
    """A 1 MB group holding ``<!channel>``, ``@here`` and bidi characters: what Alertmanager holds and
    notifies is bounded and sanitised, and the recovery resolves that very alert."""
    manager, hook = am
    sink = AlertmanagerSink(AlertmanagerConfig(name="am", url=manager.url))
    await sink.deliver([check_event_in(HUGE_GROUP, "check.failed", at=datetime.now(UTC))])
    (held,) = manager.alerts()
    assert_sanitised(held)
    group = held["labels"]["group"]
    assert len(group) == 128 and group.startswith("‹!channel› train＠here")
    await _until(lambda: len(hook.requests) >= 1)
    (notified,) = hook.requests[0].json()["alerts"]
    assert notified["labels"] == held["labels"] and notified["annotations"] == held["annotations"]
    await sink.deliver([check_event_in(HUGE_GROUP, "check.recovered", at=datetime.now(UTC))])
    assert manager.alerts() == []
    await _until(lambda: len(hook.requests) >= 2)
    await sink.close()
    assert [a["status"] for a in hook.requests[1].json()["alerts"]] == ["resolved"]
    assert hook.requests[1].json()["alerts"][0]["labels"] == held["labels"]


@pytest.mark.integration
async def test_a_warning_that_becomes_a_failure_stays_one_alert(am: tuple[Alertmanager, Receiver]) -> None:
    """warned → failed resolves the warning alert: one active alert, and no never-fired resolves notified."""
    manager, hook = am
    sink = AlertmanagerSink(AlertmanagerConfig(name="am", url=manager.url))
    await sink.deliver([check_event("check.warned", "warn", "warning", at=datetime.now(UTC))])
    await _until(lambda: len(hook.requests) >= 1)
    await sink.deliver([check_event("check.failed", "fail", "critical", at=datetime.now(UTC))])
    assert [_labels(a) for a in manager.alerts()] == [(*CHECK_LABELS, "severity=critical")]
    await _until(lambda: len(hook.requests) >= 2)
    await sink.close()
    assert _notified(hook) == [
        [("firing", (*CHECK_LABELS, "severity=warning"))],
        [("firing", (*CHECK_LABELS, "severity=critical")), ("resolved", (*CHECK_LABELS, "severity=warning"))],
    ]


@pytest.mark.integration
async def test_two_watchers_sending_host_down_make_one_notification(
    am: tuple[Alertmanager, Receiver],
) -> None:
    """Two sinks (two watcher instances) send the same host.down: Alertmanager notifies exactly once."""
    manager, hook = am
    config = AlertmanagerConfig(name="am", url=manager.url)
    first, second = AlertmanagerSink(config), AlertmanagerSink(config)
    down = event("host.down", group=None, at=datetime.now(UTC), severity="critical", summary="gpu-01: down")
    await asyncio.gather(first.deliver([down]), second.deliver([down]))
    await _until(lambda: len(hook.requests) >= 1)
    await second.deliver([down])  # the slower instance retries after the notification went out
    await asyncio.sleep(2.5)  # more than two group_intervals: time for a second notification, if any
    assert _notified(hook) == [[("firing", ("alertname=PueueHostDown", "host=gpu-01", "severity=critical"))]]
    up = event("host.up", group=None, at=datetime.now(UTC), severity="info")
    await asyncio.gather(first.deliver([up]), second.deliver([up]))
    await _until(lambda: len(hook.requests) >= 2)
    await asyncio.sleep(1.5)
    for sink in (first, second):
        await sink.close()
    assert _notified(hook)[1:] == [
        [("resolved", ("alertname=PueueHostDown", "host=gpu-01", "severity=critical"))]
    ]


# --- console, configuration, registry -------------------------------------------------------------------


async def test_console_logs_one_line_per_event() -> None:
    """One structlog line per event, named after it, with the event's flat fields."""
    sink = ConsoleSink(TypeAdapter(AlertConfig).validate_python({"kind": "console", "name": "log"}))  # type: ignore[arg-type]
    with capture_logs() as logs:
        await sink.deliver([event("host.down", group=None, severity="critical"), failed_phase(["a"])])
    assert [line["event"] for line in logs] == ["host.down", "phase.completed"]
    assert logs[0]["host"] == "gpu-01" and logs[0]["severity"] == "critical" and logs[0]["id"]
    assert logs[1]["failed_labels"] == ["a"]


async def test_configs_build_their_sinks_by_kind() -> None:
    """Each kind builds its sink; unknown keys are refused; a shared client is not closed by the sink."""
    configs = ALERTS.validate_python([
        {"kind": "console", "name": "log"},
        {"kind": "webhook", "name": "ops", "url": "https://h.invalid/h", "secret": "s", "timeout": "5s"},
        {"kind": "slack", "name": "team", "url": "https://h.invalid/services/x", "min_severity": "warning"},
        {"kind": "alertmanager", "name": "am", "url": "http://127.0.0.1:9093/", "events": ["check.*"]},
    ])  # fmt: skip
    async with httpx.AsyncClient() as client:
        sinks = [build_sink(c, client) for c in configs]
        assert [(s.kind, s.name) for s in sinks] == [
            ("console", "log"), ("webhook", "ops"), ("slack", "team"), ("alertmanager", "am")
        ]  # fmt: skip
        for sink in sinks:
            await sink.close()
        assert not client.is_closed
    assert configs[1].timeout == 5.0 and configs[3].url == "http://127.0.0.1:9093"  # type: ignore[union-attr]
    with pytest.raises(ValidationError):
        ALERTS.validate_python([{"kind": "slack", "name": "x", "url": "https://h", "channel": "#a"}])
    assert not wants(configs[2], event("host.up", severity="info"))
    assert wants(configs[2], event("host.down", severity="critical"))
    assert wants(configs[3], event("check.failed")) and not wants(configs[3], event("host.down"))
