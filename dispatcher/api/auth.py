"""Who is calling: client, sign, channel, timestamp and nonce (docs/security.md).

Everything here is CPU only; the nonce the caller must claim in Redis is returned
as a key (:class:`Caller.guard`) so it can share a round trip with the rate limit
(:mod:`dispatcher.api.admission`). Every refusal is the same
:class:`~dispatcher.errors.Unauthorized`: its ``reason`` goes to the log, never to
the caller, so clients and their channels cannot be enumerated; and an unknown
client's sign is checked too, against a throwaway secret, so both take as long.
"""

from __future__ import annotations

import logging
import math
import re
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from dispatcher import keys
from dispatcher.api.signing import (
    NONCE_PARAM,
    SIGN_PARAM,
    TIMESTAMP_PARAM,
    canonical_request,
    canonical_string,
    sign_matches,
    unsignable,
)
from dispatcher.config import Settings
from dispatcher.errors import Unauthorized
from dispatcher.ids import DEFAULT_NAMESPACE

log = logging.getLogger(__name__)

SIGN_PATTERN = re.compile(r"^(?:[0-9a-f]{64}|[0-9a-f]{32})$")
TIMESTAMP_PATTERN = re.compile(r"^-?[0-9]{1,12}$")
NONCE_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,128}$")
SINGLE_VALUED = ("client", "channel", "owner", SIGN_PARAM, TIMESTAMP_PARAM, NONCE_PARAM)


class Scheme(StrEnum):
    V2 = "v2"
    """Method, path, query and body; timestamp and nonce required."""
    V1 = "v1"
    """The seed's query and body; only for clients configured ``legacy_signing``."""


@dataclass(frozen=True, slots=True)
class Caller:
    """An authenticated caller (or, with auth off, whoever says they are ``client``)."""

    client: str | None
    sees_everything: bool = False
    """An admin client (or auth off): may address other clients' messages."""
    guard: str | None = None
    """Replay-guard key to claim before acting (None: a legacy request without timestamp)."""
    guard_ttl_ms: int = 0
    namespace: str = DEFAULT_NAMESPACE
    """Whose messages the caller's ids name: its client id; with auth off, where nobody
    is anybody, the in-process producers' default namespace."""


@dataclass(frozen=True, slots=True)
class _Client:
    secret: bytes
    channels: frozenset[str]
    admin: bool = False
    legacy: bool = False
    md5: bool = False


class Authenticator:
    """Checks a request's method, path, query and raw body against the configured clients."""

    def __init__(self, settings: Settings) -> None:
        self.enabled = settings.auth_enabled
        self.window = settings.signature_window
        self._clients = {
            name: _Client(
                config.secret.get_secret_value().encode(),
                frozenset(config.channels),
                config.admin,
                config.legacy_signing,
                config.md5,
            )
            for name, config in settings.clients.items()
        }
        self._stranger = _Client(secrets.token_bytes(32), frozenset())

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
        self,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        now: float | None = None,
    ) -> Caller:
        """The caller of a request, or :class:`Unauthorized` with the reason (for the log)."""
        if not self.enabled:
            claimed = next((value for name, value in query if name == "client"), None)
            return Caller(client=claimed or None, sees_everything=True)
        params = dict(query)
        if len(params) != len(query):
            names = [name for name, _ in query]
            for name in SINGLE_VALUED:
                if names.count(name) > 1:
                    raise Unauthorized(f"query parameter {name!r} is given more than once")
        for name, value in query:
            reason = unsignable(name, value)
            if reason:
                raise Unauthorized(reason)

        client_id = params.get("client", "")
        known = self._clients.get(client_id)
        client = known or self._stranger
        scheme, mismatch = self._signature(client, method, path, query, body, params)
        if known is None:
            raise Unauthorized(
                "unknown client" if client_id else "query parameter 'client' is missing"
            )
        if scheme is None:
            raise Unauthorized(mismatch)
        if params.get("channel") not in client.channels:
            raise Unauthorized("channel is not allowed for this client")

        timestamp = params.get(TIMESTAMP_PARAM)
        nonce = params.get(NONCE_PARAM)
        if scheme is Scheme.V2 and (timestamp is None or nonce is None):
            raise Unauthorized("signature v2 needs both timestamp and nonce")
        if nonce is not None and not NONCE_PATTERN.match(nonce):
            raise Unauthorized("nonce must be 1..128 characters of A-Z a-z 0-9 . _ ~ -")
        if timestamp is None:
            # Only a legacy client gets here: the seed's request has no timestamp to bound
            # a guard by, so it is not replay-protected (docs/security.md).
            return Caller(client_id, client.admin, namespace=client_id)
        if not TIMESTAMP_PATTERN.match(timestamp):
            raise Unauthorized("timestamp must be unix seconds (an integer)")
        skew = int(timestamp) - (time.time() if now is None else now)
        if abs(skew) > self.window:
            raise Unauthorized(f"timestamp is outside the ±{self.window} s window of server time")
        # The request stays acceptable until timestamp + window: guard its nonce that long.
        guard_ttl_ms = math.ceil((skew + self.window) * 1000) + 1000
        # A legacy request with a timestamp but no nonce is guarded by its sign.
        nonce_key = nonce if nonce is not None else f"sign:{params[SIGN_PARAM]}"
        guard = keys.replay_guard(client_id, nonce_key)
        return Caller(client_id, client.admin, guard, guard_ttl_ms, namespace=client_id)

    @staticmethod
    def _signature(
        client: _Client,
        method: str,
        path: str,
        query: Sequence[tuple[str, str]],
        body: bytes,
        params: dict[str, str],
    ) -> tuple[Scheme | None, str]:
        """The scheme ``sign`` matches, or None and why not."""
        sign = params.get(SIGN_PARAM, "")
        if not SIGN_PATTERN.match(sign):
            return None, "sign must be lowercase hex: 64 characters (HMAC-SHA256) or 32 (HMAC-MD5)"
        if len(sign) == 32 and not client.md5:
            return None, "HMAC-MD5 signs are not enabled for this client (md5)"
        if sign_matches(client.secret, canonical_request(method, path, query, body), sign):
            return Scheme.V2, ""
        if client.legacy and sign_matches(client.secret, canonical_string(query, body), sign):
            return Scheme.V1, ""
        return None, "sign does not match (signature v2: method, path, sorted query and body)"
