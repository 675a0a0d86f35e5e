"""Launcher: `python -I -S .../pueue_sim/__main__.py FLAVOR ROLE VERSION [lc-set|lc-unset] [ARGS...]`.

FLAVOR is `v3` or `v4`, ROLE `client` (`pueue`) or `daemon` (`pueued`). Run by path, the package
is loaded from this directory without touching `sys.path`, so neither the caller's working
directory nor its PYTHONPATH matters; `python -m tests.pueue_sim ...` works as well.
"""

import importlib.util
import os
import sys
from pathlib import Path


def _load_package():
    if __package__:
        return sys.modules[__package__]
    directory = Path(__file__).resolve().parent
    spec = importlib.util.spec_from_file_location(
        "pueue_sim", directory / "__init__.py", submodule_search_locations=[str(directory)]
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules["pueue_sim"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    package = _load_package()
    if len(argv) < 3 or argv[0] not in ("v3", "v4") or argv[1] not in ("client", "daemon"):
        sys.stderr.write("usage: __main__.py {v3|v4} {client|daemon} VERSION [lc-set|lc-unset] [ARGS...]\n")
        return 2
    flavor, role, version, rest = argv[0], argv[1], argv[2], argv[3:]
    if rest and rest[0] in ("lc-set", "lc-unset"):
        # Undo PEP 538 locale coercion: the environment must stay exactly the caller's.
        if rest[0] == "lc-unset":
            os.environ.pop("LC_CTYPE", None)
        rest = rest[1:]
    name = f"{package.__name__}.{'client' if role == 'client' else 'daemon'}"
    module = importlib.import_module(name)
    return module.run(flavor, version, rest)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
