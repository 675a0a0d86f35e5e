"""The first hour's configuration mistakes (issue 14): each is one line that names the key, where its value
came from, and the fix, with exit code 2. The real CLI runs each in a process of its own."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.fleet import REPO
from watcher.config import settings_from_mapping

HOST = '[[hosts]]\nname = "a"\ntransport = "local"\n'


def cli(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m watcher ARGS`` in ``tmp_path`` with a HOME of its own and no PUEUE_WATCHER variables."""
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("PUEUE_WATCHER")}
    clean.pop("XDG_CONFIG_HOME", None)
    clean |= {"HOME": str(tmp_path / "home"), "PYTHONPATH": str(REPO)} | (env or {})
    return subprocess.run([sys.executable, "-m", "watcher", *args], cwd=tmp_path, env=clean,
                          capture_output=True, text=True, timeout=60, check=False)  # fmt: skip


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ('[watcher]\npoll_intervall = "5s"\n', {},
         "watcher.poll_intervall: unknown key; did you mean poll_interval?"),
        ('[watcher]\nfast_interval = "-1"\n', {}, "watcher.fast_interval: a duration must be positive or 0"),
        (HOST + "prot = 2222\n", {}, "hosts[0].prot: unknown key; did you mean port?"),
        ("", {"PUEUE_WATCHER__WATCHER__POLL_INTERVAL": "soon"},
         "watcher.poll_interval: 'soon' is not a duration such as '30s', '5m' or '1h' "
         "(from PUEUE_WATCHER__WATCHER__POLL_INTERVAL in the environment)"),
        ("", {"PUEUE_WATCHER__WATCHR__POLL_INTERVAL": "5s"},
         "PUEUE_WATCHER__WATCHR__POLL_INTERVAL (environment): no section 'watchr'; did you mean watcher?"),
        ('[[alerts]]\nname = "team"\nkind = "slack"\nurl_file = "/nonexistent/slack-url"\n', {},
         "alerts[0].url_file: /nonexistent/slack-url: No such file or directory"),
    ],
    ids=["typo", "bad-duration", "typo-in-a-list", "bad-env-override", "unknown-env-section",
         "missing-secret-file"],
)  # fmt: skip
def test_a_first_hour_mistake_is_one_line(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    config = tmp_path / "c.toml"
    config.write_text(toml)
    proc = cli(tmp_path, "status", "-c", str(config), env=env)
    assert (proc.returncode, proc.stdout, proc.stderr) == (2, "", f"config error: {config}: {message}\n")


def test_no_configuration_lists_every_path_it_tried(tmp_path: Path) -> None:
    proc = cli(tmp_path, "status")
    home = tmp_path / "home"
    tried = f"config.toml, {home}/.config/pueue-watcher/config.toml, /etc/pueue-watcher/config.toml"
    assert proc.returncode == 2
    assert proc.stderr == (
        f"config error: config: no configuration file found (tried {tried}); "
        "pass -c FILE or set PUEUE_WATCHER_CONFIG\n"
    )


def test_the_user_config_path_is_found(tmp_path: Path) -> None:
    """~/.config/pueue-watcher/config.toml, the path the user unit reads, is in the search order."""
    config = tmp_path / "home" / ".config" / "pueue-watcher" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[watcher]\npoll_intervall = "5s"\n')
    proc = cli(tmp_path, "status")
    assert proc.stderr.startswith(f"config error: {config}: watcher.poll_intervall: unknown key")


def test_a_secret_comes_from_its_file(tmp_path: Path) -> None:
    """``url_file``: the secret is the file's content, without its trailing newline, and stays secret."""
    secret = tmp_path / "slack-url"
    secret.write_text("https://hooks.slack.com/services/T0/B0/xyzzy\n")
    alerts = [{"name": "team", "kind": "slack", "url_file": str(secret)}]
    settings = settings_from_mapping({"alerts": alerts})
    url = settings.alerts[0].url  # type: ignore[union-attr]
    assert url.get_secret_value() == "https://hooks.slack.com/services/T0/B0/xyzzy"
    assert "xyzzy" not in repr(settings)


def test_a_secret_given_twice_or_through_a_link_is_refused(tmp_path: Path) -> None:
    from watcher.errors import ConfigError

    secret = tmp_path / "pass"
    secret.write_text("hunter2")
    link = tmp_path / "link"
    link.symlink_to(secret)
    both = {"clickhouse": [{"name": "m", "password": "x", "password_file": str(secret)}]}
    linked = {"hosts": [{"name": "a", "passphrase_file": str(link)}]}
    with pytest.raises(ConfigError) as twice:
        settings_from_mapping(both)
    with pytest.raises(ConfigError) as through:
        settings_from_mapping(linked)
    assert twice.value.problems == ["clickhouse[0].password_file: give password or password_file, not both"]
    assert through.value.problems == [f"hosts[0].passphrase_file: {link}: Too many levels of symbolic links"]


def test_validate_takes_c_like_every_command(tmp_path: Path) -> None:
    config = tmp_path / "c.toml"
    config.write_text(HOST.replace('transport = "local"', 'transport = "local"\npueue = "pueue"'))
    by_option = cli(tmp_path, "config", "validate", "-c", str(config))
    by_position = cli(tmp_path, "config", "validate", str(config))
    assert (by_option.returncode, by_option.stdout) == (0, f"ok: {config}: 1 host, 0 checks, 0 sinks\n")
    assert by_option.stdout == by_position.stdout
    both = cli(tmp_path, "config", "validate", "-c", str(config), "other.toml")
    assert (both.returncode, both.stderr) == (2, f"error: two files named: {config} (-c) and other.toml\n")
