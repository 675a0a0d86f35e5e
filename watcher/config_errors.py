"""Configuration problems as people read them: one line per key, with where the value came from and the fix.

pydantic's own text is written for the code, not for whoever edits a TOML file: a typo is "Extra inputs are
not permitted", and a value that matches no branch of a union is reported once per branch, with the
validator's internals in the path (``watcher.fast_interval.function-before[parse_duration(), float]``). Here:

- an unknown key says so and suggests the nearest known key of that section ("did you mean poll_interval?");
- a key's problems are one line, with no internals in its path;
- a value that came from the environment (or a systemd credential) says which variable, so that a bad
  override is not blamed on the file;
- a ``PUEUE_WATCHER__`` variable whose section does not exist is a problem, not silently ignored.

Values are never echoed: they may be secrets.
"""

from __future__ import annotations

import difflib
import os
import types
from collections.abc import Iterable, Mapping, Sequence
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel

PREFIX = "PUEUE_WATCHER__"


def problems(errors: Iterable[Mapping[str, Any]], root: type[BaseModel]) -> list[str]:
    """One line per key, in the order pydantic found them."""
    lines: dict[str, list[str]] = {}
    for error in errors:
        loc = tuple(error.get("loc", ()))
        where, models = _where(loc, root)
        message = _message(error, loc, models)
        lines.setdefault(where, [])
        if message not in lines[where]:
            lines[where].append(message)
    return [f"{where}: {_either(messages)}{_origin(where)}" for where, messages in lines.items()]


def _either(messages: list[str]) -> str:
    """A value that fits no branch of a union: "a duration must be positive or 0"."""
    rest = [m.removeprefix("expected ") for m in messages[1:]]
    return " or ".join([messages[0], *rest])


def unknown_variables(root: type[BaseModel], environ: Mapping[str, str] | None = None) -> list[str]:
    """``PUEUE_WATCHER__SECTION…`` variables whose section the configuration does not have."""
    found = []
    for name in sorted(os.environ if environ is None else environ):
        if not name.upper().startswith(PREFIX):
            continue
        section = name[len(PREFIX) :].split("__", 1)[0].lower()
        if section not in root.model_fields:
            hint = _suggest(section, root.model_fields)
            found.append(f"{name} (environment): no section {section!r}{hint}")
    return found


def _where(loc: Sequence[Any], root: type[BaseModel]) -> tuple[str, list[type[BaseModel]]]:
    """The key's path as written in the file (``hosts[1].port``), and the models of its section."""
    models: list[type[BaseModel]] = [root]
    where = ""
    for i, part in enumerate(loc):
        if isinstance(part, int):
            where += f"[{part}]"
            continue
        fields = [m.model_fields[part] for m in models if part in m.model_fields]
        if not fields:
            if i == len(loc) - 1 and _plain(part):
                where += f".{part}" if where else part  # an unknown key: named as written
            continue  # a union branch or a validator's name: not a key
        where += f".{part}" if where else part
        if i < len(loc) - 1:
            models = [m for f in fields for m in models_in(f.annotation)] or models
    return where or "(top level)", models


def _message(error: Mapping[str, Any], loc: Sequence[Any], models: list[type[BaseModel]]) -> str:
    kind = error.get("type")
    if kind == "extra_forbidden" and loc and isinstance(loc[-1], str):
        known = {name for m in models for name in m.model_fields}
        return f"unknown key{_suggest(loc[-1], known)}"
    if kind == "literal_error":
        expected = (error.get("ctx") or {}).get("expected")
        return f"expected {expected}" if expected else "not one of the allowed values"
    if kind == "missing":
        return "required"
    return str(error.get("msg", "invalid")).removeprefix("Value error, ")


def _suggest(word: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(word.lower(), sorted(known), n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else ""


def _origin(where: str) -> str:
    """Which variable set the key, if one did (its name, never its value)."""
    top = where.split("[", 1)[0].split(".", 1)[0]
    parts = [p for p in where.replace("[", ".[").split(".") if p and not p.startswith("[")]
    exact = (PREFIX + "__".join(parts)).upper()
    section = (PREFIX + top).upper()
    for name in os.environ:
        if name.upper() in (exact, section):
            return f" (from {name} in the environment)"
    from watcher.credentials import credentials_directory

    directory = credentials_directory()
    if directory is not None:
        for path in directory.iterdir():
            if path.name.upper() in (exact, section):
                return f" (from the credential {path.name})"
    return ""


def models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models an annotation holds: through Optional, unions, lists and Annotated."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return models_in(get_args(annotation)[0])
    if origin in (list, Union, types.UnionType, tuple):
        return [m for arg in get_args(annotation) for m in models_in(arg)]
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return []


def _plain(part: str) -> bool:
    return part.replace("_", "").isalnum()
