"""How Easemob apps are configured: the ``DISPATCHER_EASEMOB_*`` app and named ones.

A plain model, so ``dispatcher/config.py`` can hold the named apps
(``DISPATCHER_EASEMOB_APPS``) without importing the channel. A client's
``easemob_app`` names the app its messages go through; without one they go
through the ``DISPATCHER_EASEMOB_*`` app, named :data:`DEFAULT_APP`.
docs/operations.md ("Priorities, weights and Easemob apps") has an example.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_APP = "default"
"""The name of the ``DISPATCHER_EASEMOB_*`` app (in status records and metrics)."""

APP_NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
"""An app's name: part of Redis keys and of metric labels."""


class EasemobAppConfig(BaseModel):
    """One named Easemob app of ``DISPATCHER_EASEMOB_APPS``. Unset fields take the
    ``DISPATCHER_EASEMOB_*`` value (base URL, timeout, limits)."""

    model_config = ConfigDict(extra="forbid")

    org: str = Field(min_length=1)
    app: str = Field(min_length=1)
    client_id: str = Field(min_length=1)
    client_secret: SecretStr
    base_url: str | None = None
    calls_per_second: int | None = Field(default=None, ge=1)
    messages_per_minute: int | None = Field(default=None, ge=1)
    timeout: float | None = Field(default=None, gt=0)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return None if value is None else value.rstrip("/")


def check_app_names(apps: dict[str, EasemobAppConfig]) -> dict[str, EasemobAppConfig]:
    """``apps`` unless a name is malformed or takes :data:`DEFAULT_APP`."""
    for name in apps:
        if name == DEFAULT_APP:
            raise ValueError(
                f"{DEFAULT_APP!r} names the DISPATCHER_EASEMOB_* app; give this one another name"
            )
        if not APP_NAME_PATTERN.fullmatch(name):
            raise ValueError(f"app name {name[:40]!r} must be 1..32 of A-Z a-z 0-9 _ -")
    return apps
