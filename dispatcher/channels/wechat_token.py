"""What every worker shares about one WeChat app, in Redis: its token and its media ids.

Both follow one rule (:func:`compute_once`): read Redis; when the value is
missing, one worker computes it under a short lock while the others wait for
it. So at most one token request (and one upload of a given Qiniu object) is in
flight per app, and a token WeChat refused is dropped only while it is still the
one stored: a worker that comes late never throws away its colleague's new token.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis

from dispatcher.channels.wechat_keys import WeChatKeys
from dispatcher.channels.wechat_mapping import MediaNeed

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_SECONDS = 0.05
TOKEN_MEMO_SECONDS = 5.0
"""How long a process reuses the token it last read from Redis without asking again."""
MEDIA_LIFETIME = 3 * 86400
MEDIA_MARGIN = 3600
"""A cached media_id is dropped this long before WeChat forgets it, so a send that
read it just before still has an hour to use it."""


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def delete_if_equal(client: redis.Redis, key: str, expected: str) -> bool:
    """Delete ``key`` only while it still holds ``expected`` (WATCH/MULTI, no script)."""
    deleted = False

    def attempt(pipe: redis.client.Pipeline) -> None:
        nonlocal deleted
        current = pipe.get(key)
        deleted = current is not None and _text(current) == expected
        if deleted:
            pipe.multi()
            pipe.delete(key)

    client.transaction(attempt, key)
    return deleted


def compute_once(
    client: redis.Redis,
    lock_key: str,
    lock_seconds: float,
    read: Callable[[], T | None],
    compute: Callable[[], T],
) -> T:
    """``read()``, or else ``compute()`` in one worker while the others wait for its result.

    The lock expires after ``lock_seconds`` (longer than one compute may take), so a
    worker killed mid-compute holds the others back that long at most. Raises
    TimeoutError when no value appeared after waiting about that long.
    """
    deadline = time.monotonic() + lock_seconds + 2
    while True:
        value = read()
        if value is not None:
            return value
        owner = uuid.uuid4().hex
        if client.set(lock_key, owner, nx=True, px=int(lock_seconds * 1000)):
            try:
                value = read()  # another worker may have finished just before we locked
                return value if value is not None else compute()
            finally:
                delete_if_equal(client, lock_key, owner)
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {lock_seconds + 2:.0f} s for another worker ({lock_key})")
        time.sleep(POLL_SECONDS)


def token_cache_seconds(expires_in: int) -> int:
    """How long to keep a token: until 6 minutes before expiry (WeChat renews stable tokens
    in their last 5), and never less than a minute nor more than half a short lifetime."""
    return max(expires_in - 360, min(60, expires_in // 2), 1)


class SharedToken:
    """The app's access token: fetched by one worker, read by all, dropped when refused."""

    def __init__(
        self,
        client: redis.Redis,
        keys: WeChatKeys,
        fetch: Callable[[], tuple[str, int]],
        *,
        lock_seconds: float,
    ) -> None:
        self.redis = client
        self.keys = keys
        self._fetch = fetch
        self.lock_seconds = lock_seconds
        self._memo: tuple[str, float] | None = None  # (token, monotonic time to re-read Redis)
        self._revoked: str | None = None

    def get(self) -> str:
        memo = self._memo
        if memo is not None and time.monotonic() < memo[1]:
            return memo[0]
        return compute_once(
            self.redis, self.keys.token_lock, self.lock_seconds, self._read, self._fetch_and_store
        )

    def invalidate(self, token: str) -> bool:
        """Drop ``token`` after WeChat refused it, unless another worker already replaced it.

        Returns True when this call dropped it (the caller's refresh will fetch anew).
        """
        self._revoked = token  # a thread that read it just before must not memo it again
        memo = self._memo
        if memo is not None and memo[0] == token:
            self._memo = None
        return delete_if_equal(self.redis, self.keys.token, token)

    def _read(self) -> str | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.token)
        pipe.pttl(self.keys.token)
        cached, pttl = pipe.execute()
        if cached is None:
            return None
        token = _text(cached)
        self._remember(token, pttl)
        return token

    def _fetch_and_store(self) -> str:
        token, expires_in = self._fetch()
        seconds = token_cache_seconds(expires_in)
        self.redis.set(self.keys.token, token, ex=seconds)
        log.info("wechat token fetched for app %s (expires_in=%s)", self.keys.appid, expires_in)
        self._remember(token, seconds * 1000)
        return token

    def _remember(self, token: str, pttl_ms: int | None) -> None:
        if token == self._revoked:
            return
        lifetime = TOKEN_MEMO_SECONDS
        if pttl_ms is not None and pttl_ms >= 0:
            lifetime = min(lifetime, pttl_ms / 1000)
        self._memo = (token, time.monotonic() + lifetime)


class MediaIdCache:
    """WeChat media ids of Qiniu objects, so one object is uploaded once per three days.

    An entry remembers the object's size: a key overwritten with other content
    (another size) is uploaded again.
    """

    def __init__(
        self,
        client: redis.Redis,
        keys: WeChatKeys,
        *,
        lock_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.keys = keys
        self.lock_seconds = lock_seconds
        self._clock = clock

    def get(self, need: MediaNeed) -> str | None:
        raw = self.redis.get(self.keys.media(need.limit.media_type, need.key))
        if raw is None:
            return None
        try:
            entry = json.loads(raw)
            media_id = str(entry["media_id"])
        except (ValueError, KeyError, TypeError):
            log.warning("ignoring a malformed WeChat media cache entry for %r", need.key)
            return None
        if need.size is not None and entry.get("size") not in (None, need.size):
            return None
        return media_id

    def get_or_upload(self, need: MediaNeed, upload: Callable[[], tuple[str, float]]) -> str:
        """The cached media_id, or ``upload()``'s (media_id, created_at), cached."""

        def upload_and_store() -> str:
            media_id, created_at = upload()
            self.put(need, media_id, created_at)
            return media_id

        lock = self.keys.media_lock(need.limit.media_type, need.key)
        return compute_once(
            self.redis, lock, self.lock_seconds, lambda: self.get(need), upload_and_store
        )

    def put(self, need: MediaNeed, media_id: str, created_at: float) -> None:
        ttl = int(created_at + MEDIA_LIFETIME - MEDIA_MARGIN - self._clock())
        if ttl <= 0:
            return
        entry = json.dumps({"media_id": media_id, "size": need.size, "created_at": created_at})
        self.redis.set(self.keys.media(need.limit.media_type, need.key), entry, ex=ttl)

    def drop(self, need: MediaNeed, media_id: str) -> None:
        """Forget ``media_id`` (WeChat said 40007) unless the entry already holds another."""
        key = self.keys.media(need.limit.media_type, need.key)
        raw = self.redis.get(key)
        if raw is not None and self.get(need) == media_id:
            delete_if_equal(self.redis, key, _text(raw))
