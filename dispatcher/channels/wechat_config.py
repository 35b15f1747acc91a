"""How one WeChat Official Account app is configured for the WeChat channel.

A plain model, so the same block can come from the ``DISPATCHER_WECHAT_*``
settings (a global app) or from a client's own configuration (an app per
client). ``docs/channels.md`` documents every field and its default.
"""

from __future__ import annotations

from datetime import time
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

DEFAULT_BASE_URL = "https://api.weixin.qq.com"
DEFAULT_DAILY_QUOTAS = {"custom_send": 500_000, "template_send": 100_000, "media_upload": 100_000}
SUMMARY_PLACEHOLDER = "{text}"


class WindowFallback(BaseModel):
    """The template message sent instead of a customer-service message refused for the window.

    ``data`` maps each of the template's keys to a text in which ``{text}`` stands
    for a short summary of the refused message (its text, or its title).
    """

    model_config = ConfigDict(extra="forbid")

    template_id: str = Field(min_length=1)
    data: dict[str, str] = Field(min_length=1)
    url: str | None = None


class WeChatConfig(BaseModel):
    """One WeChat Official Account app and how dispatcher uses it."""

    model_config = ConfigDict(extra="forbid")

    appid: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_-]+$")
    secret: SecretStr
    base_url: str = DEFAULT_BASE_URL
    templates: dict[str, str] = Field(
        default_factory=dict, description="our templetId -> the account's WeChat template_id"
    )
    window_fallback: WindowFallback | None = None
    server_token: SecretStr | None = Field(
        default=None, description="the Token of the account's server configuration: signs pushes"
    )
    calls_per_second: float = Field(default=100.0, gt=0)
    daily_quotas: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_DAILY_QUOTAS))
    quota_resume_time: time = Field(
        default=time(0, 5), description="when sends paused by a daily quota resume, local time"
    )
    timezone: str = "Asia/Shanghai"
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("base_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @field_validator("templates")
    @classmethod
    def _template_ids(cls, value: dict[str, str]) -> dict[str, str]:
        for templet_id, template_id in value.items():
            if not templet_id.lstrip("-").isdigit() or not template_id:
                raise ValueError(
                    'must map integer templetIds to WeChat template ids: {"1001": "<template_id>"}'
                )
        return value

    @field_validator("daily_quotas")
    @classmethod
    def _known_quotas(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(DEFAULT_DAILY_QUOTAS)
        if unknown:
            raise ValueError(
                f"unknown quotas {sorted(unknown)}; known: {sorted(DEFAULT_DAILY_QUOTAS)}"
            )
        return {**DEFAULT_DAILY_QUOTAS, **value}

    @field_validator("timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}") from None
        return value
