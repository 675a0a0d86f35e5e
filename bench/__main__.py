"""``python -m bench [SCENARIO ...]``: run the named scenarios (all by default) and print their figures."""

from __future__ import annotations

import argparse
import importlib

SCENARIOS = {
    "parse": "bench.parse",
    "status": "bench.status_large",
    "transfer": "bench.transfer",
    "latency": "bench.latency",
    "idle": "bench.idle",
    "checks": "bench.checks_10m",
    "fleet": "bench.fleet",
}


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("scenarios", nargs="*", choices=[*SCENARIOS, []], help="default: all")
    args = parser.parse_args()
    for name in args.scenarios or list(SCENARIOS):
        print(f"\n== {name} ==", flush=True)
        importlib.import_module(SCENARIOS[name]).run()


if __name__ == "__main__":
    main()
