"""A token fetch that fails fails the attempts waiting for it at once, and only those: a
provider account whose token cannot be had must not hold every worker thread queued
for its lock (docs/operations.md, "Priorities, weights and Easemob apps")."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import fakeredis
import pytest

from dispatcher.channels.tokens import TokenCache
from dispatcher.errors import ProviderError


@pytest.fixture()
def client() -> Iterator[fakeredis.FakeRedis]:
    yield fakeredis.FakeRedis(server=fakeredis.FakeServer())


class RefusingFetch:
    """A token endpoint that answers after ``release`` is set: refused, or a token."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.refuse = True

    def __call__(self) -> tuple[str, int]:
        self.calls += 1
        self.release.wait(10)
        if self.refuse:
            raise ProviderError(
                "token_refused", "Easemob refused the token request", retryable=True, status=503
            )
        return "fresh", 3600


def cache(client: fakeredis.FakeRedis, fetch: RefusingFetch) -> TokenCache:
    return TokenCache(
        client, channel="easemob", account=("o", "a", "id"), fetch=fetch, lock_seconds=8
    )


def test_the_waiters_of_a_failed_fetch_fail_with_it_without_fetching(
    client: fakeredis.FakeRedis,
) -> None:
    fetch = RefusingFetch()
    errors: list[BaseException] = []
    finished: list[float] = []

    def attempt() -> None:
        try:
            cache(client, fetch).get()
        except ProviderError as exc:
            errors.append(exc)
        finished.append(time.monotonic())

    threads = [threading.Thread(target=attempt) for _ in range(6)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 5
    while fetch.calls == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.2)  # the others are queued for the lock by now
    released = time.monotonic()
    fetch.release.set()
    for thread in threads:
        thread.join(10)
    assert fetch.calls == 1
    assert len(errors) == 6
    assert {e.code for e in errors if isinstance(e, ProviderError)} == {"token_refused"}
    assert all(e.retryable for e in errors if isinstance(e, ProviderError))
    assert max(finished) - released < 2  # not the lock's 8 s each, one after another


def test_an_attempt_after_the_failure_fetches_again(client: fakeredis.FakeRedis) -> None:
    fetch = RefusingFetch()
    fetch.release.set()
    with pytest.raises(ProviderError):
        cache(client, fetch).get()
    fetch.refuse = False
    assert cache(client, fetch).get() == "fresh"
    assert fetch.calls == 2
