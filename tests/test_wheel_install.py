"""Installed as a pipx user installs it (issue 14): the built wheel in a fresh virtual environment, run
from a directory outside the repository, so that nothing of the checkout is on the path.

- ``config init`` writes a configuration that ``config validate`` accepts;
- ``kit DIR`` writes the systemd units, the Grafana dashboard and the Prometheus files, byte for byte those
  of ``deploy/``;
- ``--help`` of every command is plain text, and the top-level help names every command.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.fleet import REPO

pytestmark = pytest.mark.integration

COMMANDS = ("run", "status", "once", "check", "health", "config", "kit", "history")


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ``bin`` directory of a fresh venv holding the wheel built from this checkout."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"),
                    str(REPO)], check=True, capture_output=True, timeout=600)  # fmt: skip
    (wheel,) = (root / "dist").glob("pueue_watcher-*.whl")
    subprocess.run([sys.executable, "-m", "venv", str(root / "venv")], check=True, timeout=120)
    pip = root / "venv" / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", str(wheel)], check=True, capture_output=True, timeout=900)
    return root / "venv" / "bin"


def run(bin_dir: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env |= {"HOME": str(cwd / "home"), "PATH": f"{bin_dir}:/usr/bin:/bin"}
    env.pop("XDG_CONFIG_HOME", None)
    return subprocess.run([str(bin_dir / "pueue-watcher"), *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)  # fmt: skip


def test_the_wheel_runs_without_the_repository(installed: Path, tmp_path: Path) -> None:
    probe = subprocess.run([str(installed / "python"), "-c", "import watcher; print(watcher.__file__)"],
                           cwd=tmp_path, capture_output=True, text=True, check=True)  # fmt: skip
    assert str(installed.parent) in probe.stdout and str(REPO) not in probe.stdout


def test_config_init_writes_a_configuration_that_validates(installed: Path, tmp_path: Path) -> None:
    (tmp_path / "home" / ".ssh").mkdir(parents=True)
    (tmp_path / "home" / ".ssh" / "config").write_text("Host *\n  User x\nHost gpu-01 gpu-02\n  Port 22\n")
    init = run(installed, tmp_path, "config", "init", "--from-ssh-config")
    path = tmp_path / "home" / ".config" / "pueue-watcher" / "config.toml"
    assert init.returncode == 0, init.stderr
    assert init.stdout.startswith(f"wrote {path} (2 hosts from ~/.ssh/config)")
    validate = run(installed, tmp_path, "config", "validate", str(path))
    assert validate.returncode == 0, validate.stdout + validate.stderr
    again = run(installed, tmp_path, "config", "init")
    assert (again.returncode, again.stderr) == (2, f"error: {path} exists; pass --force to replace it\n")


def test_the_deploy_files_are_written_out(installed: Path, tmp_path: Path) -> None:
    kit = run(installed, tmp_path, "kit", "deploy")
    assert kit.returncode == 0, kit.stderr
    out = tmp_path / "deploy"
    shipped = {
        "pueue-watcher.service": "deploy/systemd/pueue-watcher.service",
        "pueue-watcher.user.service": "deploy/systemd/pueue-watcher.user.service",
        "grafana-dashboard.json": "deploy/grafana/pueue-watcher.json",
        "prometheus-alerts.yml": "deploy/prometheus/alerts.yml",
    }
    for name, source in shipped.items():
        assert (out / name).read_bytes() == (REPO / source).read_bytes(), name
    assert "job_name: pueue-watcher" in (out / "prometheus-scrape.yml").read_text()


def test_every_help_is_plain_and_names_every_command(installed: Path, tmp_path: Path) -> None:
    top = run(installed, tmp_path, "--help")
    assert top.returncode == 0
    assert all(f"    {command} " in top.stdout for command in COMMANDS), top.stdout
    for args in [*([c, "--help"] for c in COMMANDS), ["config", "init", "--help"], ["--help"]]:
        shown = run(installed, tmp_path, *args)
        assert shown.returncode == 0, (args, shown.stderr)
        assert "``" not in shown.stdout and "`" not in shown.stdout and "README" not in shown.stdout, args
