"""A provider's pause (an error with ``defers``) waits without using up attempts."""

from __future__ import annotations

from typing import Any

import fakeredis

from dispatcher import delivery, keys
from dispatcher.channels import Receipt
from dispatcher.channels.wechat_outcome import WeChatPaused
from dispatcher.config import Settings
from dispatcher.errors import ProviderError
from dispatcher.models import parse_message
from dispatcher.store import StatusStore
from tests.conftest import ref

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}


class Scripted:
    """A channel that raises the queued errors, then delivers."""

    name = "easemob"

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)

    def send(self, message_id: str, message: Any, **_: Any) -> Receipt:
        if self.errors:
            raise self.errors.pop(0)
        return Receipt("p-1")

    def rate_prepay(self) -> None:
        return None

    def close(self) -> None:
        pass


def paused(seconds: float) -> WeChatPaused:
    return WeChatPaused("wechat_45009", "quota", retryable=True, retry_after=seconds)


def pause_ends(store: StatusStore) -> None:
    """The retry's due time passes (moved back rather than waited for)."""
    store.redis.hset(keys.message(ref("m0p")), "dueAt", 0)
    store.redis.zadd(keys.shard_of(ref("m0p").member).schedule, {ref("m0p").member: 0})


def due_in(store: StatusStore) -> float:
    """Seconds until the message's schedule entry is due (Redis's clock)."""
    score = store.redis.zscore(keys.shard_of(ref("m0p").member).schedule, ref("m0p").member)
    assert score is not None, "a deferred message waits in the schedule"
    seconds, micros = store.redis.time()
    return (score - (seconds * 1000 + micros // 1000)) / 1000


def test_paused_sends_are_deferred_without_counting_attempts() -> None:
    settings = Settings(max_attempts=1, visibility_timeout=600)
    store = StatusStore(fakeredis.FakeRedis())
    store.submit.create(store.submit.prepare(ref("m0p"), parse_message(TEXT), channel="easemob"))
    channel = Scripted(paused(7200), paused(30))

    def attempt() -> delivery.Outcome:
        return delivery.attempt(
            ref("m0p"), settings=settings, store=store, channels={"easemob": channel},
            resolve_media=None,
        )  # fmt: skip

    first = attempt()
    assert first.state == "retrying" and first.retry_in == 7200, "the whole pause"
    assert 7199 < due_in(store) <= 7200, "it waits in the schedule, in no worker"
    record = store.read.get(ref("m0p"))
    assert record is not None and record.state == "retrying" and record.attempts == 0
    assert "deferred 7200s, attempt not counted" in (record.history[-1].detail or "")
    assert store.redis.ttl(keys.message(ref("m0p"))) > settings.status_ttl + 7000
    woken = attempt()  # a copy of the task, early
    assert (woken.state, woken.reason) == ("stood-down", "early"), "the pause has not ended"
    assert woken.retry_in is None, "nothing to publish: the schedule entry brings it back"
    assert store.read.get(ref("m0p")).attempts == 0  # type: ignore[union-attr]
    pause_ends(store)
    assert attempt().retry_in == 30, "a shorter pause is waited exactly"
    assert 29 < due_in(store) <= 30
    pause_ends(store)
    assert attempt().state == "delivered"
    record = store.read.get(ref("m0p"))
    assert record is not None and record.attempts == 1


def test_an_ordinary_retryable_error_still_counts() -> None:
    store = StatusStore(fakeredis.FakeRedis())
    store.submit.create(store.submit.prepare(ref("m0q"), parse_message(TEXT), channel="easemob"))
    channel = Scripted(ProviderError("busy", "503", retryable=True, retry_after=30))
    outcome = delivery.attempt(
        ref("m0q"), settings=Settings(max_attempts=1), store=store,
        channels={"easemob": channel}, resolve_media=None,
    )  # fmt: skip
    assert outcome.state == "dead"
