"""``python -m bench [SCENARIO ...]``: run the named scenarios and print their figures.

With no name, the fleet suite runs: ``parse``, ``fleet`` (the parse, the 200-host cycles, the large host
and the 10-minute steady state) and ``real`` (real pueued 4.0.4 on the 53,000-task state: ``pueue add`` idle,
under the watcher and under the seed's loop; ``status --json`` against the seed's pipeline), in about 20
minutes on a 2-core machine. ``all`` runs every scenario.
"""

from __future__ import annotations

import argparse
import importlib
import time

SCENARIOS = {
    "parse": "bench.parse",
    "status": "bench.status_large",
    "transfer": "bench.transfer",
    "latency": "bench.latency",
    "idle": "bench.idle",
    "checks": "bench.checks_10m",
    "fleet": "bench.fleet",
    "real": "bench.real_pueue",
    "hygiene": "bench.hygiene_real",
    "changed-poll": "bench.changed_poll",
    "long-poll": "bench.long_poll",
}
SUITE = ["parse", "fleet", "real"]


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument(
        "scenarios", nargs="*", choices=[*SCENARIOS, "all", []], help=f"default: {' '.join(SUITE)}"
    )
    args = parser.parse_args()
    names = list(SCENARIOS) if "all" in args.scenarios else args.scenarios or SUITE
    started = time.monotonic()
    for name in names:
        print(f"\n== {name} ==", flush=True)
        importlib.import_module(SCENARIOS[name]).run()
    print(f"\n{' '.join(names)}: {(time.monotonic() - started) / 60:.1f} min")


if __name__ == "__main__":
    main()
