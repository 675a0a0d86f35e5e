"""Configuration: where it is found, how the environment overrides it, and how errors are reported."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from watcher.config import find_config, load_settings, settings_from_mapping
from watcher.errors import ConfigError
from watcher.units import parse_duration

REPO = Path(__file__).resolve().parents[1]

REFERENCE = """
[watcher]
poll_interval = "5m"
state_path = "~/.local/state/pueue-watcher/state.db"

[metrics]
listen = "127.0.0.1:9925"

[[hosts]]
name = "local"
transport = "local"
pueue = "pueue"

[[hosts]]
name = "bigblack"
address = "bigblack"
port = 22
user = "alice"
identity_file = "~/.ssh/id_ed25519"
known_hosts = "~/.ssh/known_hosts"
pueue = "~/.local/bin/pueue"
pueue_dir = "~/.local/share/pueue"
groups = ["*"]
"""


def test_reference_schema_loads(tmp_path: Path) -> None:
    """The schema of the core issue, key for key, is accepted."""
    path = tmp_path / "c.toml"
    path.write_text(REFERENCE)
    settings = load_settings(path)
    assert settings.watcher.poll_interval == 300
    assert [h.name for h in settings.hosts] == ["local", "bigblack"]
    big = settings.hosts[1]
    assert (big.transport, big.port, big.user, big.destination) == ("ssh", 22, "alice", "bigblack")
    assert settings.hosts[0].transport == "local"


def test_shipped_config_is_valid() -> None:
    settings = load_settings(REPO / "config.toml")
    assert settings.hosts[0].transport == "local"


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (300, 300.0),
        ("300", 300.0),
        ("30s", 30.0),
        ("5m", 300.0),
        ("1h", 3600.0),
        ("1h30m", 5400.0),
        (2.5, 2.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5x", "m5", "-3", 0, True, "5m 3x"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def test_search_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """-c wins, then $PUEUE_WATCHER_CONFIG, then ./config.toml."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PUEUE_WATCHER_CONFIG", raising=False)
    (tmp_path / "config.toml").write_text("")
    assert find_config() == Path("config.toml")
    monkeypatch.setenv("PUEUE_WATCHER_CONFIG", "/x/env.toml")
    assert find_config() == Path("/x/env.toml")
    assert find_config("explicit.toml") == Path("explicit.toml")


def test_environment_overrides_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PUEUE_WATCHER__WATCHER__POLL_INTERVAL", "30s")
    monkeypatch.setenv("PUEUE_WATCHER__METRICS__LISTEN", "")
    settings = settings_from_mapping({"watcher": {"poll_interval": "5m", "max_concurrency": 4}})
    assert settings.watcher.poll_interval == 30
    assert settings.watcher.max_concurrency == 4
    assert settings.metrics.listen == ""


def test_every_wrong_key_is_reported() -> None:
    data = {
        "watcher": {"poll_interval": "soon", "colour": "blue"},
        "hosts": [{"name": "ok"}, {"name": "bad name; rm -rf /", "port": 70000, "transport": "telnet"}],
    }
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data, "c.toml")
    problems = info.value.problems
    joined = "\n".join(problems)
    assert "watcher.poll_interval: 'soon' is not a duration" in joined
    assert "watcher.colour: unknown key" in joined
    assert any(p.startswith("hosts[1].name:") for p in problems)
    assert any(p.startswith("hosts[1].port:") for p in problems)
    assert any(p.startswith("hosts[1].transport:") for p in problems)


def test_duplicate_host_names() -> None:
    with pytest.raises(ConfigError, match="used twice"):
        settings_from_mapping({"hosts": [{"name": "a"}, {"name": "a"}]})


def test_secret_is_hidden() -> None:
    settings = settings_from_mapping({"hosts": [{"name": "a", "passphrase": "hunter2"}]})
    assert "hunter2" not in repr(settings) and "hunter2" not in str(settings.hosts[0])


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("[watcher]\npoll_interval = \n", "not valid TOML"),
        ("[[hosts]]\nname = 'x'\nport = 'ssh'\n", "hosts[0].port: Input should be a valid integer"),
        ("[metrics]\nlisten = 'nowhere'\n", "metrics.listen: 'nowhere' is not host:port"),
        ("[[hosts]]\nname = 'x'\ngroups = []\n", "hosts[0].groups: list at least one group glob"),
    ],
)
def test_cli_exits_2_with_one_line_per_problem(tmp_path: Path, content: str, expected: str) -> None:
    """An invalid file: each problem on its own line on stderr, no traceback, exit status 2."""
    path = tmp_path / "bad.toml"
    path.write_text(content)
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "status", "-c", str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2
    assert expected in proc.stderr
    assert "Traceback" not in proc.stderr
    assert all(line.startswith("config error: ") for line in proc.stderr.splitlines())


def test_missing_file_is_a_config_error(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "watcher", "status", "-c", str(tmp_path / "nope.toml")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 2 and "file not found" in proc.stderr


@pytest.mark.parametrize("secret", ["", "   "])
def test_a_webhook_with_an_empty_secret_is_refused(secret: str) -> None:
    """An empty HMAC secret is a signature anyone can forge: the configuration names it as an error."""
    sink = {"name": "ops", "kind": "webhook", "url": "https://hooks.example/x", "secret": secret}
    with pytest.raises(ConfigError) as info:
        settings_from_mapping({"hosts": [{"name": "a"}], "alerts": [sink]}, "c.toml")
    (problem,) = info.value.problems
    assert problem.startswith("alerts[0]")
    assert "secret" in problem and "is empty" in problem
    assert "\n" not in problem
