"""WeChat media ids of Qiniu objects, shared by every worker through Redis.

One rule (:func:`compute_once`): read Redis; when the value is missing, one
worker computes it under a short lock while the others wait for it. So one
Qiniu object is uploaded once per app, not once per worker. (The app's token is
a :class:`~dispatcher.channels.tokens.TokenCache`, the one shared-token kind.)
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import TypeVar

import redis

from dispatcher import keys
from dispatcher.channels.wechat_mapping import MediaNeed
from dispatcher.connections import text
from dispatcher.store.scripts import load

log = logging.getLogger(__name__)

T = TypeVar("T")

POLL_SECONDS = 0.05
MEDIA_LIFETIME = 3 * 86400
MEDIA_MARGIN = 3600
"""A cached media_id is dropped this long before WeChat forgets it, so a send that
read it just before still has an hour to use it."""


def delete_if_equal(client: redis.Redis, key: str, expected: str) -> bool:
    """Delete ``key`` only while it still holds ``expected`` (one script call)."""
    return bool(load("delete_if_equal")(client, {"target": key}, {"expected": expected}))


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


class MediaIdCache:
    """WeChat media ids of Qiniu objects, so one object is uploaded once per three days.

    An entry remembers the object's size: a key overwritten with other content
    (another size) is uploaded again.
    """

    def __init__(
        self,
        client: redis.Redis,
        appid: str,
        *,
        lock_seconds: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.appid = appid
        self.lock_seconds = lock_seconds
        self._clock = clock

    def get(self, need: MediaNeed) -> str | None:
        raw = self.redis.get(keys.wechat_media(self.appid, need.limit.media_type, need.key))
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

        lock = keys.wechat_media_lock(self.appid, need.limit.media_type, need.key)
        return compute_once(
            self.redis, lock, self.lock_seconds, lambda: self.get(need), upload_and_store
        )

    def put(self, need: MediaNeed, media_id: str, created_at: float) -> None:
        ttl = int(created_at + MEDIA_LIFETIME - MEDIA_MARGIN - self._clock())
        if ttl <= 0:
            return
        entry = json.dumps({"media_id": media_id, "size": need.size, "created_at": created_at})
        self.redis.set(
            keys.wechat_media(self.appid, need.limit.media_type, need.key), entry, ex=ttl
        )

    def drop(self, need: MediaNeed, media_id: str) -> None:
        """Forget ``media_id`` (WeChat said 40007) unless the entry already holds another."""
        key = keys.wechat_media(self.appid, need.limit.media_type, need.key)
        raw = self.redis.get(key)
        if raw is not None and self.get(need) == media_id:
            delete_if_equal(self.redis, key, text(raw))
