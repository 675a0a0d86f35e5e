"""Write a large, realistic pueue state file directly (no daemon), fast.

The output is byte-for-byte the shape `pueued` writes: one compact JSON line, tasks sorted by id,
groups by name, every task field present, timestamps like chrono (9 fraction digits normally) in
the given zone. What makes it realistic:

* `envs` is a whole login environment (PATH, HOME, SSH_CONNECTION, a long LS_COLORS, secrets such
  as `GITHUB_TOKEN`/`DB_PASSWORD`, ...) in a different random key order for every task; tasks that
  were spawned also carry `PUEUE_GROUP` and `PUEUE_WORKER_ID` (DependencyFailed/FailedToSpawn ones
  and never-started ones do not). `envs` makes up most of each task, as in real states.
* Groups `default`, `btc-yearly`, `p1`..`pN`, some Paused, various `parallel_tasks` (0 too).
* Mostly Done tasks with a mix of results (Success, Failed(n), Killed, Errored, DependencyFailed,
  FailedToSpawn), then the active ones with the highest ids: Running/Paused (never more than
  `parallel_tasks` per group; Paused in paused groups), Queued, Locked, Stashed (some delayed).
* Ordered timestamps: ids are created in time order over ~200 days ending now.

Each task record is assembled from small pre-formatted JSON pieces (only free-text values go
through `json.dumps`), so 53,000 tasks (~76 MB) take a few seconds.
"""

from __future__ import annotations

import gzip
import json
import os
import random
import zoneinfo
from collections import Counter
from collections.abc import Mapping
from pathlib import Path

from .timefmt import NS, Zone, format_ts, now_ns

DEFAULT_STATUSES: dict[str, float] = {
    "Success": 0.868,
    "Failed": 0.05,
    "Killed": 0.012,
    "Errored": 0.002,
    "DependencyFailed": 0.006,
    "FailedToSpawn": 0.002,
    "Running": 0.012,
    "Paused": 0.003,
    "Queued": 0.03,
    "Stashed": 0.012,
    "Locked": 0.003,
}
DONE_RESULTS = ("Success", "Failed", "Killed", "Errored", "DependencyFailed", "FailedToSpawn")
_ACTIVE_ORDER = {"Running": 0, "Paused": 0, "Queued": 1, "Locked": 1, "Stashed": 2}

_LS_COLORS = (
    "rs=0:di=01;34:ln=01;36:mh=00:pi=40;33:so=01;35:do=01;35:bd=40;33;01:cd=40;33;01:or=40;31;01:"
    "mi=00:su=37;41:sg=30;43:ca=00:tw=30;42:ow=34;42:st=37;44:ex=01;32:*.tar=01;31:*.tgz=01;31:"
    "*.arc=01;31:*.arj=01;31:*.taz=01;31:*.lha=01;31:*.lz4=01;31:*.lzh=01;31:*.lzma=01;31:*.tlz=01;31:"
    "*.txz=01;31:*.tzo=01;31:*.t7z=01;31:*.zip=01;31:*.z=01;31:*.dz=01;31:*.gz=01;31:*.lrz=01;31:"
    "*.lz=01;31:*.lzo=01;31:*.xz=01;31:*.zst=01;31:*.tzst=01;31:*.bz2=01;31:*.bz=01;31:*.tbz=01;31:"
    "*.tbz2=01;31:*.tz=01;31:*.deb=01;31:*.rpm=01;31:*.jar=01;31:*.war=01;31:*.ear=01;31:*.sar=01;31:"
    "*.rar=01;31:*.alz=01;31:*.ace=01;31:*.zoo=01;31:*.cpio=01;31:*.7z=01;31:*.rz=01;31:*.cab=01;31:"
    "*.wim=01;31:*.swm=01;31:*.dwm=01;31:*.esd=01;31:*.avif=01;35:*.jpg=01;35:*.jpeg=01;35:"
    "*.mjpg=01;35:*.mjpeg=01;35:*.gif=01;35:*.bmp=01;35:*.pbm=01;35:*.pgm=01;35:*.ppm=01;35:"
    "*.tga=01;35:*.xbm=01;35:*.xpm=01;35:*.tif=01;35:*.tiff=01;35:*.png=01;35:*.svg=01;35:"
    "*.svgz=01;35:*.mng=01;35:*.pcx=01;35:*.mov=01;35:*.mpg=01;35:*.mpeg=01;35:*.m2v=01;35:"
    "*.mkv=01;35:*.webm=01;35:*.webp=01;35:*.ogm=01;35:*.mp4=01;35:*.m4v=01;35:*.mp4v=01;35:"
    "*.vob=01;35:*.qt=01;35:*.nuv=01;35:*.wmv=01;35:*.asf=01;35:*.rm=01;35:*.rmvb=01;35:*.flc=01;35:"
    "*.avi=01;35:*.fli=01;35:*.flv=01;35:*.gl=01;35:*.dl=01;35:*.xcf=01;35:*.xwd=01;35:*.yuv=01;35:"
    "*.cgm=01;35:*.emf=01;35:*.ogv=01;35:*.ogx=01;35:*.aac=00;36:*.au=00;36:*.flac=00;36:*.m4a=00;36:"
    "*.mid=00;36:*.midi=00;36:*.mka=00;36:*.mp3=00;36:*.mpc=00;36:*.ogg=00;36:*.ra=00;36:*.wav=00;36:"
    "*.oga=00;36:*.opus=00;36:*.spx=00;36:*.xspf=00;36:*~=00;90:*#=00;90:*.bak=00;90:*.old=00;90:"
    "*.orig=00;90:*.part=00;90:*.rej=00;90:*.swp=00;90:*.tmp=00;90:*.dpkg-dist=00;90:*.dpkg-old=00;90:"
    "*.ucf-dist=00;90:*.ucf-new=00;90:*.ucf-old=00;90:*.rpmnew=00;90:*.rpmorig=00;90:*.rpmsave=00;90:"
)


def _q(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


_ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"


def _token(rng: random.Random, n: int, alphabet: str = _ALNUM) -> str:
    return "".join(rng.choices(alphabet, k=n))


def _session_envs(rng: random.Random, user: str, index: int) -> tuple[dict[str, str], dict[str, str]]:
    """One login shell's environment (the tasks added from it share everything but PWD):
    the variables every session has, and optional ones in the order they are added."""
    client_ip = f"10.20.{rng.randrange(256)}.{rng.randrange(1, 255)}"
    port = rng.randrange(40000, 65000)
    home = f"/home/{user}"
    venv = f"{home}/.venvs/{rng.choice(['quant', 'ml', 'etl'])}"
    required = {
        "SHELL": "/bin/bash",
        "USER": user,
        "LOGNAME": user,
        "HOME": home,
        "LANG": "en_US.UTF-8",
        "TERM": rng.choice(["tmux-256color", "xterm-256color", "screen-256color"]),
        "PATH": f"{venv}/bin:{home}/.local/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "SSH_CONNECTION": f"{client_ip} {port} 10.20.0.31 22",
        "GITHUB_TOKEN": "ghp_" + _token(rng, 36),
        "DB_PASSWORD": _token(rng, 20),
    }
    optional = {
        "AWS_SECRET_ACCESS_KEY": _token(rng, 40, _ALNUM + "+/"),
        "VIRTUAL_ENV": venv,
        "SSH_CLIENT": f"{client_ip} {port} 22",
        "SLACK_BOT_TOKEN": "-".join(
            ["xoxb", str(rng.randrange(10**11, 10**12)), str(rng.randrange(10**11, 10**12)), _token(rng, 24)]
        ),
        "XDG_RUNTIME_DIR": "/run/user/1000",
        "SSH_TTY": f"/dev/pts/{index % 12}",
        "SHLVL": str(1 + index % 3),
        "MAIL": f"/var/mail/{user}",
        "XDG_SESSION_ID": str(1000 + index),
        "XDG_SESSION_TYPE": "tty",
        "OLDPWD": f"{home}/jobs",
        "EDITOR": "vim",
        "_": "/usr/bin/pueue",
        "TMUX": f"/tmp/tmux-1000/default,{rng.randrange(1000, 99999)},0",
        "HISTSIZE": "100000",
    }
    return required, optional


def _env_pieces(required: dict[str, str], optional: dict[str, str], budget: int) -> list[str]:
    """`"KEY":"value"` pieces whose JSON (with PWD and PUEUE_* added later) is about `budget` bytes:
    the required variables, as many optional ones as fit, and LS_COLORS (at least 160 characters,
    longer when there is room)."""

    def size(envs: dict[str, str]) -> int:
        return sum(len(_q(k).encode()) + len(_q(v).encode()) + 2 for k, v in envs.items())

    envs = dict(required)
    min_colors = 160
    used = size(envs) + len('"LS_COLORS":""') + 1 + min_colors
    for key, value in optional.items():
        extra = len(_q(key)) + len(_q(value)) + 2
        if used + extra <= budget:
            envs[key] = value
            used += extra
    colors_len = min_colors + max(0, budget - used)
    envs["LS_COLORS"] = (_LS_COLORS * (colors_len // len(_LS_COLORS) + 1))[:colors_len]
    return [f"{_q(k)}:{_q(v)}" for k, v in envs.items()]


def _group_names(n_groups: int) -> list[str]:
    names = ["default", "btc-yearly"][: max(1, n_groups)]
    names += [f"p{i}" for i in range(1, n_groups - len(names) + 1)]
    return names


def _commands(group: str, i: int, rng: random.Random) -> tuple[str, str, str | None, str]:
    """(original_command, command, label, path) for a task of `group`."""
    if group == "btc-yearly":
        year = 2009 + i % 17
        return (
            f"python3 btc_yearly.py --year {year}",
            f"python3 btc_yearly.py --year {year}",
            f"btc-{year}",
            "/home/miner/btc",
        )
    if group == "default":
        kind = i % 4
        if kind == 0:
            year = 2015 + i % 10  # an alias: `command` differs from `original_command`
            return (
                f"backtest --year {year}",
                f"python3 /home/miner/jobs/backtest.py --year {year}",
                None,
                "/home/miner/jobs",
            )
        if kind == 1:
            exchange = rng.choice(["kraken", "binance", "coinbase"])
            command = f"./fetch_prices.sh --exchange {exchange} --since yesterday"
            return command, command, f"prices-{exchange}", "/home/miner/jobs"
        if kind == 2:
            command = f'echo "report {i} ✓" && python3 report.py --format pdf --week {i % 52}'
            return command, command, None, "/home/miner/jobs"
        command = f"rsync -a --delete 'out/run {i}/' backup:/srv/runs/"
        return command, command, f"sync-{i}", "/home/miner/jobs"
    phase = group[1:] or "0"
    return (f"python3 run_phase.py --phase {phase} --chunk {i} --config configs/phase{phase}.yaml",) * 2 + (
        f"phase{phase}-chunk{i}" if i % 3 else None,
        f"/srv/pipeline/phase{phase}",
    )


def _pick_statuses(rng: random.Random, n: int, weights: Mapping[str, float]) -> list[str]:
    names = list(weights)
    drawn = rng.choices(names, weights=[weights[k] for k in names], k=n)
    done = [s for s in drawn if s in DONE_RESULTS]
    active = sorted((s for s in drawn if s not in DONE_RESULTS), key=lambda s: _ACTIVE_ORDER[s])
    return done + active


def _result_json(name: str, task_id: int, rng: random.Random) -> str:
    if name == "Failed":
        return f'{{"Failed":{rng.choice([1, 1, 1, 2, 3, 127, 137, 255])}}}'
    if name == "FailedToSpawn":
        message = (
            f"Failed to spawn child {task_id} with err: Os {{ code: 2, kind: NotFound, "
            'message: "No such file or directory" }'
        )
        return f'{{"FailedToSpawn":{_q(message)}}}'
    return f'"{name}"'


def generate_state(
    path: Path,
    flavor: str,
    n_tasks: int,
    n_groups: int,
    *,
    envs_bytes: int = 1400,
    seed: int = 0,
    statuses: Mapping[str, float] | None = None,
    compress: bool = False,
    tz: str | Zone = None,
    now: int | None = None,
    user: str = "miner",
) -> None:
    """Write a state file of `n_tasks` tasks in `n_groups` groups for pueue `flavor` ("v3"/"v4").

    `path` is the file to write (if it is a directory, `state.json` or `state.json.gz` inside it).
    `envs_bytes` is the approximate size in bytes of one serialised task: the environment is padded
    (LS_COLORS) so that the whole task record reaches it; 53,000 tasks at the default 1400 come to
    roughly 76 MB. `statuses` maps status/result names (see `DEFAULT_STATUSES`) to weights.
    `compress` writes gzip (what v4 does with `daemon.compress_state_file`). `tz` is a zone name,
    a fixed offset in seconds or a tzinfo; default: this process's local zone.
    """
    if flavor not in ("v3", "v4"):
        raise ValueError(f"unknown flavor {flavor!r}")
    rng = random.Random(seed)
    zone: Zone = zoneinfo.ZoneInfo(tz) if isinstance(tz, str) else tz
    now = now_ns() if now is None else now
    weights = dict(statuses or DEFAULT_STATUSES)

    # Groups: status and parallel_tasks.
    names = _group_names(n_groups)
    groups: dict[str, tuple[str, int]] = {}
    for i, name in enumerate(names):
        parallel = {"default": 1, "btc-yearly": 3}.get(name, rng.choice([1, 1, 2, 3, 4, 0]))
        status = "Paused" if (i >= 2 and i % 5 == 3) or name == "p1" else "Running"
        groups[name] = (status, parallel)
    group_weights = [
        8 if n == "default" else 5 if n == "btc-yearly" else 1 + (i % 4) for i, n in enumerate(names)
    ]

    # Statuses in id order (Done first), groups, and the per-group slot bookkeeping.
    status_list = _pick_statuses(rng, n_tasks, weights)
    task_groups = rng.choices(names, weights=group_weights, k=n_tasks)
    busy: Counter[str] = Counter()
    for i, status in enumerate(status_list):
        group = task_groups[i]
        g_status, parallel = groups[group]
        if status in ("Running", "Paused"):
            if parallel and busy[group] >= parallel:
                status = "Queued"
            else:
                busy[group] += 1
                status = "Paused" if g_status == "Paused" else status
            status_list[i] = status
    # What pueued never keeps: a Queued task (with no dependency) in a Running group with a free slot. It
    # starts such a task within one pass of its loop (spawn.rs), so a real state shows it Running.
    for i, status in enumerate(status_list):
        group = task_groups[i]
        g_status, parallel = groups[group]
        if status == "Queued" and g_status == "Running" and (parallel == 0 or busy[group] < parallel):
            busy[group] += 1
            status_list[i] = "Running"

    # The environment of a few login sessions, padded so that one task is about `envs_bytes`.
    # Measured: a task without envs takes ~525 (v3) / ~510 (v4) bytes; PWD and PUEUE_* ~75 more.
    budget = envs_bytes - (525 if flavor == "v3" else 510) - 75
    pieces = [_env_pieces(*_session_envs(rng, user, k), budget) for k in range(6)]

    span = 200 * 86400 * NS
    created = now - span
    step = span // max(1, n_tasks)
    last_failed: dict[str, int] = {}
    worker_ids: Counter[str] = Counter()
    records = []
    fmt = format_ts
    for task_id in range(n_tasks):
        status = status_list[task_id]
        group = task_groups[task_id]
        created += rng.randrange(step // 2, step * 3 // 2 + 1)
        original, command, label, cwd = _commands(group, task_id, rng)
        spawned = status in ("Success", "Failed", "Killed", "Errored", "Running", "Paused")
        env_parts = list(pieces[task_id % len(pieces)])
        env_parts.append(f'"PWD":{_q(cwd)}')
        if spawned:
            env_parts.append(f'"PUEUE_GROUP":{_q(group)}')
            env_parts.append(f'"PUEUE_WORKER_ID":"{worker_ids[group] % max(1, groups[group][1] or 4)}"')
            worker_ids[group] += 1
        rng.shuffle(env_parts)
        envs_json = "{" + ",".join(env_parts) + "}"

        deps = ""
        if status == "DependencyFailed" and group in last_failed:
            deps = str(last_failed[group])
        elif task_id and rng.random() < 0.03:
            deps = str(rng.randrange(max(0, task_id - 50), task_id))
        if status == "Failed":
            last_failed[group] = task_id
        priority = rng.choice((0, 0, 0, 0, 0, 0, 0, 0, 1, 2, -1))

        # Times, in ns: enqueued/start/end for what the status needs.
        enqueued = created + rng.randrange(12_000, 25_000)
        if status in DONE_RESULTS:
            if status in ("DependencyFailed", "FailedToSpawn"):
                start = min(now, enqueued + rng.randrange(NS // 10, 3600 * NS))
                end = start + rng.randrange(300, 9_000)
            else:
                start = min(now - NS, enqueued + rng.randrange(NS // 10, 3600 * NS))
                end = min(now, start + rng.randrange(NS, 4 * 3600 * NS))
        elif status in ("Running", "Paused"):
            start = min(now, max(enqueued + NS // 10, now - rng.randrange(NS, 3 * 3600 * NS)))
            end = 0
        else:
            start = end = 0
        c_txt = fmt(created, zone)
        label_json = "null" if label is None else _q(label)
        common = (
            f'"original_command":{_q(original)},"command":{_q(command)},"path":{_q(cwd)},'
            f'"envs":{envs_json},"group":{_q(group)},"dependencies":[{deps}],'
            f'"priority":{priority},"label":{label_json}'
        )
        stash_at = "null"
        if status == "Stashed" and rng.random() < 0.3:
            stash_at = f'"{fmt(now + rng.randrange(3600 * NS, 86400 * NS * 3), zone)}"'

        if flavor == "v3":
            enq_txt = "null" if status == "Stashed" else f'"{fmt(enqueued, zone)}"'
            if status in DONE_RESULTS:
                st = f'{{"Done":{_result_json(status, task_id, rng)}}}'
            elif status == "Stashed":
                st = f'{{"Stashed":{{"enqueue_at":{stash_at}}}}}'
            else:
                st = f'"{status}"'
            prev = '"Queued"' if status == "Locked" or rng.random() < 0.01 else '"Locked"'
            start_txt = f'"{fmt(start, zone)}"' if start else "null"
            end_txt = f'"{fmt(end, zone)}"' if end else "null"
            record = (
                f'{{"id":{task_id},"created_at":"{c_txt}","enqueued_at":{enq_txt},{common},'
                f'"status":{st},"prev_status":{prev},"start":{start_txt},"end":{end_txt}}}'
            )
        else:
            e_txt = fmt(created - rng.randrange(12_000, 25_000), zone)
            if status in DONE_RESULTS:
                result = _result_json(status, task_id, rng)
                st = (
                    f'{{"Done":{{"enqueued_at":"{e_txt}","start":"{fmt(start, zone)}",'
                    f'"end":"{fmt(end, zone)}","result":{result}}}}}'
                )
            elif status in ("Running", "Paused"):
                st = f'{{"{status}":{{"enqueued_at":"{e_txt}","start":"{fmt(start, zone)}"}}}}'
            elif status == "Queued":
                st = f'{{"Queued":{{"enqueued_at":"{e_txt}"}}}}'
            elif status == "Locked":
                st = f'{{"Locked":{{"previous_status":{{"Queued":{{"enqueued_at":"{e_txt}"}}}}}}}}'
            else:
                st = f'{{"Stashed":{{"enqueue_at":{stash_at}}}}}'
            record = f'{{"id":{task_id},"created_at":"{c_txt}",{common},"status":{st}}}'
        records.append(f'"{task_id}":{record}')

    groups_json = ",".join(
        f'{_q(n)}:{{"status":"{groups[n][0]}","parallel_tasks":{groups[n][1]}}}' for n in sorted(groups)
    )
    text = '{"tasks":{' + ",".join(records) + '},"groups":{' + groups_json + "}}"

    path = Path(path)
    if path.is_dir():
        path = path / ("state.json.gz" if compress else "state.json")
    data = text.encode("utf-8")
    if compress:
        data = gzip.compress(data, compresslevel=6)
    temp = path.with_name(path.name + ".partial")
    temp.write_bytes(data)
    os.replace(temp, path)
