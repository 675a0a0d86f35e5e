"""Sharding: n watchers split a fleet with no overlap and no gap, and a new shard moves few hosts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from watcher.config import settings_from_mapping, watched_hosts
from watcher.errors import ConfigError
from watcher.shard import parse_shard, shard_of

HOSTS = [f"gpu-{i:04d}.rack{i % 17}" for i in range(1000)]


@pytest.mark.parametrize("count", range(1, 8))
def test_every_host_lands_in_exactly_one_shard(count: int) -> None:
    """For n = 1 … 7, the shards of 1,000 hosts cover all of them, each once, and none is starved."""
    members = [[h for h in HOSTS if shard_of(h, count) == i] for i in range(1, count + 1)]
    assert sorted(h for shard in members for h in shard) == sorted(HOSTS)
    assert all(len(shard) > 1000 / count / 2 for shard in members)


@pytest.mark.parametrize("count", range(1, 7))
def test_adding_a_shard_moves_only_what_the_new_shard_takes(count: int) -> None:
    """Going from n to n + 1 shards moves only the hosts the new shard takes, about 1 / (n + 1) of them:
    fewer than half from two shards on (from one to two, half of them must move, and about half do)."""
    moved = [h for h in HOSTS if shard_of(h, count) != shard_of(h, count + 1)]
    assert all(shard_of(h, count + 1) == count + 1 for h in moved)
    share = len(moved) / len(HOSTS)
    assert abs(share - 1 / (count + 1)) < 0.06
    if count >= 2:
        assert len(moved) < len(HOSTS) / 2


def test_the_split_is_stable_across_processes() -> None:
    """The same host goes to the same shard in another interpreter (no salted hash)."""
    code = "from watcher.shard import shard_of; print([shard_of(f'h{i}', 5) for i in range(50)])"
    other = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert json.loads(other) == [shard_of(f"h{i}", 5) for i in range(50)]


@pytest.mark.parametrize("text", ["0/3", "4/3", "x/3", "1-3", "", "1/0"])
def test_bad_shards_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="shard"):
        parse_shard(text)


def test_shard_in_the_configuration_and_on_the_command_line(tmp_path: Path) -> None:
    """`watcher.shard` selects the hosts; `--shard` overrides it; a bad value is a config error."""
    hosts = [{"name": h, "transport": "local", "pueue": "/nonexistent"} for h in HOSTS[:40]]
    settings = settings_from_mapping({"watcher": {"shard": "2/3"}, "hosts": hosts})
    assert [h.name for h in watched_hosts(settings)] == [h for h in HOSTS[:40] if shard_of(h, 3) == 2]
    assert [h.name for h in watched_hosts(settings, "1/1")] == HOSTS[:40]
    with pytest.raises(ConfigError, match=r"watcher\.shard"):
        settings_from_mapping({"watcher": {"shard": "5/3"}})
    config = tmp_path / "c.toml"
    config.write_text("".join(f'[[hosts]]\nname = "{h}"\ntransport = "local"\npueue = "/nonexistent"\n'
                              for h in HOSTS[:10]))  # fmt: skip
    for index in (1, 2):
        proc = subprocess.run([sys.executable, "-m", "watcher", "status", "--json", "--shard", f"{index}/2",
                               "-c", str(config)], capture_output=True, text=True, check=False)  # fmt: skip
        names = [h["name"] for h in json.loads(proc.stdout)["hosts"]]
        assert names == [h for h in HOSTS[:10] if shard_of(h, 2) == index]
    bad = subprocess.run([sys.executable, "-m", "watcher", "status", "--shard", "3/2", "-c", str(config)],
                         capture_output=True, text=True, check=False)  # fmt: skip
    assert bad.returncode == 2
    assert "config error: --shard" in bad.stderr
