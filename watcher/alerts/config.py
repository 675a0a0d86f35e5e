"""Configuration of alert sinks (``[[alerts]]``): one model per ``kind``, chosen by the ``kind`` field.

URLs that carry a token (a Slack incoming webhook, most webhook receivers) and HMAC secrets are
``SecretStr``, so that they never show in a repr, a log line or a validation error.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from watcher.units import Duration

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")

Severity = Literal["info", "warning", "critical"]


def _http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        # Deliberately no echo of the value: it may hold a token.
        raise ValueError("must be an http:// or https:// URL")
    return value


class _SinkConfig(BaseModel):
    # hide_input_in_errors: a refused URL is not echoed by str(ValidationError) of these models. (An
    # enclosing model renders its own errors: watcher/config.py reports `msg` only, never the input.)
    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    name: str = Field(description="Shown in logs and metrics instead of the URL.")
    events: list[str] = Field(
        default_factory=lambda: ["*"], description="Globs of the event names it receives ('check.*')."
    )
    min_severity: Severity = Field(default="info", description="Events below this severity are not sent.")
    timeout: Duration = Field(default=10.0, description="Upper bound of one delivery attempt.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not a sink name (letters, digits, . _ -; at most 64)")
        return value


class ConsoleConfig(_SinkConfig):
    kind: Literal["console"] = "console"


class WebhookConfig(_SinkConfig):
    kind: Literal["webhook"] = "webhook"
    url: SecretStr = Field(description="Receives a JSON POST per delivery; may hold a token.")
    secret: SecretStr | None = Field(
        default=None, description="Signs each request with HMAC-SHA256 when set."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value

    @field_validator("secret")
    @classmethod
    def _secret(cls, value: SecretStr | None) -> SecretStr | None:
        # An empty key signs every request with an HMAC that anyone can compute: leave `secret` out instead.
        if value is not None and not value.get_secret_value().strip():
            raise ValueError("is empty; remove it to send unsigned requests, or set a real secret")
        return value


class SlackConfig(_SinkConfig):
    kind: Literal["slack"] = "slack"
    url: SecretStr = Field(description="The incoming-webhook URL (it holds the token).")

    @field_validator("url")
    @classmethod
    def _url(cls, value: SecretStr) -> SecretStr:
        _http_url(value.get_secret_value())
        return value


class AlertmanagerConfig(_SinkConfig):
    kind: Literal["alertmanager"] = "alertmanager"
    url: str = Field(description="The Alertmanager's base URL, e.g. http://127.0.0.1:9093.")
    resolve_timeout: float = Field(
        default=0,
        ge=0,
        description="Seconds after which Alertmanager resolves a firing alert by itself. 0: it stays "
        "firing until its resolving event (with a 30-day backstop).",
    )
    generator_url: str | None = Field(default=None, description="A link sent as each alert's generatorURL.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _http_url(value).rstrip("/")


AlertConfig = Annotated[
    ConsoleConfig | WebhookConfig | SlackConfig | AlertmanagerConfig, Field(discriminator="kind")
]
