"""The WeChat token (the shared TokenCache with WeChat's renewal rule), media ids and quotas
shared through Redis (fakeredis, no servers)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from datetime import time as time_of_day

import fakeredis
import pytest

from dispatcher import keys
from dispatcher.channels.tokens import TokenCache
from dispatcher.channels.wechat_mapping import IMAGE, MediaNeed
from dispatcher.channels.wechat_media import MediaIdCache, compute_once, delete_if_equal
from dispatcher.channels.wechat_outcome import WeChatPaused
from dispatcher.channels.wechat_quota import QuotaBook
from dispatcher.channels.wechat_send import token_cache_seconds

APPID = "wx5a1d2b3c4d5e6f70"
TOKEN_KEY = keys.token("wechat", APPID)


def wechat_tokens(client: fakeredis.FakeRedis, fetch: Fetcher) -> TokenCache:
    """A worker's view of the app's token, as the WeChat sender builds it."""
    return TokenCache(
        client,
        channel="wechat",
        account=(APPID,),
        fetch=fetch,
        lock_seconds=5,
        keep_for=token_cache_seconds,
    )


@pytest.fixture()
def client() -> Iterator[fakeredis.FakeRedis]:
    server = fakeredis.FakeServer()
    yield fakeredis.FakeRedis(server=server)


class Fetcher:
    """A token endpoint that hands out t1, t2, ... and counts its calls."""

    def __init__(self, delay: float = 0.0) -> None:
        self.calls = 0
        self.delay = delay
        self._lock = threading.Lock()

    def __call__(self) -> tuple[str, int]:
        with self._lock:
            self.calls += 1
            number = self.calls
        time.sleep(self.delay)
        return f"t{number}", 7200


def test_delete_if_equal(client: fakeredis.FakeRedis) -> None:
    client.set("k", "a")
    assert delete_if_equal(client, "k", "b") is False and client.get("k") == b"a"
    assert delete_if_equal(client, "k", "a") is True and client.get("k") is None
    assert delete_if_equal(client, "k", "a") is False


def test_compute_once_runs_one_compute_for_many_waiters(client: fakeredis.FakeRedis) -> None:
    computed: list[int] = []
    results: list[str] = []

    def compute() -> str:
        computed.append(1)
        time.sleep(0.2)
        client.set("value", "v")
        return "v"

    def read() -> str | None:
        raw = client.get("value")
        return None if raw is None else raw.decode()

    threads = [
        threading.Thread(
            target=lambda: results.append(compute_once(client, "lock", 5, read, compute))
        )
        for _ in range(6)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert computed == [1] and results == ["v"] * 6
    assert client.get("lock") is None


def test_compute_once_gives_up_when_the_lock_holder_never_delivers(
    client: fakeredis.FakeRedis,
) -> None:
    client.set("lock", "someone-else", px=60_000)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        compute_once(client, "lock", 0.2, lambda: None, lambda: "never")
    assert time.monotonic() - started < 10


def test_token_is_fetched_once_and_cached_with_a_margin(client: fakeredis.FakeRedis) -> None:
    fetch = Fetcher()
    tokens = wechat_tokens(client, fetch)
    assert tokens.get() == "t1" and tokens.get() == "t1"
    assert fetch.calls == 1
    assert 6800 < client.ttl(TOKEN_KEY) <= 6840
    other_process = wechat_tokens(client, fetch)
    assert other_process.get() == "t1" and fetch.calls == 1


def test_token_cache_seconds() -> None:
    assert token_cache_seconds(7200) == 6840
    assert token_cache_seconds(300) == 60  # WeChat promises at least 300 s
    assert token_cache_seconds(10) == 5
    assert token_cache_seconds(1) == 1


def test_refused_token_is_dropped_only_while_it_is_the_stored_one(
    client: fakeredis.FakeRedis,
) -> None:
    fetch = Fetcher()
    first, late = (wechat_tokens(client, fetch) for _ in range(2))
    assert first.get() == "t1" and late.get() == "t1"
    first.invalidate("t1")
    assert first.get() == "t2"
    # The late worker saw t1 refused too, but t2 is already stored: it keeps t2.
    late.invalidate("t1")
    assert client.get(TOKEN_KEY) == b"t2"
    assert late.get() == "t2"
    assert fetch.calls == 2


def test_concurrent_refusals_cause_one_refresh(client: fakeredis.FakeRedis) -> None:
    fetch = Fetcher(delay=0.1)
    workers = [wechat_tokens(client, fetch) for _ in range(4)]
    assert {w.get() for w in workers} == {"t1"}
    barrier = threading.Barrier(4)
    seen: list[str] = []

    def refused(worker: TokenCache) -> None:
        barrier.wait()
        worker.invalidate("t1")
        seen.append(worker.get())

    threads = [threading.Thread(target=refused, args=(w,)) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert fetch.calls == 2 and seen == ["t2"] * 4


def test_a_revoked_token_read_just_before_is_not_memoised(client: fakeredis.FakeRedis) -> None:
    fetch = Fetcher()
    tokens = wechat_tokens(client, fetch)
    tokens.get()
    tokens.invalidate("t1")
    client.set(TOKEN_KEY, "t1")  # a slow reader writes nothing, but say Redis still said t1
    assert tokens.get() == "t1"  # Redis is the truth...
    assert tokens._memo is None  # ...but this process does not keep reusing it


def need(size: int | None = 1000, key: str = "photos/a.jpg") -> MediaNeed:
    return MediaNeed("media", IMAGE, key, "http://qiniu/photos/a.jpg", size)


def test_media_ids_are_cached_until_an_hour_before_expiry(client: fakeredis.FakeRedis) -> None:
    now = 1_700_000_000.0
    cache = MediaIdCache(client, APPID, lock_seconds=5, clock=lambda: now)
    uploads: list[int] = []

    def upload() -> tuple[str, float]:
        uploads.append(1)
        return "MID-1", now - 100

    assert cache.get_or_upload(need(), upload) == "MID-1"
    assert cache.get_or_upload(need(), upload) == "MID-1"
    assert uploads == [1]
    assert client.ttl(keys.wechat_media(APPID, "image", "photos/a.jpg")) == 3 * 86400 - 3600 - 100
    # Another object, or the same key with other content: uploaded again.
    assert cache.get(need(key="photos/b.jpg")) is None
    assert cache.get(need(size=2000)) is None
    assert cache.get(need(size=None)) == "MID-1"


def test_media_id_refused_by_wechat_is_dropped_once(client: fakeredis.FakeRedis) -> None:
    cache = MediaIdCache(client, APPID, lock_seconds=5)
    cache.put(need(), "MID-1", time.time())
    cache.drop(need(), "MID-OTHER")
    assert cache.get(need()) == "MID-1"
    cache.drop(need(), "MID-1")
    assert cache.get(need()) is None


def test_media_id_too_old_to_cache_is_not_cached(client: fakeredis.FakeRedis) -> None:
    cache = MediaIdCache(client, APPID, lock_seconds=5)
    cache.put(need(), "MID-OLD", time.time() - 3 * 86400 + 10)
    assert cache.get(need()) is None


def test_malformed_media_entry_is_ignored(client: fakeredis.FakeRedis) -> None:
    client.set(keys.wechat_media(APPID, "image", "photos/a.jpg"), "not json")
    assert MediaIdCache(client, APPID, lock_seconds=5).get(need()) is None


BEIJING_NOON = datetime(2024, 3, 1, 4, 0, tzinfo=UTC).timestamp()


def quota_book(client: fakeredis.FakeRedis, now: list[float], limit: int = 2) -> QuotaBook:
    return QuotaBook(
        client,
        APPID,
        quotas={"custom_send": limit},
        resume_time=time_of_day(0, 5),
        zone="Asia/Shanghai",
        clock=lambda: now[0],
    )


def test_own_count_pauses_before_wechat_refuses(client: fakeredis.FakeRedis) -> None:
    now = [BEIJING_NOON]
    book = quota_book(client, now)
    for _ in range(2):
        book.check("custom_send")
        book.count("custom_send")
    assert book.used("custom_send") == 2
    with pytest.raises(WeChatPaused) as raised:
        book.check("custom_send")
    assert raised.value.retry_after == pytest.approx(12 * 3600 + 300)
    book.check("template_send")  # other APIs have their own quotas
    now[0] += 12 * 3600 + 301  # 00:05:01 the next day in Beijing
    book.check("custom_send")
    assert book.used("custom_send") == 0


def test_pause_after_45009_and_early_resume(client: fakeredis.FakeRedis) -> None:
    now = [BEIJING_NOON]
    book = quota_book(client, now, limit=1000)
    resume_at = book.pause("custom_send")
    assert resume_at - now[0] == pytest.approx(12 * 3600 + 300)
    with pytest.raises(WeChatPaused):
        book.check("custom_send")
    book.resume("custom_send")
    book.check("custom_send")
