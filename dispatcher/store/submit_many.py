"""Submit stage, many messages at once: the create script of :mod:`.submit`, pipelined.

A batch is the calls :meth:`SubmitStore.prepare` builds, one per message, sent as one
non-transactional pipeline: one round trip for the whole batch (a second only when
Redis does not know the script yet). Each call keeps its own meaning: its own gate,
its own answer, its own operation id, so redis-py's re-send of the whole pipeline
after a lost reply answers every call as its first run did. Nothing here is atomic
across messages, by design: each message is recorded and queued, or not, on its own
(docs/api.md, "Batch submit").
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from dispatcher.connections import REDIS_ERRORS
from dispatcher.store.scripts import Value, load
from dispatcher.store.submit import CreateCall, CreateResult

CreateReply = CreateResult | Exception
"""The store's answer to one call of a batch, or the Redis error that call alone met
(out of memory, say): that message was not recorded."""


def _operands(calls: Sequence[CreateCall]) -> tuple[str, str, list[list[Value]]]:
    script = load("create")
    return script.sha, script.source, [script.bind(call.keys, call.args) for call in calls]


def _settle(replies: Sequence[Any]) -> list[CreateReply]:
    answers: list[CreateReply] = []
    for reply in replies:
        if isinstance(reply, REDIS_ERRORS):
            answers.append(reply)
        elif isinstance(reply, Exception):
            raise reply  # a bug (wrong arguments, a script error), not an outage
        else:
            answers.append(CreateResult.from_reply(reply))
    return answers


def _unknown_script(replies: Sequence[Any]) -> bool:
    return any(isinstance(reply, redis.exceptions.NoScriptError) for reply in replies)


def create_many(client: redis.Redis, calls: Sequence[CreateCall]) -> list[CreateReply]:
    """Run the create calls in order, one pipeline; one answer per call, same order."""
    return create_many_then(client, calls, ())[0]


def create_many_then(
    client: redis.Redis, calls: Sequence[CreateCall], then: Sequence[Sequence[Value]]
) -> tuple[list[CreateReply], list[Any]]:
    """:func:`create_many`, with the commands ``then`` after the calls in the same pipeline
    (on the same connection); their raw replies come second."""
    if not calls:
        return [], []
    sha, source, operands = _operands(calls)

    def run() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for each in operands:
            pipe.evalsha(sha, *each)  # type: ignore[arg-type]
        for command in then:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return pipe.execute(raise_on_error=False)

    replies = run()
    if _unknown_script(replies):  # nothing ran: Redis lost its script cache (a restart)
        client.script_load(source)
        replies = run()
    return _settle(replies[: len(calls)]), replies[len(calls) :]


async def create_many_async(
    connection: AsyncRedis, calls: Sequence[CreateCall]
) -> list[CreateReply]:
    """:func:`create_many` through an asyncio client of the same Redis."""
    return (await create_many_then_async(connection, calls, ()))[0]


async def create_many_then_async(
    connection: AsyncRedis, calls: Sequence[CreateCall], then: Sequence[Sequence[Value]]
) -> tuple[list[CreateReply], list[Any]]:
    """:func:`create_many_then` through an asyncio client of the same Redis."""
    if not calls:
        return [], []
    sha, source, operands = _operands(calls)

    async def run() -> list[Any]:
        async with connection.pipeline(transaction=False) as pipe:
            for each in operands:
                pipe.evalsha(sha, *each)  # type: ignore[arg-type]
            for command in then:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)

    replies = await run()
    if _unknown_script(replies):
        await connection.script_load(source)
        replies = await run()
    return _settle(replies[: len(calls)]), replies[len(calls) :]
