"""pueue-watcher: watch pueue queues over SSH, record each group's completion once, check it, alert.

First steps:
  pueue-watcher config init      write a configuration (~/.config/pueue-watcher/config.toml)
  pueue-watcher health           check the configuration, the hosts, ClickHouse, the metrics port
  pueue-watcher status           every host's queue, once
  pueue-watcher run              the daemon (its systemd units: pueue-watcher kit DIR)
Every configuration key: pueue-watcher config docs.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, NoReturn

from watcher import __version__

if TYPE_CHECKING:
    from watcher.config import HostConfig, Settings
    from watcher.poll.poller import PollResult

EXIT_OK, EXIT_HOST_FAILED, EXIT_CONFIG = 0, 1, 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    if "_ARGCOMPLETE" in os.environ:  # a shell asks for completions (register-python-argcomplete)
        import argcomplete

        argcomplete.autocomplete(parser)
    args = parser.parse_args(argv)
    if args.log_level:
        from watcher import logs

        logs.LEVEL_OVERRIDE = args.log_level
    if getattr(args, "standalone", None) is not None:
        code: int = args.standalone(args)  # `config …`: reads no configuration, or a named file
        return code
    # Imported here, not at the top: entry() decides about the garbage collector before pydantic loads.
    from watcher.config import load_settings
    from watcher.errors import ConfigError

    try:
        settings = load_settings(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    try:
        result: int = args.handler(settings, args)
    except KeyboardInterrupt:
        return 130
    return result


def entry() -> NoReturn:
    """The console script. A one-shot command may hold a large parsed state; the interpreter's teardown
    would free every object one by one (0.1 s for 53,000 tasks), so flush the output and leave at once.
    ``run`` keeps the normal exit."""
    argv = sys.argv[1:]
    if argv[:1] == ["run"]:
        sys.exit(main(argv))
    # A short-lived command allocates a lot (imports, a parsed state) and frees nothing: the cyclic garbage
    # collector would only rescan it all, several times.
    gc.disable()
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pueue-watcher", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"pueue-watcher {__version__}")
    parser.add_argument(
        "--log-level", choices=("debug", "info", "warning", "error"), help="the least level logged"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    config = argparse.ArgumentParser(add_help=False)
    config.add_argument(
        "-c", "--config", metavar="FILE",
        help="configuration file (default: $PUEUE_WATCHER_CONFIG, ./config.toml, "
        "~/.config/pueue-watcher/config.toml, /etc/pueue-watcher/config.toml)",
    )  # fmt: skip
    sharded = argparse.ArgumentParser(add_help=False)
    sharded.add_argument(
        "--shard", metavar="I/N", help="only the hosts of shard I of N (overrides watcher.shard)"
    )

    run = sub.add_parser("run", parents=[config, sharded], help="watch every host until stopped")
    run.set_defaults(handler=_run)

    status = sub.add_parser(
        "status", parents=[config, sharded], help="show every host's queue once (read-only)"
    )
    status.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
    status.add_argument("--json", action="store_true", help="machine-readable output")
    status.set_defaults(handler=_status)

    once = sub.add_parser(
        "once", parents=[config, sharded], help="one cycle with every side effect, then exit"
    )
    once.add_argument("--host", action="append", metavar="NAME", help="only this host (repeatable)")
    once.add_argument("--json", action="store_true", help="print the events this cycle produced")
    once.set_defaults(handler=_once)

    check = sub.add_parser("check", parents=[config], help="run the checks of a host's group now")
    check.add_argument("--host", required=True, metavar="NAME")
    check.add_argument("--group", required=True, metavar="NAME")
    check.add_argument("--json", action="store_true", help="one object per check")
    check.set_defaults(handler=_check)

    health = sub.add_parser(
        "health", parents=[config], help="check configuration, hosts, ClickHouse, metrics port"
    )
    health.set_defaults(handler=_health)

    config_cmd = sub.add_parser("config", help="init, validate, docs or schema of the configuration")
    config_sub = config_cmd.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    validate = config_sub.add_parser("validate", help="check a configuration file (exit 2 when invalid)")
    validate.add_argument("file", nargs="?", help="default: the file pueue-watcher would read")
    # -c FILE as every other command takes it (a separate destination: argparse would let the absent
    # positional's default overwrite it).
    validate.add_argument("-c", "--config", dest="config_file", metavar="FILE", help="the same as FILE")
    validate.set_defaults(standalone=_config_validate)
    schema = config_sub.add_parser("schema", help="the JSON Schema of the configuration")
    schema.set_defaults(standalone=_config_schema)
    docs = config_sub.add_parser("docs", help="the configuration reference (docs/configuration.md)")
    docs.set_defaults(standalone=_config_docs)
    init = config_sub.add_parser("init", help="write a first, commented configuration")
    init.add_argument("file", nargs="?", help="default: ~/.config/pueue-watcher/config.toml")
    init.add_argument(
        "--from-ssh-config", action="store_true", help="one host per Host alias of ~/.ssh/config"
    )
    init.add_argument("--force", action="store_true", help="replace an existing file")
    init.set_defaults(standalone=_config_init)
    kit = sub.add_parser("kit", help="write the systemd units, Grafana dashboard and Prometheus files")
    kit.add_argument("directory", help="where to write them")
    kit.add_argument("--force", action="store_true", help="replace existing files")
    kit.set_defaults(standalone=_kit)

    history = sub.add_parser("history", parents=[config], help="list past phases")
    history.add_argument("--host", metavar="NAME")
    history.add_argument("--group", metavar="NAME")
    history.add_argument("--json", action="store_true", help="machine-readable output")
    history.set_defaults(handler=_history)
    return parser


def _chosen_hosts(
    settings: Settings, names: list[str] | None, shard: str | None = None
) -> list[HostConfig] | None:
    """The configured hosts named on the command line (all without names) of this watcher's shard; None and
    a message if a name or the shard is wrong."""
    from watcher.config import watched_hosts

    try:
        hosts = watched_hosts(settings, shard)
    except ValueError as exc:
        print(f"config error: --shard: {exc}", file=sys.stderr)
        return None
    if not names:
        return hosts
    unknown = sorted(set(names) - {h.name for h in settings.hosts})
    if unknown:
        print(
            f"config error: no host named {', '.join(map(repr, unknown))} in the configuration",
            file=sys.stderr,
        )
        return None
    return [h for h in hosts if h.name in names]


def _status(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import json
    from datetime import UTC, datetime

    from watcher.fleet import Fleet
    from watcher.render import WaitingLine, host_block, status_document

    # Nothing on this path logs through structlog (stdout is the JSON document); asyncssh's warnings go to
    # stderr through the standard library.
    hosts = _chosen_hosts(settings, args.host, args.shard)
    if hosts is None:
        return EXIT_CONFIG
    results: list[PollResult] = []  # as they come in: what Ctrl-C leaves is still shown
    table = not args.json
    progress = WaitingLine([h.name for h in hosts], sys.stderr, enabled=table and sys.stderr.isatty())

    async def poll_all() -> None:
        fleet = Fleet(settings, hosts)
        try:
            async for result in fleet.poll_each():
                results.append(result)
                progress.clear()
                if table:  # each host as it answers; a hanging one holds up only itself
                    separator = "\n" if len(results) > 1 else ""
                    sys.stdout.write(separator + host_block(result, datetime.now(UTC)) + "\n")
                    sys.stdout.flush()
                progress.waiting_for(result.host)
        finally:
            progress.clear()
            await fleet.close()

    interrupted = False
    try:
        asyncio.run(poll_all())
    except KeyboardInterrupt:
        interrupted = True
    order = {h.name: i for i, h in enumerate(hosts)}
    results.sort(key=lambda r: order[r.host])
    if args.json:
        sys.stdout.write(json.dumps(status_document(results, datetime.now(UTC))) + "\n")
    if interrupted:
        missing = [h.name for h in hosts if h.name not in {r.host for r in results}]
        print(f"interrupted: no answer yet from {', '.join(missing)}", file=sys.stderr)
        return 130
    return EXIT_OK if all(r.ok for r in results) else EXIT_HOST_FAILED


def _run(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from watcher import logs
    from watcher.daemon import run_daemon

    logs.configure(sys.stdout)
    hosts = _chosen_hosts(settings, None, args.shard)
    if hosts is None:
        return EXIT_CONFIG
    from watcher.config import find_config

    source = str(find_config(args.config).resolve())
    return asyncio.run(run_daemon(settings, hosts, args.shard, config_path=source))


def _once(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import json

    from watcher import logs
    from watcher.daemon import run_once

    hosts = _chosen_hosts(settings, args.host, args.shard)
    if hosts is None:
        return EXIT_CONFIG
    # With --json, stdout is the list of events; the log goes to stderr.
    logs.configure(sys.stderr if args.json else sys.stdout)
    code, outcomes = asyncio.run(run_once(settings, hosts, args.shard))
    if args.json and code != EXIT_CONFIG:  # a refused store ran nothing: an empty list would say "no events"
        events = [event.to_dict() for outcome in outcomes for event in outcome.events]
        sys.stdout.write(json.dumps(events) + "\n")
    return code


def _history(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio
    import json

    from watcher import logs
    from watcher.history import history_document, history_text, load_history

    # stdout is the document; the store's warnings (a state file narrowed to 0600) are the daemon's to report.
    # Exit status: 0, 1 when there is no store at state_path (none is created), 2 when it cannot be used.
    logs.configure(sys.stderr, level="error")
    code, history = asyncio.run(load_history(settings, host=args.host, group=args.group))
    if history is None:
        return code
    if args.json:
        sys.stdout.write(json.dumps(history_document(history.entries)) + "\n")
    else:
        sys.stdout.write(history_text(history, host=args.host, group=args.group))
    return EXIT_OK


def _check(settings: Settings, args: argparse.Namespace) -> int:
    """Exit status: the worst result (0 ok, 1 warn, 2 fail, 3 error)."""
    import asyncio
    import json

    from watcher import logs
    from watcher.checking import check_now

    if _chosen_hosts(settings, [args.host]) is None:
        return EXIT_CONFIG
    logs.configure(sys.stderr, level="warning")
    results = asyncio.run(check_now(settings, args.host, args.group))
    if args.json:
        sys.stdout.write(json.dumps([r.to_dict() for r in results]) + "\n")
    elif not results:
        sys.stdout.write(f"no check matches host {args.host!r} and group {args.group!r}\n")
    for result in results if not args.json else ():
        detail = (
            result.error
            or f"{result.violations} violations (fail above {result.threshold.get('fail_above')})"
        )
        sys.stdout.write(f"{result.status.value.upper():5}  {result.name}  {detail}\n")
    return max((r.status.severity for r in results), default=0)


def _health(settings: Settings, args: argparse.Namespace) -> int:
    import asyncio

    from watcher import logs
    from watcher.health import run_health

    logs.configure(sys.stderr, level="error")
    return asyncio.run(run_health(settings, sys.stdout))


def _config_validate(args: argparse.Namespace) -> int:
    from watcher.config import find_config, load_settings
    from watcher.errors import ConfigError
    from watcher.health import counts
    from watcher.no_hosts import no_hosts
    from watcher.preflight import problems

    if args.file and args.config_file and args.file != args.config_file:
        print(f"error: two files named: {args.config_file} (-c) and {args.file}", file=sys.stderr)
        return EXIT_CONFIG
    path = find_config(args.file or args.config_file)
    try:
        settings = load_settings(path)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"config error: {exc.source}: {problem}", file=sys.stderr)
        return EXIT_CONFIG
    # A file the configuration names but this machine lacks makes it as unusable as a wrong key.
    missing = problems(settings.hosts)
    for each in missing:
        print(f"config error: {path}: host {each.host}: {each.message}", file=sys.stderr)
    if missing:
        return EXIT_CONFIG
    if (reason := no_hosts(settings)) is not None:
        print(f"warning: {path}: {reason}", file=sys.stderr)
    print(f"ok: {path}: {counts(settings)}")
    return EXIT_OK


def _config_schema(args: argparse.Namespace) -> int:
    import json

    from watcher.config import Settings

    sys.stdout.write(json.dumps(Settings.model_json_schema(), indent=2) + "\n")
    return EXIT_OK


def _config_init(args: argparse.Namespace) -> int:
    from pathlib import Path

    from watcher.config_init import default_path, ssh_aliases, template

    path = Path(args.file).expanduser() if args.file else default_path()
    if path.exists() and not args.force:
        print(f"error: {path} exists; pass --force to replace it", file=sys.stderr)
        return EXIT_CONFIG
    aliases = ssh_aliases(Path.home() / ".ssh" / "config") if args.from_ssh_config else []
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(template(aliases))
    what = f"{len(aliases)} hosts from ~/.ssh/config" if aliases else "the local pueue"
    print(f"wrote {path} ({what}); next: pueue-watcher config validate {path}, then pueue-watcher status")
    return EXIT_OK


def _kit(args: argparse.Namespace) -> int:
    from pathlib import Path

    from watcher.deploy_kit import write_kit

    directory = Path(args.directory).expanduser()
    written = write_kit(directory, force=args.force)
    for path in written:
        print(f"wrote {path}")
    if not written:
        print(f"nothing written: every file is in {directory} already (--force replaces them)")
    return EXIT_OK


def _config_docs(args: argparse.Namespace) -> int:
    from watcher.config_docs import reference

    sys.stdout.write(reference())
    return EXIT_OK
