"""Network faults (issue 8, point 1), against the daemon as a real process, real sshd and pueue simulators.

The faulted host's sshd runs in its own network namespace behind a veth pair where the machine allows it (on
loopback otherwise), and, for the link faults, behind the fault proxy (``fault_proxy.py``): the link drops in
the middle of a 50 MB state transfer, 30 % loss with 500 ms of latency, a black hole. Each link fault is
injected twice: at a fresh connection (the one-shot poll script) and while the host's long-lived poll session
is open (after two successful polls). Then sshd is killed in the middle of a poll and comes back a real
minute later, and a host reboots (pueue restarts with its Running tasks turned into Killed).

Each test asserts what the issue expects: a clear one-line reason for the failed poll, other hosts unaffected,
reconnection with backoff, ``host.down`` and ``host.up`` once each, no phase completion that did not happen,
and every committed event at the webhook receiver.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.ledger import Ledger
from tests.faults.netns import LOOPBACK, Rig, reboot_pueue, rig
from tests.pueue_sim.scenario import SimHost, generate_state

pytestmark = pytest.mark.integration

MB = 1_000_000


def failing(r: Rig, host: str, after: int = 0) -> dict[str, Any]:
    """The ``after``-th (0-based) ``host.failing`` line of ``host``, once the daemon has logged it."""
    lines = r.wait(lambda: (found := r.log("host.failing", host)) and len(found) > after and found)
    return dict(lines[after])


def recovered(r: Rig, host: str, count: int = 1) -> None:
    r.wait(lambda: len(r.log("host.recovered", host)) >= count)


def ok_polls_from(r: Rig, host: str, n: int) -> int:
    """Wait until ``host`` has had ``n`` more successful polls than now; the new count."""
    start = r.metrics.ok(host)
    return int(r.wait(lambda: (now := r.metrics.ok(host)) >= start + n and now))


def large_host(r: Rig) -> SimHost:
    """A pueue host whose state.json is about 50 MB (36,000 tasks, realistic environments), with nothing that
    could run: finished tasks, and queued ones in groups that pueued pauses when it restores its state."""
    sim = r.sim("large")
    statuses = {"Success": 0.9, "Failed": 0.05, "Queued": 0.05}
    generate_state(sim.pueue_dir / "state.json", "v4", 36_000, 20, statuses=statuses, seed=8, tz=sim.tz)
    sim.start_daemon(timeout=180)
    assert sim.state_path.stat().st_size > 45 * MB
    return sim


def small_host(r: Rig, name: str) -> SimHost:
    sim = r.sim(name)
    sim.start_daemon()
    sim.pueue("group", "add", "p1", "-p", "2", check=True)
    return sim


def test_link_drop_mid_transfer_fails_that_poll_only(tmp_path: Path, ledger: Ledger) -> None:
    """The link dies 20 MB into a 50 MB state transfer: the poll fails with a one-line reason, the other
    host's phase still completes and is delivered, and the next poll reconnects and reads the state."""
    with rig(tmp_path) as r:
        big = large_host(r)
        big_server = r.sshd("large", big)
        proxy = r.proxy(big_server)
        other = small_host(r, "other")
        task = other.add_gated("a", group="p1", label="a")
        other_server = r.sshd("other", other, LOOPBACK)
        r.start(
            [
                r.entry("large", big_server, big, via=proxy, compression="none"),
                r.entry("other", other_server, other),
            ],
            host_timeout="60s",
            keepalive_interval="2s",
        )

        with ledger.fault("link drop mid-transfer (one-shot poll, reset)"):
            proxy.cut_after(20 * MB)  # armed before the first poll: the one-shot script's transfer is cut
            first = failing(r, "large")
            assert first["reason"] == "unreachable"
            assert "connection lost" in first["error"], first
            assert "\n" not in first["error"]
            assert proxy.cuts >= 1
            other.finish("a")
            other.wait_for_status(task, "Done")
            r.wait(lambda: r.received_of("phase.completed", "other"))
            assert not r.log("host.failing", "other")
            proxy.pass_through()
            recovered(r, "large")
            assert r.metrics.tasks("large", "p2", "queued") >= 0  # its state was read: its groups are known

        with ledger.fault("link drop mid-transfer (poll session open, silent)"):
            ok_polls_from(r, "large", 2)  # the one-shot read, then unchanged answers from the poll session
            cuts = proxy.cuts
            proxy.cut_after(20 * MB, silently=True)  # the cable is pulled: nothing moves, nothing is reset
            big.pueue("group", "add", "fresh", check=True)  # the session answers "changed": 50 MB follow
            second = failing(r, "large", after=1)
            assert second["reason"] in ("unreachable", "timeout"), second
            assert "connection lost" in second["error"] or "timed out" in second["error"], second
            assert proxy.cuts > cuts
            proxy.pass_through()
            recovered(r, "large", 2)
            r.wait(lambda: r.metrics.tasks("large", "fresh", "queued") == 0)  # the new state arrived whole
        assert not r.log("host.failing", "other")
        assert r.metrics.failures("other") == {}
        assert [e["group"] for e in r.received_of("phase.completed")] == ["p1"]
        r.account(ledger)


def test_loss_and_latency_slow_polls_down_but_fake_nothing(tmp_path: Path, ledger: Ledger) -> None:
    """30 % loss and 500 ms each way from the first connection on: polls complete (or time out, saying so),
    a task that finishes is seen, and the group's one real completion is the only one reported."""
    with rig(tmp_path) as r:
        sim = small_host(r, "lossy")
        a = sim.add_gated("a", group="p1", label="a")
        b = sim.add_gated("b", group="p1", label="b")
        server = r.sshd("lossy", sim)
        proxy = r.proxy(server)
        with ledger.fault("30% loss + 500 ms latency"):
            proxy.degrade(latency=0.5, loss=0.3)
            r.start([r.entry("lossy", server, sim, via=proxy)], host_timeout="60s", connect_timeout="45s")
            ok_polls_from(r, "lossy", 3)  # the one-shot read, then two session answers, all degraded
            sim.finish("a")
            sim.wait_for_status(a, "Done")
            r.wait(lambda: r.metrics.tasks("lossy", "p1", "success") == 1)  # seen through the bad link
            ok_polls_from(r, "lossy", 3)
            assert not r.received_of("phase.completed")
            assert not [line for line in r.log("phase.recorded") if line["group"] == "p1"]
            sim.finish("b")
            sim.wait_for_status(b, "Done")
            (done,) = r.wait(lambda: r.received_of("phase.completed"))
            assert (done["group"], done["outcome"], done["counts"]) == ("p1", "success", {"success": 2})
            assert set(r.metrics.failures("lossy")) <= {"timeout"}
            for line in r.log("host.failing", "lossy"):
                assert "timed out" in line["error"] or "no answer" in line["error"], line
            assert proxy.upstream_bytes and proxy.downstream_bytes
        r.account(ledger)
        assert len(r.received_of("phase.completed")) == 1


def test_black_hole_fails_its_poll_and_delays_no_other_host(tmp_path: Path, ledger: Ledger) -> None:
    """A host that takes TCP and never answers: on the open session the poll times out (host_timeout), on a
    fresh connection the connect does (connect_timeout); meanwhile the other host is polled on schedule and
    its phase completion is delivered."""
    with rig(tmp_path) as r:
        sim = small_host(r, "hole")
        server = r.sshd("hole", sim)
        proxy = r.proxy(server)
        other = small_host(r, "other")
        task = other.add_gated("a", group="p1", label="a")
        other_server = r.sshd("other", other, LOOPBACK)
        r.start(
            [r.entry("hole", server, sim, via=proxy), r.entry("other", other_server, other)],
            poll_interval="0.5s",
            host_timeout="10s",
            connect_timeout="6s",
            keepalive_interval="30s",
        )

        with ledger.fault("black hole (poll session open)"):
            ok_polls_from(r, "hole", 2)
            polls = r.metrics.polls("hole")
            proxy.black_hole()
            # While the black-holed host's poll hangs, the other host's polls go on at their interval.
            ok_polls_from(r, "other", 3)
            assert r.metrics.polls("hole") - polls <= 1  # at most a poll that was answered before the hole
            hung = failing(r, "hole")
            assert hung["reason"] == "timeout", hung
            assert "10s" in hung["error"], hung  # the poll's own bound, host_timeout
            proxy.pass_through()
            recovered(r, "hole")

        with ledger.fault("black hole (fresh connection)"):
            proxy.black_hole()
            proxy.reset_all()  # the open connection dies: the next poll must connect, into the hole
            fresh = failing(r, "hole", after=1)
            assert fresh["reason"] == "timeout", fresh
            assert fresh["error"].endswith("connect timed out"), fresh
            other.finish("a")
            other.wait_for_status(task, "Done")
            r.wait(lambda: r.received_of("phase.completed", "other"))
            assert not r.log("host.failing", "other")
            assert r.metrics.failures("other") == {}
            proxy.pass_through()
            recovered(r, "hole", 2)
        assert proxy.connections >= 1
        r.account(ledger)


def test_a_link_dropped_during_a_long_poll_is_noticed_by_keepalive_and_recovered(
    tmp_path: Path, ledger: Ledger
) -> None:
    """At a one-minute poll interval the host's poll session waits on its state file (the long poll, issue
    16) when the link goes silent (a black hole: nothing moves, nothing is reset). SSH's keepalive (2 s, three
    unanswered) ends the wait; the poll that follows fails with a one-line reason, long before the interval
    would have brought it; once the link is back the host recovers, and the phase that ended during the
    outage is reported once."""
    with rig(tmp_path) as r:
        sim = small_host(r, "waiting")
        task = sim.add_gated("a", group="p1", label="a")
        server = r.sshd("waiting", sim)
        proxy = r.proxy(server)
        interval = 60
        r.start([r.entry("waiting", server, sim, via=proxy)], poll_interval=f"{interval}s",
                host_timeout="10s", connect_timeout="5s", keepalive_interval="2s")  # fmt: skip

        with ledger.fault("link drop during a long poll (silent)"):
            ok_polls_from(r, "waiting", 1)
            time.sleep(3)  # the session is waiting on the host
            proxy.black_hole()
            dropped = time.monotonic()
            # Without the keepalive, nothing would be noticed before the interval (or the wait) ran out.
            (lost,) = r.wait(lambda: r.log("host.long_poll_lost", "waiting"), timeout=interval / 2)
            (hung,) = r.wait(lambda: r.log("host.failing", "waiting"), timeout=interval / 2)
            noticed = time.monotonic() - dropped
            assert hung["reason"] in ("timeout", "unreachable"), hung
            assert "\n" not in hung["error"] and "\n" not in lost["error"]
            print(f"link dropped during a long poll (poll_interval {interval} s, keepalive 2 s x 3, "
                  f"connect_timeout 5 s): the poll failed {noticed:.1f} s after the drop")  # fmt: skip
            sim.finish("a")
            sim.wait_for_status(task, "Done")
            proxy.pass_through()
            recovered(r, "waiting")
            r.wait(lambda: r.received_of("phase.completed", "waiting"))
        time.sleep(2)
        assert [e["group"] for e in r.received_of("phase.completed")] == ["p1"]
        r.account(ledger)


def test_sshd_killed_mid_poll_and_back_a_minute_later(tmp_path: Path, ledger: Ledger) -> None:
    """sshd dies in the middle of a poll and returns 60 s later: host.down and host.up once each, retries
    spaced out by the backoff (logged), no completion that did not happen, every event delivered."""
    with rig(tmp_path) as r:
        sim = small_host(r, "flaky")
        sim.pueue("parallel", "1", "-g", "p1", check=True)
        sim.add_gated("a", group="p1", label="a")
        b = sim.add_gated("b", group="p1", label="b")  # queued behind a
        server = r.sshd("flaky", sim)
        r.start(
            [r.entry("flaky", server, sim)],
            poll_interval="1s",
            host_timeout="30s",
            connect_timeout="5s",
            down_after=3,
        )
        with ledger.fault("sshd killed mid-poll, back after 60 s"):
            ok_polls_from(r, "flaky", 2)  # the poll session is open
            # Pin a poll in flight: sshd and its sessions stop answering, and no poll completes any more.
            r.freeze(server)
            time.sleep(1.5)  # a poll whose answer was already on its way completes; the next one hangs
            polls = r.metrics.polls("flaky")
            time.sleep(3)
            assert r.metrics.polls("flaky") == polls, "a poll of the frozen host completed"
            server.drop_connections()  # SIGKILL the listener and every session: the poll in flight loses it
            killed = time.monotonic()
            first = failing(r, "flaky")
            assert first["reason"] == "unreachable", first
            assert "connection refused" in first["error"] or "connection lost" in first["error"], first

            sim.finish("a")  # a finishes while the host is unreachable; b starts: p1 is still not done
            sim.wait_for_status(b, "Running")
            r.wait(lambda: r.received_of("host.down"))
            time.sleep(max(0.0, killed + 60 - time.monotonic()))  # sshd comes back a real minute later
            attempts = r.metrics.polls("flaky") - polls
            server.start()
            r.wait(lambda: r.received_of("host.up"))
            recovered(r, "flaky")
            r.wait(lambda: r.metrics.tasks("flaky", "p1", "running") == 1)
            assert not r.received_of("phase.completed"), "a completion while p1 still runs b"

            # Backoff: the retry wait doubles from poll_interval and stops at four intervals.
            waits = [line["retry_in"] for line in r.log("poll.backoff", "flaky")]
            assert waits == sorted(waits), waits
            assert waits[0] == 1.0 and waits[-1] == 4.0, waits
            # Each logged wait was kept: the next failure was logged no sooner than retry_in later.
            at = [datetime.fromisoformat(line["timestamp"]) for line in r.log("poll.backoff", "flaky")]
            for wait, earlier, later in zip(waits, at, at[1:], strict=False):
                assert (later - earlier).total_seconds() >= wait - 0.05, (waits, at)
            # Sixty seconds of outage cost about 60/4 attempts, not 60 (each waits at least retry_in).
            assert attempts <= 60 / 4 + 5, attempts

            sim.finish("b")
            sim.wait_for_status(b, "Done")
            (done,) = r.wait(lambda: r.received_of("phase.completed"))
            assert (done["outcome"], done["counts"]) == ("success", {"success": 2})
        r.account(ledger)
        assert len(r.received_of("host.down")) == 1
        assert len(r.received_of("host.up")) == 1
        assert len(r.log("host.failing", "flaky")) == 1


def test_a_rebooted_host_reports_its_killed_phase_once(tmp_path: Path, ledger: Ledger) -> None:
    """Power cut: sshd's connections drop, pueued and its tasks die; at boot pueued turns Running into Killed
    and pauses groups that still have queued tasks. Nothing completes while the host is away; afterwards the
    phase with the killed tasks is reported once, failed, and the paused group is not reported at all."""
    with rig(tmp_path) as r:
        sim = small_host(r, "box")
        sim.pueue("parallel", "3", "-g", "p1", check=True)
        sim.pueue("group", "add", "p2", "-p", "1", check=True)
        a = sim.add_gated("a", group="p1", label="a")
        b = sim.add_gated("b", group="p1", label="b")
        c = sim.add_gated("c", group="p1", label="c")
        d = sim.add_gated("d", group="p2", label="d")
        e = sim.add_gated("e", group="p2", label="e")  # queued behind d
        server = r.sshd("box", sim)
        r.start([r.entry("box", server, sim)], host_timeout="20s", connect_timeout="3s", down_after=3)
        with ledger.fault("host reboot"):
            ok_polls_from(r, "box", 2)
            sim.finish("a")
            sim.wait_for_status(a, "Done")
            for task in (b, c, d):
                sim.wait_for_status(task, "Running")
            r.wait(lambda: r.metrics.tasks("box", "p1", "success") == 1)

            server.drop_connections()  # the connections drop with the machine
            if r.network.namespace is not None:  # and its network goes away until it has booted
                r.network.set_link(up=False)
            reboot_pueue(sim)
            r.wait(lambda: r.received_of("host.down"))
            assert not r.received_of("phase.completed")

            sim.start_daemon()  # boot: pueued restores its state
            state = sim.state()["tasks"]
            assert all(state[str(t)]["status"]["Done"]["result"] == "Killed" for t in (b, c, d))
            assert sim.state()["groups"]["p2"]["status"] == "Paused"
            if r.network.namespace is not None:
                r.network.set_link(up=True)
            server.start()
            r.wait(lambda: r.received_of("host.up"))
            (done,) = r.wait(lambda: r.received_of("phase.completed"))
            assert (done["group"], done["outcome"]) == ("p1", "failed"), done
            assert done["counts"] == {"success": 1, "killed": 2}, done
            ok_polls_from(r, "box", 3)
            kinds = [ev["event"] for ev in r.committed() if ev["event"].startswith(("host.", "phase."))]
            assert kinds == ["host.down", "host.up", "phase.completed"], kinds  # nothing while away
            assert list(sim.task(e)["status"]) == ["Queued"]  # p2 is paused: e never ran
        r.account(ledger)
        assert len(r.received_of("phase.completed")) == 1
        assert len(r.received_of("host.down")) == len(r.received_of("host.up")) == 1
