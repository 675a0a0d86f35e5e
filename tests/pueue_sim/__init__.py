"""A stdlib-only simulator of pueue 3.4 and 4.0 (`pueue` client and `pueued` daemon) for tests.

Modules:

* `timefmt`  - chrono's RFC 3339 timestamps, nanosecond precision, local time zone via `TZ`.
* `state`    - tasks and groups of both versions, strict (de)serialisation, atomic state files.
* `config`   - `pueue.yml` discovery and the paths derived from it (socket, pid file, secret).
* `errors`   - how a failing `pueue` prints (anyhow in 3.x, color-eyre in 4.x).
* `protocol` - the client/daemon socket connection (secret handshake, JSON lines).
* `daemon`, `handlers` - `pueued`: scheduler, task processes, request handlers.
* `client`   - `pueue`: argparse CLI with the subcommands the tests need.
* `generate` - writes large realistic state files directly.
* `scenario` - the API for tests: `install`, `write_config`, `SimHost`, `generate_state`, ...

Run as `python -I -S path/to/pueue_sim/__main__.py {v3|v4} {client|daemon} VERSION [lc-set|lc-unset]
[ARGS...]`; the
wrappers written by `scenario.install` do exactly that.
"""

FLAVORS = ("v3", "v4")
