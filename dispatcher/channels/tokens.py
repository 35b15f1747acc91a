"""A provider access token shared by every worker through Redis.

Fetched by one worker at a time (a lock in Redis), read by all, and dropped on
a 401 only while it is still the token that failed. A fetch that fails fails the
attempts that were waiting for it too, at once: an account whose token cannot be had
(credentials refused, provider down) does not hold worker threads in the lock's queue. Each process also keeps
the token in memory for a few seconds, so a warm send costs no Redis call for
it (docs/architecture.md, "Costs").
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.errors import ProviderError
from dispatcher.store.scripts import load

log = logging.getLogger(__name__)

MEMO_SECONDS = 5.0
"""How long a worker process reuses the token it last read from Redis without asking again
(never past the Redis copy's own expiry); a 401 drops it at once."""

Fetch = Callable[[], tuple[str, int]]
"""Asks the provider for a new token: (token, seconds it lives, 0 for ever)."""


class TokenCache:
    """One token per provider account for every worker."""

    def __init__(
        self,
        client: redis.Redis,
        *,
        channel: str,
        account: tuple[str, ...],
        fetch: Fetch,
        lock_seconds: float,
        keep_for: Callable[[int], int] | None = None,
    ) -> None:
        self.redis = client
        self.channel = channel
        self.key = keys.token(channel, *account)
        self.lock_key = keys.token_lock(channel, *account)
        self.failed_key = keys.token_failed(channel, *account)
        self._fetch = fetch
        # Seconds to keep a token that lives ``expires_in`` (the provider's renewal rules).
        self._keep_for = keep_for or cache_seconds
        self._delete_if_equal = load("delete_if_equal")
        self._memo: tuple[str, float] | None = None  # (token, monotonic time to re-read Redis)
        self._revoked: str | None = None
        # The lock outlives one fetch and no more: a worker killed mid-fetch holds every
        # other worker back only that long.
        self.lock_seconds = lock_seconds

    def _fetch_or_tell(self) -> tuple[str, int]:
        """Fetch; a failure is also told to the threads waiting for this fetch."""
        try:
            return self._fetch()
        except ProviderError as exc:
            error = {
                "code": exc.code,
                "message": exc.message,
                "retryable": exc.retryable,
                "retry_after": exc.retry_after,
                "status": exc.status,
            }
            pipe = self.redis.pipeline(transaction=False)
            pipe.hincrby(self.failed_key, "count", 1)
            pipe.hset(self.failed_key, "error", json.dumps(error))
            pipe.expire(self.failed_key, FAILURE_MEMORY_SECONDS)
            pipe.execute()
            raise

    def get(self) -> str:
        # Redis stays the source of truth; this process only saves the round trip
        # for a few seconds (one GET per delivery was a quarter of its Redis calls).
        memo = self._memo
        if memo is not None and time.monotonic() < memo[1]:
            return memo[0]
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.pttl(self.key)
        cached, pttl = pipe.execute()
        if cached is not None:
            token = text(cached)
            self._remember(token, pttl)
            return token
        return self._refresh()

    def is_warm(self) -> bool:
        """True when :meth:`get` answers from this process's memory, without waiting."""
        memo = self._memo
        return memo is not None and time.monotonic() < memo[1]

    def invalidate(self, token: str) -> None:
        """Drop ``token`` unless another worker already replaced it."""
        self._revoked = token  # a thread that read it just before must not memo it again
        memo = self._memo
        if memo is not None and memo[0] == token:
            self._memo = None
        self._delete(self.key, token)

    def _delete(self, key: str, expected: str) -> None:
        self._delete_if_equal(self.redis, {"target": key}, {"expected": expected})

    def _remember(self, token: str, pttl_ms: int | None) -> None:
        if token == self._revoked:
            return
        lifetime = MEMO_SECONDS
        if pttl_ms is not None and pttl_ms >= 0:
            lifetime = min(lifetime, pttl_ms / 1000)
        self._memo = (token, time.monotonic() + lifetime)

    def _refresh(self) -> str:
        lock = uuid.uuid4().hex
        deadline = time.monotonic() + self.lock_seconds + 2
        seen = self.redis.hget(self.failed_key, "count")
        while time.monotonic() < deadline:
            if self.redis.set(self.lock_key, lock, nx=True, px=int(self.lock_seconds * 1000)):
                try:
                    cached = self.redis.get(self.key)
                    if cached is not None:
                        return text(cached)
                    token, expires_in = self._fetch_or_tell()
                    keep = self._keep_for(expires_in)
                    self.redis.set(self.key, token, ex=keep)
                    log.info("%s token fetched (expires_in=%s)", self.channel, expires_in)
                    self._remember(token, keep * 1000)
                    return token
                finally:
                    self._delete(self.lock_key, lock)
            time.sleep(0.05)  # another worker is fetching: wait for its token
            pipe = self.redis.pipeline(transaction=False)
            pipe.get(self.key)
            pipe.hmget(self.failed_key, ["count", "error"])
            cached, (count, error) = pipe.execute()
            if cached is not None:
                return text(cached)
            if count is not None and count != seen and error is not None:
                # The fetch this thread waited for failed: so does this attempt, at once,
                # rather than queue for the next fetch (a failing account must not hold
                # every worker thread waiting for its lock).
                raise _error_from(text(error))
        raise ProviderError(
            "token_unavailable",
            f"timed out waiting for the {self.channel} token refresh",
            retryable=True,
        )


FAILURE_MEMORY_SECONDS = 60
"""How long the last failed fetch is told to the threads that were waiting for it."""


def _error_from(stored: str) -> ProviderError:
    fields = json.loads(stored)
    return ProviderError(
        str(fields["code"]),
        str(fields["message"]),
        retryable=bool(fields["retryable"]),
        retry_after=fields.get("retry_after"),
        status=fields.get("status"),
    )


def cache_seconds(expires_in: int) -> int:
    """Refresh well before expiry; ``0`` means a token that never expires."""
    if expires_in <= 0:
        return 86400
    return max(1, min(expires_in - 60, int(expires_in * 0.9)))
