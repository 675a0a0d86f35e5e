"""watcher/errors.py is the one home of the watcher's exceptions, and its docstring lists each of them."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from watcher import errors

ROOT = Path(__file__).resolve().parents[1]


def project_errors() -> set[str]:
    return {
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value) and issubclass(value, BaseException) and value.__module__ == errors.__name__
    }


def test_every_error_is_a_watcher_error_listed_in_the_docstring() -> None:
    """Each exception class of errors.py derives from WatcherError and has its line in the module's tree."""
    tree = [line for line in (errors.__doc__ or "").splitlines() if "── " in line]
    listed = {line.split("── ")[1].split()[0] for line in tree}
    assert project_errors() == listed | {"WatcherError"}
    for name in project_errors():
        assert issubclass(getattr(errors, name), errors.WatcherError), name


def test_no_exception_class_is_defined_outside_errors_py() -> None:
    """watcher/ defines no exception class anywhere else: a class that derives from an error of errors.py, or
    from any ``…Error`` or ``…Exception``, belongs there."""
    known = project_errors()
    elsewhere = []
    for path in sorted((ROOT / "watcher").rglob("*.py")):
        if path == ROOT / "watcher" / "errors.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.ClassDef):
                continue
            bases = {
                b.id if isinstance(b, ast.Name) else b.attr
                for b in node.bases
                if isinstance(b, (ast.Name, ast.Attribute))
            }
            if bases & known or any(b.endswith(("Error", "Exception")) for b in bases):
                elsewhere.append(f"{path.relative_to(ROOT)}: {node.name}")
    assert elsewhere == []
