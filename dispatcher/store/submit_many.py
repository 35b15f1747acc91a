"""Submit stage, many messages at once: the create script of :mod:`.submit`, pipelined.

A batch is the calls :meth:`SubmitStore.prepare` builds, one per message, sent as one
non-transactional pipeline: one round trip for the whole batch (a second only when
Redis does not know the script yet). Each call keeps its own meaning: its own gate,
its own answer, its own operation id, so redis-py's re-send of the whole pipeline
after a lost reply answers every call as its first run did. Nothing here is atomic
across messages, by design: each message is recorded and queued, or not, on its own
(docs/api.md, "Batch submit"). On a Redis Cluster the pipeline is sent to each node
holding some of its slots, and the calls' gates run first in a pipeline of their own
(:func:`dispatcher.store.submit.gate_apart`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from dispatcher import keys
from dispatcher.cluster import is_cluster
from dispatcher.connections import REDIS_ERRORS
from dispatcher.ids import MessageRef
from dispatcher.store.scripts import Value, load
from dispatcher.store.submit import CreateCall, CreateOutcome, CreateResult, gate_apart

log = logging.getLogger(__name__)

CreateReply = CreateResult | Exception
"""The store's answer to one call of a batch, or the Redis error that call alone met
(out of memory, say): that message was not recorded."""


def _operands(
    calls: Sequence[CreateCall], name: str = "create"
) -> tuple[str, str, list[list[Value]]]:
    script = load(name)
    return script.sha, script.source, [script.bind(call.keys, call.args) for call in calls]


class _Gated:
    """A batch's calls, with their gates apart on a Redis Cluster (else in each create):
    the answers of those a gate refused (or that met a Redis error), and the rest."""

    def __init__(self, calls: Sequence[CreateCall], *, gates_apart: bool) -> None:
        split = [gate_apart(call) if gates_apart else (None, call) for call in calls]
        self.creates = [create for _, create in split]
        self.gates = [(i, gate) for i, (gate, _) in enumerate(split) if gate is not None]
        self.refused: dict[int, CreateReply] = {}

    def settle(self, replies: Sequence[Any]) -> None:
        for (i, _), answer in zip(self.gates, _settle(replies), strict=True):
            if isinstance(answer, Exception) or answer.outcome is not CreateOutcome.PASSED:
                self.refused[i] = answer

    def left(self) -> list[CreateCall]:
        """The calls to run the create script for."""
        return [call for i, call in enumerate(self.creates) if i not in self.refused]

    def merge(self, created: list[CreateReply]) -> list[CreateReply]:
        answers = iter(created)
        return [self.refused.get(i) or next(answers) for i in range(len(self.creates))]


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
    gated = _Gated(calls, gates_apart=is_cluster(client))
    if gated.gates:
        gated.settle(_run(client, *_operands([gate for _, gate in gated.gates], "gate"), ()))
    creates = gated.left()
    replies = _run(client, *_operands(creates), then)
    return gated.merge(_settle(replies[: len(creates)])), replies[len(creates) :]


def _run(
    client: redis.Redis,
    sha: str,
    source: str,
    operands: list[list[Value]],
    then: Sequence[Sequence[Value]],
) -> list[Any]:
    """One script's calls, then ``then``, in one pipeline (cluster pipelines route each
    call by its keys; their ``evalsha`` method is refused, the command is not)."""
    if not operands and not then:
        return []

    def run() -> list[Any]:
        pipe = client.pipeline(transaction=False)
        for each in operands:
            pipe.execute_command("EVALSHA", sha, *each)  # type: ignore[no-untyped-call]
        for command in then:
            pipe.execute_command(*command)  # type: ignore[no-untyped-call]
        return pipe.execute(raise_on_error=False)

    replies = run()
    if _unknown_script(replies):  # nothing ran: Redis lost its script cache (a restart)
        client.script_load(source)
        replies = run()
    return replies


def mark_published(client: redis.Redis, refs: Sequence[MessageRef], grace_ms: int) -> None:
    """The broker confirmed these messages' tasks: each still ``queued`` gets ``grace_ms``
    (the queued grace) as its deadline (``lua/published.lua``), one pipeline. If Redis
    does not answer, recovery publishes a second task after the publish grace, which
    stands down (one send): logged, not raised."""
    script = load("published")
    operands = [
        script.bind(
            {"message": keys.message(ref), "inflight": keys.shard_of(ref).inflight},
            {"member": ref.member, "queued_grace_ms": grace_ms},
        )
        for ref in refs
    ]
    try:
        _run(client, script.sha, script.source, operands, ())
    except REDIS_ERRORS as exc:
        log.warning("%d published message(s) not marked so: %s", len(refs), exc)


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
    gated = _Gated(calls, gates_apart=is_cluster(connection))
    if gated.gates:
        gates = _operands([gate for _, gate in gated.gates], "gate")
        gated.settle(await _run_async(connection, *gates, ()))
    creates = gated.left()
    replies = await _run_async(connection, *_operands(creates), then)
    return gated.merge(_settle(replies[: len(creates)])), replies[len(creates) :]


async def _run_async(
    connection: AsyncRedis,
    sha: str,
    source: str,
    operands: list[list[Value]],
    then: Sequence[Sequence[Value]],
) -> list[Any]:
    """:func:`_run` through an asyncio client."""
    if not operands and not then:
        return []

    async def run() -> list[Any]:
        async with connection.pipeline(transaction=False) as pipe:
            for each in operands:
                pipe.execute_command("EVALSHA", sha, *each)
            for command in then:
                pipe.execute_command(*command)
            return await pipe.execute(raise_on_error=False)

    replies = await run()
    if _unknown_script(replies):
        await connection.script_load(source)
        replies = await run()
    return replies
