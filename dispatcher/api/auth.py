"""Who is calling: client, channel, sign and timestamp (SPEC §3.4).

Everything here is CPU only; the replay guard the caller must claim in Redis
is returned as a key (:class:`Caller.guard`) so it can share a round trip with
the rate limit (:mod:`dispatcher.api.admission`).
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass

from dispatcher import keys
from dispatcher.api.signing import (
    ALGORITHM_BY_LENGTH,
    SIGN_PARAM,
    TIMESTAMP_PARAM,
    canonical_string,
    sign_matches,
    unsignable,
)
from dispatcher.config import Settings
from dispatcher.errors import Unauthorized

log = logging.getLogger(__name__)

SIGN_PATTERN = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{32})$")
TIMESTAMP_PATTERN = re.compile(r"^-?[0-9]{1,12}$")
SINGLE_VALUED = ("client", "channel", SIGN_PARAM, TIMESTAMP_PARAM)


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller (or, with auth off, whoever says they are ``client``)."""

    client: str | None
    sees_everything: bool = False
    guard: str | None = None
    """Replay-guard key to claim before acting (None: no timestamp, nothing to guard)."""
    guard_ttl_ms: int = 0

    def can_see(self, owner: str | None) -> bool:
        return self.sees_everything or (owner is not None and owner == self.client)


@dataclass(frozen=True, slots=True)
class _Client:
    secret: bytes
    channels: frozenset[str]
    admin: bool


class Authenticator:
    """Checks a request's query and raw body against the configured clients."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        self.window = settings.signature_window
        self._clients = {
            name: _Client(
                config.secret.get_secret_value().encode(),
                frozenset(config.channels),
                config.admin,
            )
            for name, config in settings.clients.items()
        }

    def warn_about_configuration(self) -> None:
        """Say loudly at start-up what would otherwise surprise an operator later."""
        if not self.enabled:
            log.warning(
                "AUTH IS DISABLED (DISPATCHER_AUTH_ENABLED=false): the HTTP API accepts "
                "unsigned requests from anyone and every caller sees every message. "
                "Never run this configuration where untrusted clients can reach it."
            )
            return
        if not self._clients:
            log.warning(
                "no clients are configured (DISPATCHER_CLIENTS): every signed request "
                "will be refused with 401"
            )
        for name, client in self._clients.items():
            if not client.channels:
                log.warning(
                    "client %r has no allowed channels: all of its requests will be refused", name
                )

    def authenticate(
        self, query: Sequence[tuple[str, str]], body: bytes, now: float | None = None
    ) -> Caller:
        """The caller of a request, or :class:`Unauthorized` saying why not."""
        if not self.enabled:
            claimed = next((value for name, value in query if name == "client"), None)
            return Caller(client=claimed or None, sees_everything=True)
        params: dict[str, str] = {}
        for name, value in query:
            if name in params and name in SINGLE_VALUED:
                raise Unauthorized(f"query parameter {name!r} is given more than once")
            params[name] = value

        client_id = params.get("client")
        if not client_id:
            raise Unauthorized("query parameter 'client' is required")
        client = self._clients.get(client_id)
        if client is None:
            raise self._refuse(client_id, "unknown client")
        if params.get("channel") not in client.channels:
            raise self._refuse(client_id, "channel is not allowed for this client")
        sign = params.get(SIGN_PARAM)
        if not sign:
            raise self._refuse(client_id, "query parameter 'sign' is required")
        if not SIGN_PATTERN.match(sign):
            raise self._refuse(
                client_id,
                "sign must be lowercase hex: 64 characters (HMAC-SHA256) or 32 (HMAC-MD5)",
            )
        guard_ttl_ms = 0
        timestamp = params.get(TIMESTAMP_PARAM)
        if timestamp is not None:
            if not TIMESTAMP_PATTERN.match(timestamp):
                raise self._refuse(client_id, "timestamp must be unix seconds (an integer)")
            now = time.time() if now is None else now
            skew = int(timestamp) - now
            if abs(skew) > self.window:
                raise self._refuse(
                    client_id, f"timestamp is outside the ±{self.window} s window of server time"
                )
            # The sign stays acceptable until timestamp + window: guard it that long.
            guard_ttl_ms = math.ceil((skew + self.window) * 1000) + 1000
        for name, value in query:
            reason = unsignable(name, value)
            if reason:
                raise self._refuse(client_id, reason)
        if not sign_matches(client.secret, canonical_string(query, body), sign):
            raise self._refuse(
                client_id,
                f"sign does not match (HMAC-{ALGORITHM_BY_LENGTH[len(sign)].upper()} "
                "of the canonical query and body)",
                sign,
            )
        guard = keys.replay_guard(client_id, sign) if guard_ttl_ms else None
        return Caller(client_id, client.admin, guard, guard_ttl_ms)

    @staticmethod
    def _refuse(client: str, reason: str, sign: str | None = None) -> Unauthorized:
        # Never the secret, never a whole sign: the first 8 characters identify it in logs.
        hint = f" sign={sign[:8]}…" if sign else ""
        log.info("401 client=%r: %s%s", client[:64], reason, hint)
        return Unauthorized(reason)
