"""The configuration reference (``docs/configuration.md``), generated from the configuration's JSON Schema.

``pueue-watcher config docs > docs/configuration.md`` regenerates it; a test fails when the two drift.
"""

from __future__ import annotations

import json
from typing import Any

from watcher.config import Settings

# Section, the schema definition that describes it, and whether it is a table array ([[…]]).
SECTIONS: tuple[tuple[str, str, bool], ...] = (
    ("watcher", "WatcherSection", False),
    ("metrics", "MetricsSection", False),
    ("hygiene", "HygieneSection", False),
    ("probes", "ProbesConfig", False),
    ("hosts", "HostConfig", True),
    ("clickhouse", "ClickHouseConfig", True),
    ("checks", "NegativesConfig", True),
    ("checks", "DuplicatesConfig", True),
    ("checks", "NullCoverageConfig", True),
    ("checks", "SqlConfig", True),
    ("gates", "GateConfig", True),
    ("alerts", "ConsoleConfig", True),
    ("alerts", "WebhookConfig", True),
    ("alerts", "SlackConfig", True),
    ("alerts", "AlertmanagerConfig", True),
)

HEADER = """# Configuration reference

Generated from the configuration schema by `pueue-watcher config docs`; do not edit by hand.
`pueue-watcher config schema` prints the JSON Schema itself, and `pueue-watcher config validate [FILE]`
checks a file. Every key can be overridden from the environment as `PUEUE_WATCHER__SECTION__KEY`
(for example `PUEUE_WATCHER__WATCHER__POLL_INTERVAL=30s`), or by a systemd credential, a file of that name
in `$CREDENTIALS_DIRECTORY` (the variable wins over the credential, the credential over this file). Give
secrets one of these two ways, credentials first.
Durations are seconds or strings such as `"30s"`, `"5m"`, `"1h"`; sizes are bytes or `"50MB"`.
"""


def reference() -> str:
    schema = Settings.model_json_schema()
    definitions = schema["$defs"]
    parts = [HEADER]
    for section, name, array in SECTIONS:
        definition = definitions[name]
        kind = definition["properties"].get("kind", {})
        title = f"[[{section}]]" if array else f"[{section}]"
        if "const" in kind or "enum" in kind:
            title += f" kind = {json.dumps(kind.get('const') or kind['enum'][0])}"
        parts.append(f"\n## `{title}`\n")
        if definition.get("description"):
            parts.append("\n" + " ".join(definition["description"].split()) + "\n")
        parts.append("\n| key | type | default | description |\n| --- | --- | --- | --- |\n")
        required = set(definition.get("required", ()))
        for key, prop in definition["properties"].items():
            default = "required" if key in required else _default(prop.get("default"))
            description = " ".join(prop.get("description", "").split()).replace("|", "\\|")
            parts.append(f"| `{key}` | {_type(prop)} | {default} | {description} |\n")
    return "".join(parts)


def _type(prop: dict[str, Any]) -> str:
    if "anyOf" in prop:
        return " or ".join(_type(p) for p in prop["anyOf"])
    if "enum" in prop:
        return " \\| ".join(f"`{json.dumps(v)}`" for v in prop["enum"])
    if "const" in prop:
        return f"`{json.dumps(prop['const'])}`"
    if prop.get("type") == "array":
        return f"list of {_type(prop.get('items', {}))}"
    if prop.get("format") == "password":
        return "secret string"
    return str(prop.get("type", "any"))


def _default(value: Any) -> str:
    return "-" if value is None else f"`{json.dumps(value)}`"
