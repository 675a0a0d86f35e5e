"""Tests of the pueue simulator (tests/pueue_sim) against the fixture README and samples.

Real processes throughout: `pueued` runs as a subprocess of a `SimHost` in a temp directory and
every client call is a separate `pueue` process.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import zoneinfo
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.pueue_sim.config import username  # noqa: E402
from tests.pueue_sim.scenario import SimHost, generate_state  # noqa: E402
from tests.pueue_sim.scenario import install as scenario_install  # noqa: E402
from tests.pueue_sim.state import (  # noqa: E402
    TS_KEYS,
    StateError,
    decode_state,
    encode_state,
    result_name,
    status_name,
    task_result,
)
from tests.pueue_sim.timefmt import format_ts, parse_ts  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures" / "pueue"  # the repo's copy (conftest.FIXTURES)
CAPTURES = FIXTURES / "captures"

TS_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{3}|\.\d{6}|\.\d{9})?(Z|[+-]\d{2}:\d{2})$")
FLAVORS = ["v3", "v4"]


def fixture_text(name: str) -> str:
    path = FIXTURES / name
    if not path.is_file():
        pytest.fail(f"fixture missing: {path}", pytrace=False)
    return path.read_text()


def fixture(name: str) -> Any:
    return json.loads(fixture_text(name))


@pytest.fixture
def make_host(tmp_path: Path) -> Iterator[Any]:
    hosts: list[SimHost] = []

    def make(flavor: str, **kwargs: Any) -> SimHost:
        host = SimHost(tmp_path / f"host{len(hosts)}", flavor, **kwargs)
        hosts.append(host)
        return host

    yield make
    for host in hosts:
        host.close()


def shape(value: Any, key: str | None = None, loose: bool = False) -> Any:
    """Key order and value types, recursively (envs are checked separately; `loose` accepts a
    string or null label)."""
    if key == "envs":
        return "envs"
    if key == "label" and loose:
        assert value is None or isinstance(value, str)
        return "label"
    if isinstance(value, dict):
        return [(k, shape(v, k, loose)) for k, v in value.items()]
    if isinstance(value, list):
        assert all(isinstance(i, int) for i in value)
        return "list[int]"
    if key in TS_KEYS and isinstance(value, str):
        assert TS_RE.match(value), value
        return "timestamp"
    return type(value).__name__


def all_timestamps(value: Any, key: str | None = None) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            if k != "envs":
                yield from all_timestamps(v, k)
    elif key in TS_KEYS and isinstance(value, str):
        yield value


def shapes_by_state(data: dict[str, Any]) -> dict[tuple[str, str | None], set[str]]:
    shapes: dict[tuple[str, str | None], set[str]] = {}
    for task in data["tasks"].values():
        shapes.setdefault(state_of(task), set()).add(repr(shape(task, loose=True)))
    return shapes


def state_of(task: dict[str, Any]) -> tuple[str, str | None]:
    result = task_result(task)
    return status_name(task["status"]), result_name(result) if result is not None else None


# ------------------------------------------------------------------------------------ formats


def test_timestamps_like_chrono() -> None:
    base = parse_ts("2024-11-12T08:01:12Z")
    assert format_ts(base, 0) == "2024-11-12T08:01:12Z"
    assert format_ts(base + 500_000_000, 0) == "2024-11-12T08:01:12.500Z"
    assert format_ts(base + 201_336_000, 3600) == "2024-11-12T09:01:12.201336+01:00"
    assert format_ts(base + 418_273_916, -5 * 3600) == "2024-11-12T03:01:12.418273916-05:00"
    berlin = zoneinfo.ZoneInfo("Europe/Berlin")
    summer = parse_ts("2025-06-10T08:00:00.000000001Z")
    assert format_ts(summer, berlin) == "2025-06-10T10:00:00.000000001+02:00"
    # Every fixture timestamp survives parse -> format with its own offset, byte for byte, except
    # one hand-written value in v3_status.json that keeps a whole zero group (".603502000"), which
    # chrono never prints (the README's rule: 0, 3, 6 or 9 digits, zero groups dropped).
    for name in ("v3_status.json", "v4_status.json"):
        for text in all_timestamps(fixture(name)):
            assert format_ts(parse_ts(text), _offset(text)) == canonical_ts(text)
    assert canonical_ts("2024-11-12T09:10:55.603502000+01:00") == "2024-11-12T09:10:55.603502+01:00"


def _offset(text: str) -> int:
    if text.endswith("Z"):
        return 0
    return (1 if text[-6] == "+" else -1) * (int(text[-5:-3]) * 3600 + int(text[-2:]) * 60)


def canonical_ts(text: str) -> str:
    """The README's (and chrono's) form: whole zero groups of the fraction dropped."""

    def fix(m: re.Match[str]) -> str:
        frac = m.group(1)
        while frac and frac.endswith("000"):
            frac = frac[:-3]
        return ("." + frac if frac else "") + m.group(2)

    return re.sub(r"\.(\d+)(Z|[+-]\d\d:\d\d)$", fix, text)


@pytest.mark.parametrize(("flavor", "offset"), [("v3", 3600), ("v4", 0)])
def test_fixture_state_roundtrips_byte_for_byte(flavor: str, offset: int) -> None:
    text = fixture_text(f"{flavor}_status.json").strip()
    state = decode_state(json.loads(text), flavor)
    canonical = re.sub(r'"(\d{4}-\d\d-\d\dT[^"]+)"', lambda m: f'"{canonical_ts(m.group(1))}"', text)
    assert encode_state(state, offset) == canonical
    other = "v4" if flavor == "v3" else "v3"
    with pytest.raises(StateError):
        decode_state(json.loads(text), other)


def test_version_needs_neither_config_nor_daemon(make_host: Any) -> None:
    for flavor, expected in (("v3", "pueue 3.4.1\n"), ("v4", "pueue 4.0.0\n")):
        host = make_host(flavor)
        result = host.pueue("--version", env={"PUEUE_CONFIG_PATH": "/nonexistent/pueue.yml"})
        assert (result.returncode, result.stdout) == (0, expected)


# ------------------------------------------------------------------------------------ the README scenario


def build_fixture_scenario(host: SimHost) -> None:
    """Tasks 0-13 and the three groups of the fixture README, through the real CLI."""
    host.set_aliases({"backtest": f"sh -c '{host.gate_command('backtest')}'"})
    host.start_daemon()
    host.pueue("group", "add", "p1", "-p", "2", check=True)
    host.pueue("group", "add", "btc-yearly", "-p", "3", check=True)
    assert host.add("true", label="prices-kraken") == 0
    host.wait_for_status(0, "Done")
    assert host.add("exit 1") == 1
    host.wait_for_status(1, "Done")
    assert host.add("echo eval", label="eval-lstm", after=[1]) == 2
    host.wait_for_status(2, "Done", source="status")  # pueued does not save DependencyFailed
    assert host.add("backtest --year 2023") == 3
    host.wait_for_status(3, "Running")
    assert host.add("echo queued") == 4
    assert host.add("echo report", label="weekly-report", priority=1) == 5
    host.pueue("_sim-lock", "5", check=True)
    assert host.add_gated("encode", group="p1", label="encode-0612") == 6
    host.wait_for_status(6, "Running")
    host.pueue("pause", "-g", "p1", check=True)
    host.wait_for_status(6, "Paused")
    assert host.add("echo later", group="p1", label="encode-0613", stashed=True) == 7
    assert host.add("true", group="btc-yearly", label="btc-2021") == 8
    assert host.add_gated("btc-2022", group="btc-yearly", label="btc-2022") == 9
    host.wait_for_status(9, "Running")
    host.pueue("kill", "9", check=True)
    host.wait_for_status(9, "Done")
    assert host.add("true", group="btc-yearly", label="btc-2020") == 10
    host.wait_for_status(10, "Done")
    host.wait_for_status(8, "Done")
    # 11: its working directory disappears before it starts.
    host.pueue("pause", "-g", "btc-yearly", check=True)
    gone = host.root / "gone"
    gone.mkdir()
    assert host.add("echo never", group="btc-yearly", label="btc-2019", cwd=gone) == 11
    gone.rmdir()
    host.pueue("start", "-g", "btc-yearly", check=True)
    host.wait_for_status(11, "Done")
    assert host.add_gated("btc-2024", group="btc-yearly", label="btc-2024", priority=2) == 12
    host.wait_for_status(12, "Running")
    assert host.add("echo tomorrow", group="btc-yearly", label="btc-2025", delay="1d") == 13


@pytest.mark.parametrize("flavor", FLAVORS)
def test_status_json_matches_fixture_shape(make_host: Any, flavor: str) -> None:
    host = make_host(flavor, tz="Europe/Berlin")
    build_fixture_scenario(host)
    expected = fixture(f"{flavor}_status.json")

    result = host.pueue("status", "--json", env={"TZ": "UTC"})
    assert result.returncode == 0 and result.stderr == ""
    assert result.stdout.endswith("}\n") and result.stdout.count("\n") == 1
    live = json.loads(result.stdout)
    assert list(live) == ["tasks", "groups"]
    assert list(live["tasks"]) == [str(i) for i in range(14)]  # numeric order: "9" before "10"
    assert live["groups"] == expected["groups"]
    assert list(live["groups"]) == list(expected["groups"])

    for key, want in expected["tasks"].items():
        got = live["tasks"][key]
        if key == "10":  # Errored cannot be provoked live; checked below
            continue
        assert state_of(got) == state_of(want), key
        assert shape(got) == shape(want), key
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in got["envs"].items())
        for var in ("PUEUE_GROUP", "PUEUE_WORKER_ID"):  # only tasks that were spawned have them
            assert (var in got["envs"]) == (var in want["envs"]), (key, var)
    assert live["tasks"]["3"]["command"] != live["tasks"]["3"]["original_command"] == "backtest --year 2023"
    spawn_error = json.dumps(live["tasks"]["11"]["status"])
    assert (
        "Failed to spawn child 11 with err: Os { code: 2, kind: NotFound, "
        'message: \\"No such file or directory\\" }'
    ) in spawn_error

    # Client time zone for `status --json`, daemon time zone for the state file; same instants.
    stamps = list(all_timestamps(live))
    assert stamps and all(TS_RE.match(s) and s.endswith("Z") for s in stamps)
    assert sum(1 for s in stamps if re.search(r"\.\d{9}Z$", s)) > len(stamps) * 0.8
    new_york = json.loads(host.pueue("status", "--json", env={"TZ": "America/New_York"}).stdout)
    ny_stamps = list(all_timestamps(new_york))
    assert all(s[-6:] in ("-05:00", "-04:00") for s in ny_stamps)
    assert [parse_ts(s) for s in ny_stamps] == [parse_ts(s) for s in stamps]
    file_stamps = list(all_timestamps(host.state()))
    assert all(s[-6:] in ("+01:00", "+02:00") for s in file_stamps)
    assert sorted(parse_ts(s) for s in file_stamps) == sorted(parse_ts(s) for s in stamps)

    # `-g` filters only the tasks; `groups` keeps every group.
    filtered = host.status("-g", "btc-yearly")
    assert list(filtered["tasks"]) == [str(i) for i in range(8, 14)]
    assert filtered["groups"] == expected["groups"]
    assert host.status("-g", "no-such-group")["tasks"] == {}
    # `group --json` is exactly the fixture.
    groups = host.pueue("group", "--json")
    assert groups.stdout == fixture_text(f"{flavor}_group.json").strip() + "\n"

    # Errored: set while the daemon is stopped, as if the daemon had written it.
    host.stop_daemon()
    host.set_status(10, "Done", "Errored")
    host.start_daemon()
    errored = host.status()["tasks"]["10"]
    assert state_of(errored) == ("Done", "Errored")
    assert shape(errored) == shape(expected["tasks"]["10"])


def test_add_records_whole_client_environment(make_host: Any) -> None:
    host = make_host("v4")
    host.start_daemon()
    extra = {"MY_API_TOKEN": "s3cr3t", "LANG": "de_DE.UTF-8"}
    task_id = host.add("true", stashed=True, env=extra, cwd=host.gate_dir)
    task = host.status()["tasks"][str(task_id)]
    expected = {**host.env, **extra}
    envs = dict(task["envs"])
    assert envs.pop("PWD", str(host.gate_dir)) == str(host.gate_dir)  # the wrapper's sh updates PWD
    expected.pop("PWD", None)
    assert envs == expected
    assert task["path"] == str(host.gate_dir)
    orders = {tuple(host.status()["tasks"][str(task_id)]["envs"]) for _ in range(3)}
    assert len(orders) > 1  # a fresh HashMap order in every client process


# ------------------------------------------------------------------------------------ commands


@pytest.mark.parametrize("flavor", FLAVORS)
def test_clean_semantics_and_id_reuse(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    host.start_daemon()
    host.pueue("group", "add", "other", check=True)
    assert host.add("true") == 0
    assert host.add("exit 2") == 1
    assert host.add("true") == 2
    assert host.add("true", group="other") == 3
    for task_id in range(4):
        host.wait_for_status(task_id, "Done")
    assert host.add("true", after=[2], stashed=True) == 4  # keeps 2 alive: a not-Done dependant
    assert host.log_path(0).exists()

    result = host.pueue("clean", "-s", "-g", "no-such-group")
    assert (result.returncode, result.stdout) == (
        0,
        "All successfully finished tasks have been removed from group 'no-such-group'\n",
    )
    assert sorted(map(int, host.status()["tasks"])) == [0, 1, 2, 3, 4]

    assert host.pueue("clean", "-s").stdout == "All successfully finished tasks have been removed\n"
    assert sorted(map(int, host.status()["tasks"])) == [1, 2, 4]  # Failed 1 stays, 2 is a dependency
    assert not host.log_path(0).exists() and not host.log_path(3).exists()

    assert host.pueue("clean", "-g", "default").stdout == (
        "All finished tasks have been removed from group 'default'\n"
    )
    assert sorted(map(int, host.status()["tasks"])) == [2, 4]

    host.pueue("remove", "4", check=True)
    host.pueue("clean", check=True)
    assert host.status()["tasks"] == {}
    assert host.add("true") == 0  # ids are max + 1, so they come back


@pytest.mark.parametrize("flavor", FLAVORS)
def test_pause_and_start_stop_the_process(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    host.start_daemon()
    ticks = host.work_dir / "ticks"
    task_id = host.add(f"while true; do echo x >> {ticks}; sleep 0.02; done")
    host.wait_until(lambda: ticks.exists() and ticks.stat().st_size > 10)

    assert host.pueue("pause").stdout == 'Group "default" is being paused.\n'
    host.wait_for_status(task_id, "Paused")
    assert host.state()["groups"]["default"]["status"] == "Paused"
    time.sleep(0.1)
    size = ticks.stat().st_size
    time.sleep(0.3)
    assert ticks.stat().st_size == size  # SIGSTOP really stopped it
    added = host.pueue("add", "--", "true")
    assert added.stdout == "New task added (id 1).\nThe group of this task is currently paused!\n"

    assert host.pueue("start").stdout == 'Group "default" is being resumed.\n'
    host.wait_for_status(task_id, "Running")
    host.wait_until(lambda: ticks.stat().st_size > size)
    host.pueue("kill", str(task_id), check=True)
    task = host.wait_for_status(task_id, "Done")
    assert result_name(task_result(task)) == "Killed"
    host.wait_for_status(1, "Done")


def test_command_errors_go_to_stderr(make_host: Any) -> None:
    host = make_host("v4")
    host.start_daemon()
    result = host.pueue("add", "-g", "nope", "--", "true")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr == 'Group nope doesn\'t exists. Use one of these: ["default"]\n'
    result = host.pueue("group", "remove", "default")
    assert (result.returncode, result.stderr) == (1, "You cannot delete the default group\n")
    running = host.add_gated("g")
    host.wait_for_status(running, "Running")
    result = host.pueue("remove", str(running), "7")
    assert (result.returncode, result.stderr) == (1, f"The command failed for tasks: {running}, 7\n")
    assert host.pueue("group").stdout == 'Group "default" (1 parallel): running\n'
    host.finish("g")


# ------------------------------------------------------------------------------------ wait


@pytest.mark.parametrize("flavor", FLAVORS)
def test_wait_semantics(make_host: Any, flavor: str) -> None:
    host = make_host(flavor, fast_wait=True)
    host.start_daemon()
    empty = host.pueue("wait")
    message = 'No tasks found for selection Group("default")\n'
    assert empty.returncode == 0
    assert (empty.stdout, empty.stderr) == ((message, "") if flavor == "v3" else ("", message))

    first = host.add_gated("first")
    host.wait_for_status(first, "Running")
    waiter = subprocess.Popen(
        [str(host.pueue_bin), "wait"],
        env=host.env,
        cwd=host.work_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.4)
    second = host.add_gated("second")  # joins the selection while waiting
    time.sleep(0.4)
    assert waiter.poll() is None
    host.finish("first")
    time.sleep(0.5)
    assert waiter.poll() is None  # still waits for the task that joined
    host.finish("second")
    out, err = waiter.communicate(timeout=10)
    assert waiter.returncode == 0, err
    assert f"Found active Task {first} with status Running" in out
    assert f"New task {second} with status" in out
    assert f"Task {first} succeeded with 0" in out and f"Task {second} succeeded with 0" in out

    failing = host.add_gated("fail")
    waiter = subprocess.Popen(
        [str(host.pueue_bin), "wait", str(failing), "-s", "success", "-q"],
        env=host.env,
        cwd=host.work_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(0.3)
    host.finish("fail", 3)
    out, _ = waiter.communicate(timeout=10)
    assert (waiter.returncode, out) == (1, "")

    stashed = host.add("true", stashed=True)
    with pytest.raises(subprocess.TimeoutExpired):
        host.pueue("wait", str(stashed), "-s", "queued", timeout=1.0)


def test_wait_polls_every_two_seconds(make_host: Any) -> None:
    host = make_host("v4")
    host.start_daemon()
    task_id = host.add_gated("slow")
    host.wait_for_status(task_id, "Running")
    started = time.monotonic()
    waiter = subprocess.Popen(
        [str(host.pueue_bin), "wait", "-q"],
        env=host.env,
        cwd=host.work_dir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    time.sleep(0.2)
    host.finish("slow")
    waiter.communicate(timeout=10)
    elapsed = time.monotonic() - started
    assert waiter.returncode == 0
    assert 1.9 < elapsed < 4.5


# ------------------------------------------------------------------------------------ daemon life


@pytest.mark.parametrize("flavor", FLAVORS)
def test_daemon_down_fails_with_exit_1(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    never = host.pueue("status", "--json")
    assert (never.returncode, never.stdout) == (1, "")
    if flavor == "v4":  # 4.x reads the shared secret before it connects: exactly the real 4.0.4's report
        capture = (CAPTURES / "4.0.4" / "status-never-started.stderr").read_text()
        secret = str(host.pueue_dir / "shared_secret")
        assert never.stderr == capture.replace("/srv/pueue-4.0.4/data/shared_secret", secret)
    else:
        assert never.stderr.startswith("Error: Failed to initialize client.\n")
        assert "while connecting to daemon. Did you start it?" in never.stderr
        assert "No such file or directory (os error 2)" in never.stderr
        assert "\x1b[" not in never.stderr

    host.start_daemon()
    assert host.pueue("status", "--json").returncode == 0
    host.kill_daemon()  # crash: stale socket and pid file stay
    assert host.socket_path.exists() and host.pid_path.exists()
    crashed = host.pueue("status", "--json")
    assert (crashed.returncode, crashed.stdout) == (1, "")
    assert "Connection refused (os error 111)" in crashed.stderr

    host.start_daemon()  # a stale socket and a dead pid do not stop a new daemon
    assert host.stop_daemon() == 0
    assert not host.socket_path.exists() and not host.pid_path.exists()
    stopped = host.pueue("wait")
    assert (stopped.returncode, stopped.stdout) == (1, "")
    assert "No such file or directory (os error 2)" in stopped.stderr

    missing = host.pueue("status", env={"PUEUE_CONFIG_PATH": str(host.root / "missing.yml")})
    assert missing.returncode == 1 and "Failed to read configuration." in missing.stderr
    assert "while opening config file" in missing.stderr
    bare_home = host.root / "home"
    bare_home.mkdir()
    none = host.pueue("status", env={"PUEUE_CONFIG_PATH": None, "HOME": str(bare_home)}, cwd=bare_home)
    assert none.returncode == 1
    assert "Couldn't find a configuration file. Did you start the daemon yet?" in none.stderr


def test_config_discovery_default_config_and_runtime_dir(tmp_path: Path) -> None:
    """No PUEUE_CONFIG_PATH: `pueued -d` writes `$XDG_CONFIG_HOME/pueue/pueue.yml`, keeps its data in
    `$XDG_DATA_HOME/pueue` and its socket and pid file in `$XDG_RUNTIME_DIR`; another runtime dir cannot
    find it."""
    pueue, pueued = scenario_install(tmp_path / "bin", "v3")
    runtime = Path(tempfile.mkdtemp(prefix="psim-rt-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUEUE", "XDG_"))}
    env.update(
        HOME=str(tmp_path),
        XDG_CONFIG_HOME=str(tmp_path / "cfg"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_RUNTIME_DIR=str(runtime),
    )
    try:
        assert subprocess.run([pueued, "-d"], env=env, cwd=tmp_path, timeout=10).returncode == 0
        socket_path = runtime / f"pueue_{username()}.socket"
        deadline = time.monotonic() + 10
        while not socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (runtime / "pueue.pid").is_file() and not (tmp_path / "data" / "pueue" / "pueue.pid").exists()
        assert (
            "pueue_directory: " + str(tmp_path / "data" / "pueue")
            in (tmp_path / "cfg" / "pueue" / "pueue.yml").read_text()
        )
        ok = subprocess.run(
            [pueue, "status", "--json"], env=env, cwd=tmp_path, capture_output=True, text=True
        )
        assert ok.returncode == 0 and json.loads(ok.stdout)["groups"] == {
            "default": {"status": "Running", "parallel_tasks": 1}
        }
        lost = subprocess.run(
            [pueue, "status"],
            env={**env, "XDG_RUNTIME_DIR": str(tmp_path)},
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert lost.returncode == 1 and "while connecting to daemon" in lost.stderr
        bye = subprocess.run([pueue, "shutdown"], env=env, cwd=tmp_path, capture_output=True, text=True)
        assert bye.stdout == "Daemon is shutting down\n"
        deadline = time.monotonic() + 10
        while socket_path.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not socket_path.exists()
    finally:
        subprocess.run([pueue, "shutdown"], env=env, cwd=tmp_path, capture_output=True, check=False)
        shutil.rmtree(runtime, ignore_errors=True)


@pytest.mark.parametrize("flavor", FLAVORS)
def test_save_points(make_host: Any, flavor: str) -> None:
    """Like pueued, the simulator does not save after DependencyFailed, stash, enqueue, parallel or
    restart --in-place, so the file lags the daemon until the next save."""
    host = make_host(flavor)
    host.start_daemon()
    first = host.add_gated("first")
    host.wait_for_status(first, "Running")
    after = host.add("true", after=[first])
    host.pueue("kill", str(first), check=True)
    host.wait_for_status(after, "Done", source="status")
    assert status_name(host.task(after)["status"]) == "Queued"  # the file still says Queued
    host.pueue("pause", check=True)
    queued = host.add("true")
    mark = host.state_path.stat().st_mtime_ns, host.state_path.stat().st_ino
    for args in (("stash", str(queued)), ("enqueue", str(queued)), ("parallel", "3")):
        host.pueue(*args, check=True)
    host.pueue("restart", "--in-place", str(first), check=True)
    assert state_of(host.task(first, "status")) == ("Queued", None)
    time.sleep(0.3)  # three ticks of the simulated daemon: room for a save that must not happen
    assert (host.state_path.stat().st_mtime_ns, host.state_path.stat().st_ino) == mark
    assert state_of(host.task(first)) == ("Done", "Killed")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_restart_semantics(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    host.start_daemon()
    host.pueue("group", "add", "p1", check=True)
    host.pueue("group", "add", "q", check=True)
    running = host.add_gated("run")
    paused = host.add_gated("paused", group="p1")
    busy = host.add_gated("busy", group="q")
    queued = host.add("true", group="q")
    locked = host.add("true", stashed=True)
    for task_id, status in ((running, "Running"), (paused, "Running"), (busy, "Running")):
        host.wait_for_status(task_id, status)
    host.pueue("pause", str(paused), check=True)
    host.wait_for_status(paused, "Paused")
    host.pueue("_sim-lock", str(locked), check=True)
    assert status_name(host.task(locked)["status"]) == "Locked"

    second = subprocess.run([str(host.pueued_bin)], env=host.env, capture_output=True, text=True, timeout=10)
    assert second.returncode == 1 and "Pid file already exists" in second.stderr

    host.kill_daemon()
    host.start_daemon()
    state = host.state()
    for task_id in (running, paused, busy):
        task = state["tasks"][str(task_id)]
        assert state_of(task) == ("Done", "Killed")
        end = task["end"] if flavor == "v3" else task["status"]["Done"]["end"]
        assert (end is None) == (flavor == "v3")
    assert state["tasks"][str(locked)]["status"] == {"Stashed": {"enqueue_at": None}}
    assert status_name(state["tasks"][str(queued)]["status"]) == "Queued"
    assert state["groups"]["q"]["status"] == "Paused"  # still holds a queued task
    assert state["groups"]["default"]["status"] == "Running"
    assert state["groups"]["p1"]["status"] == "Running"
    assert host.pid_path.read_text() == str(host.daemon.pid)

    host.pueue("start", "-g", "q", check=True)
    host.wait_for_status(queued, "Done")
    graceful = host.add_gated("graceful")
    host.wait_for_status(graceful, "Running")
    assert host.stop_daemon() == 0
    task = host.state()["tasks"][str(graceful)]
    assert state_of(task) == ("Done", "Killed")


@pytest.mark.parametrize("flavor", FLAVORS)
def test_restore_of_fixture_state(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    (host.pueue_dir / "state.json").write_text(fixture_text(f"{flavor}_status.json"))
    host.start_daemon()
    state = host.state()
    killed = {k for k, t in state["tasks"].items() if state_of(t) == ("Done", "Killed")}
    assert killed == {"3", "6", "9", "12"}
    assert state["tasks"]["5"]["status"] == {"Stashed": {"enqueue_at": None}}
    assert state["groups"]["default"]["status"] == "Paused"  # task 4 is queued
    assert state["groups"]["btc-yearly"]["status"] == "Running"
    assert state["tasks"]["0"]["envs"] == fixture(f"{flavor}_status.json")["tasks"]["0"]["envs"]


def test_v4_daemon_cannot_read_v3_state(make_host: Any) -> None:
    host = make_host("v4")
    (host.pueue_dir / "state.json").write_text(fixture_text("v3_status.json"))
    host.start_daemon()
    assert host.status() == {"tasks": {}, "groups": {"default": {"status": "Running", "parallel_tasks": 1}}}
    assert "Failed to restore previous state" in host.daemon_log()


@pytest.mark.parametrize("flavor", FLAVORS)
def test_reset(make_host: Any, flavor: str) -> None:
    host = make_host(flavor)
    log_dir = host.pueue_dir / "log"
    log_dir.mkdir()
    for day in range(1, 12):
        (log_dir / f"2024-01-{day:02d}_00-00-00_state.json").write_text("{}")
    host.start_daemon()
    host.pueue("group", "add", "p1", check=True)
    host.pueue("pause", "-g", "p1", check=True)
    host.add("true")
    running = host.add_gated("never")
    host.wait_for_status(running, "Running")
    assert host.pueue("reset", "-f").stdout == "Everything is being reset right now.\n"
    groups = host.wait_until(
        lambda: (
            host.status()["groups"]
            if not host.status()["tasks"]
            and all(g["status"] == "Running" for g in host.status()["groups"].values())
            else None
        )
    )
    assert set(groups) == {"default", "p1"}
    saved = host.state()
    if flavor == "v3":  # 3.x saves the cleared state
        assert not saved["tasks"] and all(g["status"] == "Running" for g in saved["groups"].values())
    else:  # 4.x does not save when a group reset ends: the file keeps the groups in Reset, and their tasks
        assert saved["tasks"] and all(g["status"] == "Reset" for g in saved["groups"].values())
    backups = sorted(p.name for p in log_dir.iterdir())
    if flavor == "v3":
        assert len(backups) == 10 and re.fullmatch(r"\d{4}-\d\d-\d\d_\d\d-\d\d-\d\d_state\.json", backups[-1])
        assert not backups[-1].startswith("2024-01")
    else:
        assert len(backups) == 11  # v4 writes no backups


# ------------------------------------------------------------------------------------ state files


@pytest.mark.parametrize(("flavor", "compress"), [("v3", False), ("v4", False), ("v4", True), ("v3", True)])
def test_atomic_state_writes(make_host: Any, flavor: str, compress: bool) -> None:
    host = make_host(flavor, compress=compress)
    host.start_daemon()
    gz = compress and flavor == "v4"  # 3.x has no compress_state_file
    path = host.pueue_dir / ("state.json.gz" if gz else "state.json")
    stop = threading.Event()
    reads: list[int] = []
    errors: list[str] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                data = path.read_bytes()
                reads.append(len(json.loads(gzip.decompress(data) if gz else data)["tasks"]))
            except Exception as err:
                errors.append(repr(err))

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for _ in range(12):
            host.add("true")
    finally:
        stop.set()
        thread.join()
    host.wait_until(lambda: all(state_of(t)[0] == "Done" for t in host.state()["tasks"].values()))
    assert not errors and reads and max(reads) == 12
    names = {p.name for p in host.pueue_dir.iterdir()}
    assert not {n for n in names if n.endswith(".partial")}
    assert ("state.json" in names) == (not gz)
    assert ("state.json.gz" in names) == gz
    assert host.state()["groups"]["default"] == {"status": "Running", "parallel_tasks": 1}


def test_generate_state_size_and_validity(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    started = time.perf_counter()
    generate_state(path, "v4", 53_000, 40, seed=1)
    elapsed = time.perf_counter() - started
    size = path.stat().st_size
    print(f"\ngenerate_state v4 53,000 tasks / 40 groups: {size / 1e6:.1f} MB in {elapsed:.2f}s")
    assert 65e6 < size < 90e6
    data = json.loads(path.read_bytes())
    assert len(data["tasks"]) == 53_000 and len(data["groups"]) == 40
    assert list(data["tasks"])[:12] == [str(i) for i in range(12)]
    assert {"default", "btc-yearly", "p1", "p38"} <= set(data["groups"])
    assert list(data["groups"]) == sorted(data["groups"])
    fixture_shapes = shapes_by_state(fixture("v4_status.json"))
    states = set()
    for task in list(data["tasks"].values())[::97]:
        states.add(state_of(task))
        if state_of(task) in fixture_shapes:
            assert repr(shape(task, loose=True)) in fixture_shapes[state_of(task)]
    assert ("Done", "Success") in states and ("Done", "Failed") in states
    decode_state(data, "v4")
    secrets = [k for k in data["tasks"]["100"]["envs"] if k.endswith(("_TOKEN", "_PASSWORD"))]
    assert secrets and "LS_COLORS" in data["tasks"]["100"]["envs"]
    orders = {tuple(data["tasks"][str(i)]["envs"])[:5] for i in range(20)}
    assert len(orders) > 10  # keys in random order per task

    small = tmp_path / "v3"
    small.mkdir()
    generate_state(small, "v3", 3000, 5, seed=2, compress=True)
    v3 = json.loads(gzip.decompress((small / "state.json.gz").read_bytes()))
    decode_state(v3, "v3")
    fixture3 = shapes_by_state(fixture("v3_status.json"))
    for task in v3["tasks"].values():
        if state_of(task) in fixture3:
            assert repr(shape(task, loose=True)) in fixture3[state_of(task)]


def test_daemon_runs_on_generated_state(make_host: Any) -> None:
    host = make_host("v4")
    generate_state(host.pueue_dir / "state.json", "v4", 2000, 6, seed=3)
    before = json.loads((host.pueue_dir / "state.json").read_bytes())
    host.start_daemon()
    after = host.status()
    assert len(after["tasks"]) == 2000
    for key, task in before["tasks"].items():
        if status_name(task["status"]) in ("Running", "Paused"):
            assert state_of(after["tasks"][key]) == ("Done", "Killed")
    assert host.add("true", stashed=True) == 2000


def test_offline_set_status_helper(make_host: Any) -> None:
    host = make_host("v3")
    host.start_daemon()
    task_id = host.add("true", stashed=True)
    host.stop_daemon()
    host.set_status(task_id, "Running")
    assert host.task(task_id)["status"] == "Running" and host.task(task_id)["start"]
    host.set_status(task_id, "Done", 7)
    assert host.task(task_id)["status"] == {"Done": {"Failed": 7}}
    host.set_group("extra", "Paused", 4)
    assert host.state()["groups"]["extra"] == {"status": "Paused", "parallel_tasks": 4}
    assert all(TS_RE.match(s) and s[-6:] in ("+01:00", "+02:00") for s in all_timestamps(host.state()))
    assert os.path.exists(host.state_path)
