"""A request's time for Redis: one budget that all its Redis calls draw on.

Within :func:`redis_budget` (the API opens one per submit), every call on the
clients of :mod:`dispatcher.connections` ends by one deadline, set when the
request's first call starts: a wait for a pooled connection is cut short at it;
an asyncio call is abandoned there (redis-py closes its connection); a blocking
call gets only the time left as its socket timeouts, and no attempt or back-off
starts past it. Outside a budget (workers, producers) nothing changes. What the
ceiling is and what a caller sees: docs/operations.md, "Load bounds".
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, TypeVar

import redis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.retry import Retry

T = TypeVar("T")


class BudgetSpent(redis.TimeoutError):
    """A request's time for Redis (:func:`redis_budget`) ran out before Redis answered.

    If a command was under way, Redis may still carry it out: its effect is unknown.
    """


@dataclass
class RedisBudget:
    """The time one request may spend on Redis, shared by all its calls.

    The clock starts with the request's first Redis call: a wait for a connection is cut
    short by the pool wait budget or by the end of this one, whichever comes first; an
    asyncio call is abandoned (its connection closed) when the budget ends, a blocking one
    is given only the time left for each attempt and no attempt past the end.
    """

    seconds: float
    deadline: float | None = None
    """``time.monotonic()`` at which the budget ends; set by the first call."""

    def start(self) -> float:
        if self.deadline is None:
            self.deadline = time.monotonic() + self.seconds
        return self.deadline


_BUDGET: ContextVar[RedisBudget | None] = ContextVar("dispatcher_redis_budget", default=None)


def current_budget() -> RedisBudget | None:
    """The budget of the request under way here, if it has one."""
    return _BUDGET.get()


@contextmanager
def redis_budget(seconds: float) -> Iterator[RedisBudget]:
    """Within this block (and threads started from it with their context), Redis calls on
    the clients here share one budget of ``seconds``."""
    budget = RedisBudget(seconds)
    token = _BUDGET.set(budget)
    try:
        yield budget
    finally:
        _BUDGET.reset(token)


@contextmanager
def outside_budget() -> Iterator[None]:
    """Within this block, calls are not bounded by the request's budget: for those that
    undo what the request did after a failure, which must not be cut short by it."""
    token = _BUDGET.set(None)
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _spent(budget: RedisBudget) -> BudgetSpent:
    return BudgetSpent(f"the request's {budget.seconds:g}s for Redis ran out")


def time_left(budget: RedisBudget) -> float:
    """Seconds left (the clock starts now if it had not); :class:`BudgetSpent` if none."""
    remaining = budget.start() - time.monotonic()
    if remaining <= 0:
        raise _spent(budget)
    return remaining


@asynccontextmanager
async def within(budget: RedisBudget | None) -> AsyncIterator[None]:
    """Abandon the block when ``budget`` ends (no limit without one)."""
    if budget is None:
        yield
        return
    limit = asyncio.timeout(time_left(budget))
    try:
        async with limit:
            yield
    except TimeoutError:
        if limit.expired():
            raise _spent(budget) from None
        raise


class DeadlineRetry(Retry):
    """redis-py's retries within the request's :class:`RedisBudget`: each attempt gets the
    time left as its socket timeouts, and no attempt or back-off starts past the end."""

    connection: Any = None
    """The connection this copy belongs to (redis-py copies the retry into each)."""
    _usual: tuple[float | None, float | None] | None = None
    """Its socket and connect timeouts outside budgets, while a budgeted call is under way."""

    def call_with_retry(
        self,
        do: Callable[[], T],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        budget = current_budget()
        if budget is None or self.connection is None:
            return super().call_with_retry(do, fail, is_retryable, with_failure_count)
        outermost = self._usual is None
        if outermost:
            self._usual = (self.connection.socket_timeout, self.connection.socket_connect_timeout)
        usual_socket, usual_connect = self._usual or (None, None)
        try:
            self._backoff.reset()  # type: ignore[no-untyped-call]
            failures = 0
            while True:
                left = time_left(budget)
                self._limit(_shorter(usual_socket, left), _shorter(usual_connect, left))
                try:
                    return do()
                except self._supported_errors as error:
                    if isinstance(error, BudgetSpent) or (is_retryable and not is_retryable(error)):
                        raise
                    failures += 1
                    if with_failure_count:
                        fail(error, failures)
                    else:
                        fail(error)
                    pause = self._backoff.compute(failures)
                    if time.monotonic() + pause >= budget.start():
                        raise _spent(budget) from error
                    if failures > self._retries:
                        raise
                    time.sleep(pause)
        finally:
            if outermost:
                self._usual = None
                self._limit(usual_socket, usual_connect)

    def _limit(self, seconds: float | None, connect: float | None) -> None:
        """Socket timeouts for the connection, its socket and its reply parser (which keeps
        the one the connection had when it opened)."""
        connection = self.connection
        connection.socket_timeout = seconds
        connection.socket_connect_timeout = connect
        sock = getattr(connection, "_sock", None)
        if sock is not None:
            sock.settimeout(seconds)
        parser: Any = getattr(connection, "_parser", None)
        if hasattr(parser, "_socket_timeout"):  # hiredis
            parser._socket_timeout = seconds
        buffer: Any = getattr(parser, "_buffer", None)
        if hasattr(buffer, "socket_timeout"):  # the pure-Python parsers
            buffer.socket_timeout = seconds


def _shorter(usual: float | None, left: float) -> float:
    return left if usual is None else min(usual, left)


class AsyncDeadlineRetry(AsyncRetry):
    """redis-py's asyncio retries, abandoned when the request's :class:`RedisBudget` ends."""

    async def call_with_retry(
        self,
        do: Callable[[], Awaitable[T]],
        fail: Callable[..., Any],
        is_retryable: Callable[[Exception], bool] | None = None,
        with_failure_count: bool = False,
    ) -> T:
        async with within(current_budget()):
            return await super().call_with_retry(do, fail, is_retryable, with_failure_count)
