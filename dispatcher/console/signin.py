"""Who may sign in to the console: admin clients with their secret, or the console password.

Refusals say only "sign-in failed" and are counted per remote address in Redis;
past ``MAX_FAILURES`` within ``FAILURE_WINDOW`` seconds that address waits. No
secret or password is ever logged.
"""

from __future__ import annotations

import hmac
import logging
from dataclasses import dataclass

import redis

from dispatcher import keys
from dispatcher.config import Settings

log = logging.getLogger(__name__)

MAX_FAILURES = 10
FAILURE_WINDOW = 300
PASSWORD_USER = "console password"


@dataclass(frozen=True)
class Verdict:
    user: str | None
    """Who signed in, or None when refused."""
    throttled: bool = False


class SignIn:
    """Checks console credentials against ``DISPATCHER_CLIENTS`` and the console password."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self._admins = {
            name: config.secret.get_secret_value().encode()
            for name, config in settings.clients.items()
            if config.admin
        }
        password = settings.console_password
        self._password = password.get_secret_value().encode() if password else None

    @property
    def possible(self) -> bool:
        """Whether anything can sign in with a form (else only one-time links work)."""
        return bool(self._admins or self._password)

    def check(self, client: str, secret: str, remote: str) -> Verdict:
        failures = keys.console_login_failures(remote)
        if int(self.redis.get(failures) or 0) >= MAX_FAILURES:
            log.warning("console: sign-in from %s refused: too many failures", remote)
            return Verdict(None, throttled=True)
        user = self._match(client.strip(), secret.encode())
        if user is None:
            pipe = self.redis.pipeline(transaction=True)
            pipe.incr(failures)
            pipe.expire(failures, FAILURE_WINDOW)
            pipe.execute()
            log.warning("console: sign-in refused for %r from %s", client[:64], remote)
        return Verdict(user)

    def _match(self, client: str, secret: bytes) -> str | None:
        if not secret:
            return None
        if not client:
            if self._password is not None and hmac.compare_digest(secret, self._password):
                return PASSWORD_USER
            return None
        expected = self._admins.get(client)
        # Compare against something even for an unknown client: same work either way.
        if hmac.compare_digest(secret, expected or b"\0" * 32) and expected is not None:
            return f"client {client}"
        return None
