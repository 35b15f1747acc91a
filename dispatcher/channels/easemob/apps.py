"""Easemob apps: which app sends a client's messages, and one app's own sending state.

Every app has its own token (:class:`~dispatcher.channels.tokens.TokenCache`, keyed by
org, app and client id), its own shared limiter (its own Redis keys) and its own
HTTP pools, so an app whose credentials are refused or whose provider answers 503
holds back no other app's messages. The app a message goes through is chosen at
submit (:func:`app_for`) and recorded with it: a configuration change moves no
message already accepted (docs/operations.md, "Priorities, weights and Easemob apps").
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import httpx
import redis
from pydantic import BaseModel, SecretStr

from dispatcher.channels.base import config_block
from dispatcher.channels.easemob.mapping import (
    CALLS,
    USER_MESSAGES,
    call_costs,
    classify,
    transport_error,
)
from dispatcher.channels.easemob_apps import DEFAULT_APP
from dispatcher.channels.http import PerThreadHttp, ProviderHttp, Reply, json_or_none
from dispatcher.channels.tokens import TokenCache
from dispatcher.errors import ConfigurationError, ProviderError
from dispatcher.ratelimit import Dimension, Prepay, SharedRateLimiter

if TYPE_CHECKING:
    from dispatcher.config import Settings

NAME = "easemob"
RATE_SAFETY = 0.97  # aim a little under the provider's limit: our clock is not theirs
SLOT_SLACK = 1.5
"""Limiter burst, in calls: half a slot of tolerance, so a caller that wakes a little late
for its slot does not push every later slot back (without it 100 calls/s ran at ~91/s);
at most one call in any second comes half a slot early."""
CONNECT_TIMEOUT = 5.0  # seconds to connect to Easemob, for every call


class EasemobConfig(BaseModel):
    """One Easemob app as the channel uses it: the ``DISPATCHER_EASEMOB_*`` block, or a
    ``DISPATCHER_EASEMOB_APPS`` entry completed with that block's values."""

    base_url: str
    org: str
    app: str
    client_id: str
    client_secret: SecretStr
    timeout: float
    max_body_bytes: int
    calls_per_second: int
    messages_per_minute: int
    recall_window: int


def easemob_config(settings: Settings) -> EasemobConfig:
    """The ``DISPATCHER_EASEMOB_*`` app (ConfigurationError naming what is missing)."""
    return config_block(settings, NAME, EasemobConfig)


def app_configs(settings: Settings) -> dict[str, EasemobConfig]:
    """Every configured app by name: :data:`DEFAULT_APP` when ``DISPATCHER_EASEMOB_*`` is
    complete, and each ``DISPATCHER_EASEMOB_APPS`` entry."""
    found: dict[str, EasemobConfig] = {}
    with contextlib.suppress(ConfigurationError):  # no DISPATCHER_EASEMOB_* app
        found[DEFAULT_APP] = easemob_config(settings)
    for name, entry in settings.easemob_apps.items():
        found[name] = EasemobConfig(
            base_url=entry.base_url or settings.easemob_base_url,
            org=entry.org,
            app=entry.app,
            client_id=entry.client_id,
            client_secret=entry.client_secret,
            timeout=entry.timeout or settings.easemob_timeout,
            max_body_bytes=settings.easemob_max_body_bytes,
            calls_per_second=entry.calls_per_second or settings.easemob_calls_per_second,
            messages_per_minute=entry.messages_per_minute or settings.easemob_messages_per_minute,
            recall_window=settings.easemob_recall_window,
        )
    return found


def app_for(settings: Settings, client: str | None) -> str:
    """The name of the app that sends ``client``'s messages (recorded at submit)."""
    entry = settings.clients.get(client) if client else None
    if entry is not None and entry.easemob_app is not None:
        return entry.easemob_app
    return DEFAULT_APP


class EasemobApp:
    """One app's token, limiter and HTTP pools, shared by the channel's threads."""

    def __init__(
        self,
        name: str,
        config: EasemobConfig,
        client: redis.Redis,
        *,
        lease_seconds: float,
        prepay_types: frozenset[int],
    ) -> None:
        self.name = name
        self.config = config
        self.lease_seconds = lease_seconds
        self.base = f"{config.base_url}/{config.org}/{config.app}"
        self.messages_url = f"{self.base}/messages?useMsgId=true"
        self.tokens = TokenCache(
            client,
            channel=NAME,
            account=(config.org, config.app, config.client_id),
            fetch=self.fetch_token,
            lock_seconds=config.timeout + CONNECT_TIMEOUT + 1,
        )
        # The default app keeps the limiter keys it had before there were several apps.
        scope = None if name == DEFAULT_APP else name
        self.limiter = SharedRateLimiter(
            client,
            [
                Dimension(CALLS, config.calls_per_second * RATE_SAFETY, 1.0, burst=SLOT_SLACK),
                Dimension(
                    USER_MESSAGES,
                    config.messages_per_minute * RATE_SAFETY,
                    60.0,
                    burst=SLOT_SLACK,
                ),
            ],
            scope=scope,
        )
        # Costs depend on the target type only, so the lease may charge them before the send.
        self.prepay = self.limiter.prepay(
            NAME,
            user_costs=call_costs("users"),
            other_costs=call_costs("chatgroups"),
            types=prepay_types,
            app=name,
            unrecorded=name == DEFAULT_APP,  # records from before there were several apps
        )
        timeout = httpx.Timeout(config.timeout, connect=CONNECT_TIMEOUT)
        common = {"Accept": "application/json", "User-Agent": "dispatcher"}
        self.http = ProviderHttp(timeout, common)
        self.token_http = PerThreadHttp(timeout, common)
        self.call_seconds = config.timeout + CONNECT_TIMEOUT
        """The longest one provider call may take (its lease must cover that)."""

    def close(self) -> None:
        self.http.close()
        self.token_http.close()

    def acquire(self, costs: dict[str, float]) -> None:
        """Wait for this app's rate slot (ProviderError when it is too far ahead)."""
        try:
            self.limiter.acquire(costs, max_wait=self.lease_seconds / 2)
        except TimeoutError as exc:
            raise ProviderError("rate_limited_locally", str(exc), retryable=True) from None

    def post_message(self, payload: bytes, token: str) -> Reply:
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {token}"}
        try:
            return self.http.post(self.messages_url, payload, headers)
        except httpx.HTTPError as exc:
            raise transport_error(exc) from None

    def fetch_token(self) -> tuple[str, int]:
        try:
            response = self.token_http.client.post(
                f"{self.base}/token",
                json={
                    "grant_type": "client_credentials",
                    "client_id": self.config.client_id,
                    "client_secret": self.config.client_secret.get_secret_value(),
                },
            )
        except httpx.HTTPError as exc:
            raise ProviderError(
                "token_unreachable",
                f"could not fetch the Easemob token of app {self.name!r} ({type(exc).__name__})",
                retryable=True,
            ) from None
        body = json_or_none(response)
        if response.status_code != 200 or not isinstance(body, dict) or "access_token" not in body:
            error = classify(response.status_code, body, response.headers)
            raise ProviderError(
                "token_refused",
                f"Easemob refused the token request of app {self.name!r}: {error.message}",
                retryable=error.retryable,
                retry_after=error.retry_after,
                status=response.status_code,
            )
        return str(body["access_token"]), int(body.get("expires_in") or 0)

    def rate_prepay(self) -> Prepay | None:
        """This app's :class:`Prepay` once this process holds its token (F11 in
        docs/reliability.md: a send that must first fetch one would arrive late)."""
        return self.prepay if self.tokens.is_warm() else None
