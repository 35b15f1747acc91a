"""Backoff schedule and the shared GCRA limiter."""

from __future__ import annotations

import fakeredis

from dispatcher import keys
from dispatcher.delivery import backoff_delay
from dispatcher.ratelimit import Dimension, SharedRateLimiter


def test_backoff_is_full_jitter_under_an_exponential_cap() -> None:
    for attempt in range(1, 12):
        ceiling = min(300.0, 1.0 * 2 ** (attempt - 1))
        delays = [backoff_delay(attempt, base=1.0, cap=300.0) for _ in range(200)]
        assert all(0 <= d <= ceiling for d in delays)
        assert max(delays) > ceiling / 2  # jitter spreads over the whole range


def test_backoff_never_undercuts_retry_after() -> None:
    assert all(backoff_delay(1, base=1.0, cap=300.0, retry_after=5.0) >= 5.0 for _ in range(100))


def test_limiter_admits_at_the_configured_rate_and_reports_the_wait() -> None:
    limiter = SharedRateLimiter(fakeredis.FakeRedis(), [Dimension("calls", 10, 1.0)])
    assert limiter.try_acquire({"calls": 1}) == 0
    wait = limiter.try_acquire({"calls": 1})
    assert 0.05 < wait <= 0.1


def test_limiter_checks_every_dimension_and_commits_none_on_refusal() -> None:
    client = fakeredis.FakeRedis()
    limiter = SharedRateLimiter(
        client, [Dimension("a", 1000, 1.0, burst=10), Dimension("b", 1, 60.0)]
    )
    assert limiter.try_acquire({"a": 1, "b": 1}) == 0
    before = client.get(keys.rate_limit("a"))
    assert limiter.try_acquire({"a": 1, "b": 1}) > 50
    assert client.get(keys.rate_limit("a")) == before
    assert limiter.try_acquire({"a": 1}) == 0  # b has no cost here


def test_penalty_holds_back_every_caller() -> None:
    limiter = SharedRateLimiter(fakeredis.FakeRedis(), [Dimension("calls", 1000, 1.0)])
    limiter.penalize(2.0)
    assert 1.9 < limiter.try_acquire({"calls": 1}) <= 2.0
