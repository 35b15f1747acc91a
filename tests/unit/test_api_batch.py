"""``POST /sender/v1/handleBatchMessage`` and ``Dispatcher.submit_many``: one result per
message in order, refused messages leave nothing behind, the request-level refusals
(size, shape, signature, replay) keep nothing at all, and the accepted messages of a
batch reach Redis in one pipeline."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import redis
from prometheus_client import CollectorRegistry, Gauge
from redis.asyncio.client import Pipeline as AsyncPipeline

from dispatcher import batch as batch_module
from dispatcher import keys
from dispatcher.api.envelope import EnvelopeWriter
from dispatcher.api.overload import SubmitBound
from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.embedded import free_port
from dispatcher.enqueue import RING_TASK
from dispatcher.errors import Conflict, InvalidMessage
from dispatcher.ids import MessageRef
from dispatcher.limits import MAX_BATCH_MESSAGES
from dispatcher.producer import Dispatcher
from tests.unit.test_api_operations import scrape
from tests.unit.test_api_support import (
    TEXT,
    Harness,
    body_of,
    envelope_ok,
    field_errors,
    make_harness,
    make_settings,
    unique_id,
)


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def text(message_id: str | None = None, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {**TEXT, **changes}
    if message_id:
        body["getMessageId"] = message_id
    return body


def post_batch(api: Harness, payload: Any, **sign: Any) -> httpx.Response:
    body = body_of(payload)
    params = sign.pop("params", None) or api.params(body, path=SUBMIT_BATCH, **sign)
    return api.http.post(
        SUBMIT_BATCH, params=params, content=body, headers={"Content-Type": "application/json"}
    )


def results_of(response: httpx.Response) -> list[dict[str, Any]]:
    assert response.status_code == 200, response.text
    envelope = envelope_ok(response)
    assert envelope["message"] == "成功"
    assert list(envelope["data"]) == ["results"]
    results: list[dict[str, Any]] = envelope["data"]["results"]
    return results


def record(api: Harness, message_id: str, client: str = "c1") -> dict[Any, Any]:
    found: dict[Any, Any] = api.redis.hgetall(keys.message(MessageRef(client, message_id)))
    return found


def errors_of(result: dict[str, Any]) -> dict[str, str]:
    assert set(result) >= {"code", "message", "errors"}, result
    return {e["field"]: e["error"] for e in result["errors"]}


# ---------------------------------------------------------------------------
# Accepted and refused messages side by side


def test_each_message_is_judged_alone_and_the_refused_leave_nothing(api: Harness) -> None:
    ids = [unique_id() for _ in range(5)]
    messages: list[Any] = [
        text(ids[0]),
        text(ids[1], to=""),  # a broken field
        42,  # not an object
        text(ids[3], messageInfo={"textMessage": "中" * 5000}),  # over Easemob's body limit
        text(ids[4], sendAt="tomorrow", nope=1),  # two broken fields
        text(),  # a generated id
    ]
    queued = api.queued()

    results = results_of(post_batch(api, {"messages": messages}))

    assert len(results) == len(messages)
    assert results[0] == {"getMessageId": ids[0]}
    assert results[1]["code"] == 400 and "to" in errors_of(results[1])
    assert results[2]["code"] == 400
    assert errors_of(results[2]) == {"body": "must be a JSON object"}
    assert results[3]["code"] == 413 and "body" in errors_of(results[3])
    assert results[4]["code"] == 400 and set(errors_of(results[4])) == {"sendAt", "nope"}
    assert results[5]["getMessageId"].startswith(api.settings.id_prefix)
    assert api.queued() == queued + 2
    assert record(api, ids[0])[b"state"] == b"queued"
    assert record(api, results[5]["getMessageId"])[b"state"] == b"queued"
    for refused in (ids[1], ids[3], ids[4]):
        assert not api.has_record(refused)


def test_the_refusal_entries_say_what_a_single_submit_would_have(api: Harness) -> None:
    """The same message alone answers the same code and the same field errors."""
    broken = text(unique_id(), messageType=2, messageInfo={"imageMessage": ""})
    [result] = results_of(post_batch(api, {"messages": [broken]}))
    alone = api.submit(broken)
    assert result["code"] == alone.status_code == 400
    assert errors_of(result) == field_errors(alone)
    assert result["message"] == alone.json()["message"]


# ---------------------------------------------------------------------------
# getMessageIds: repeated in the batch, or used before


def test_an_id_repeated_with_the_same_content_is_one_message(api: Harness) -> None:
    message_id = unique_id()
    queued = api.queued()
    results = results_of(post_batch(api, {"messages": [text(message_id), text(message_id)]}))
    assert results == [{"getMessageId": message_id}, {"getMessageId": message_id}]
    assert api.queued() == queued + 1


def test_an_id_repeated_with_other_content_is_a_conflict_for_the_later(api: Harness) -> None:
    message_id = unique_id()
    batch = {"messages": [text(message_id), text(message_id, to="someone_else")]}
    first, second = results_of(post_batch(api, batch))
    assert first == {"getMessageId": message_id}
    assert second["code"] == 409
    assert errors_of(second) == {"getMessageId": "is already used for a different message"}
    assert record(api, message_id)[b"to"] == b"u_receiver"


def test_an_id_accepted_before_answers_as_a_resubmission_would(api: Harness) -> None:
    same, other = unique_id(), unique_id()
    for message_id in (same, other):
        assert api.submit(text(message_id)).status_code == 200
    queued = api.queued()
    batch = {"messages": [text(same), text(other, to="someone_else")]}
    resubmitted, conflict = results_of(post_batch(api, batch))
    assert resubmitted == {"getMessageId": same}
    assert conflict["code"] == 409
    assert api.queued() == queued
    assert record(api, other)[b"to"] == b"u_receiver"


def test_ids_are_the_callers_own_in_a_batch_too(api: Harness) -> None:
    message_id = unique_id()
    assert results_of(post_batch(api, {"messages": [text(message_id)]}))[0]["getMessageId"]
    batch = {"messages": [text(message_id, to="someone_else")]}
    assert results_of(post_batch(api, batch, client="c2")) == [{"getMessageId": message_id}]
    assert record(api, message_id, "c1")[b"to"] == b"u_receiver"
    assert record(api, message_id, "c2")[b"to"] == b"someone_else"
    assert record(api, message_id, "c2")[b"client"] == b"c2"


# ---------------------------------------------------------------------------
# Refusals of the whole request: nothing kept


def _nothing_kept(api: Harness, response: httpx.Response, code: int, ids: list[str]) -> None:
    assert response.status_code == code, response.text
    envelope_ok(response)
    for message_id in ids:
        assert not api.has_record(message_id)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"messages": []}, "messages"),
        ({"messages": [TEXT] * (MAX_BATCH_MESSAGES + 1)}, "messages"),
        ({"messages": {"0": TEXT}}, "messages"),
        ({}, "messages"),
        ({"messages": [TEXT], "more": 1}, "more"),
        ([TEXT], "body"),
    ],
    ids=["empty", "501", "not-a-list", "missing", "unknown-field", "not-an-object"],
)
def test_a_body_that_is_no_batch_is_400_and_keeps_nothing(
    api: Harness, body: Any, field: str
) -> None:
    queued, records = api.queued(), api.record_count()
    response = post_batch(api, body)
    _nothing_kept(api, response, 400, [])
    assert field in field_errors(response)
    assert (api.queued(), api.record_count()) == (queued, records)


def test_a_batch_of_exactly_500_is_accepted(api: Harness) -> None:
    results = results_of(post_batch(api, {"messages": [text() for _ in range(500)]}))
    assert len({r["getMessageId"] for r in results}) == 500


def test_a_body_over_the_batch_limit_is_413_and_keeps_nothing(redis_url: str) -> None:
    api = make_harness(redis_url, max_request_bytes=2048, max_batch_request_bytes=8192)
    try:
        ids = [unique_id() for _ in range(40)]
        body = {"messages": [text(i, messageInfo={"textMessage": "x" * 200}) for i in ids]}
        assert len(body_of(body)) > 8192
        response = post_batch(api, body)
        _nothing_kept(api, response, 413, ids)
        assert "body" in field_errors(response)
    finally:
        api.close()


def test_the_batch_limit_is_only_the_batch_endpoints(redis_url: str) -> None:
    """A single submit keeps its own limit; in a batch, a message over it is refused alone."""
    api = make_harness(redis_url, max_request_bytes=2048, max_batch_request_bytes=65536)
    try:
        big = text(unique_id(), messageInfo={"textMessage": "x" * 3000})
        assert api.submit(big).status_code == 413
        small = text(unique_id())
        results = results_of(post_batch(api, {"messages": [small, big]}))
        assert results[0] == {"getMessageId": small["getMessageId"]}
        assert results[1]["code"] == 413 and "body" in errors_of(results[1])
        assert not api.has_record(big["getMessageId"])
    finally:
        api.close()


def test_an_unsigned_batch_is_401_and_keeps_nothing(api: Harness) -> None:
    ids = [unique_id(), unique_id()]
    body = body_of({"messages": [text(i) for i in ids]})
    unsigned = {"client": "c1", "channel": "ch1"}
    _nothing_kept(api, post_batch(api, body, params=unsigned), 401, ids)
    wrong = api.params(body, path=SUBMIT_BATCH, secret="not-the-secret")
    _nothing_kept(api, post_batch(api, body, params=wrong), 401, ids)
    # Signed for the single-submit path: the path is part of what is signed.
    other_path = api.params(body)
    _nothing_kept(api, post_batch(api, body, params=other_path), 401, ids)


def test_a_replayed_batch_is_refused_whole(api: Harness) -> None:
    first, second = unique_id(), unique_id()
    body = body_of({"messages": [text(first)]})
    params = api.params(body, path=SUBMIT_BATCH)
    assert results_of(post_batch(api, body, params=params)) == [{"getMessageId": first}]
    replay = body_of({"messages": [text(second)]})
    # Same nonce, new body and a valid sign for it: still a replay of the nonce.
    replay_params = api.params(replay, path=SUBMIT_BATCH, nonce=params["nonce"])
    _nothing_kept(api, post_batch(api, replay, params=replay_params), 401, [second])


def test_owner_is_refused_on_a_batch(api: Harness) -> None:
    message_id = unique_id()
    response = post_batch(api, {"messages": [text(message_id)]}, client="ops", owner="c1")
    _nothing_kept(api, response, 400, [message_id])
    assert "owner" in field_errors(response)


# ---------------------------------------------------------------------------
# The client's rate, per message


def test_messages_past_the_clients_rate_are_429_and_the_rest_accepted(redis_url: str) -> None:
    api = make_harness(redis_url, submit_rate_per_second=0.01, submit_burst=3)
    try:
        ids = [unique_id() for _ in range(5)]
        results = results_of(post_batch(api, {"messages": [text(i) for i in ids]}))
        assert results[:3] == [{"getMessageId": i} for i in ids[:3]]
        for result, message_id in zip(results[3:], ids[3:], strict=True):
            assert result["code"] == 429 and result["retryAfter"] >= 1
            assert result["errors"] == []
            assert not api.has_record(message_id)
    finally:
        api.close()


# ---------------------------------------------------------------------------
# Round trips, the in-flight bound, the documentation


def test_a_batch_is_one_pipeline_not_a_round_trip_per_message(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    executed: list[int] = []
    original = AsyncPipeline.execute

    async def counting(self: AsyncPipeline, raise_on_error: bool = True) -> Any:
        executed.append(len(self.command_stack))
        return await original(self, raise_on_error)

    monkeypatch.setattr(AsyncPipeline, "execute", counting)
    results = results_of(post_batch(api, {"messages": [text() for _ in range(100)]}))
    assert len(results) == 100 and all("getMessageId" in r for r in results)
    assert executed == [100]


def test_the_pipeline_loads_the_script_when_redis_has_forgotten_it(api: Harness) -> None:
    api.redis.script_flush()
    ids = [unique_id(), unique_id()]
    results = results_of(post_batch(api, {"messages": [text(i) for i in ids]}))
    assert results == [{"getMessageId": i} for i in ids]


@pytest.mark.parametrize(
    ("length", "weight"), [(None, 64), (b"100", 1), (b"65536", 1), (b"65537", 2), (b"9999999", 64)]
)
def test_a_batch_counts_in_flight_as_the_single_bodies_its_size_could_hold(
    length: bytes | None, weight: int
) -> None:
    bound = SubmitBound.__new__(SubmitBound)
    bound.single_bytes, bound.batch_bytes = 65536, 4 * 1024 * 1024
    headers = [] if length is None else [(b"content-length", length)]
    assert bound._batch_weight({"headers": headers}) == weight


def test_the_openapi_document_shows_the_batch_endpoint(api: Harness) -> None:
    schema = api.http.get("/openapi.json").json()
    operation = schema["paths"][SUBMIT_BATCH]["post"]
    body = operation["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/BatchRequest"}
    messages = schema["components"]["schemas"]["BatchRequest"]["properties"]["messages"]
    assert (messages["minItems"], messages["maxItems"]) == (1, 500)
    assert {"sign", "nonce"} <= {p["name"] for p in operation["parameters"]}
    assert "BatchResponse" in json.dumps(operation["responses"]["200"])


# ---------------------------------------------------------------------------
# The Python producer


def test_submit_many_answers_ids_and_errors_in_order(api: Harness) -> None:
    dispatcher = Dispatcher(api.settings, namespace="c1")
    try:
        taken = unique_id()
        assert dispatcher.submit(text(taken)) == taken
        fresh = unique_id()
        results = dispatcher.submit_many([text(fresh), text(to=""), text(taken, to="else")])
        assert results[0] == fresh
        assert isinstance(results[1], InvalidMessage)
        assert {e.field for e in results[1].errors} == {"to"}
        assert isinstance(results[2], Conflict)
        assert record(api, fresh)[b"state"] == b"queued"
        with pytest.raises(InvalidMessage):
            dispatcher.submit_many([])
        with pytest.raises(InvalidMessage):
            dispatcher.submit_many([TEXT] * 501)
    finally:
        dispatcher.close()


def test_redis_down_is_a_quick_503_and_keeps_nothing(redis_url: str) -> None:
    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        message_id = unique_id()
        started = time.monotonic()
        response = post_batch(api, {"messages": [text(message_id)]})
        assert time.monotonic() - started < 5
        _nothing_kept(api, response, 503, [message_id])
    finally:
        api.close()


def test_after_a_503_the_very_same_request_is_accepted(
    api: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def failing(connection: Any, calls: Any) -> Any:
        raise redis.ConnectionError("connection reset")

    message_id = unique_id()
    body = body_of({"messages": [text(message_id)]})
    params = api.params(body, path=SUBMIT_BATCH)
    monkeypatch.setattr(batch_module, "create_many_async", failing)
    _nothing_kept(api, post_batch(api, body, params=params), 503, [message_id])
    monkeypatch.undo()
    assert results_of(post_batch(api, body, params=params)) == [{"getMessageId": message_id}]


def test_a_message_with_a_later_send_at_is_scheduled_in_a_batch_too(api: Harness) -> None:
    later, now = unique_id(), unique_id()
    send_at = int(time.time() * 1000) + 3_600_000
    queued = api.queued()
    batch = {"messages": [text(later, sendAt=send_at), text(now)]}
    assert results_of(post_batch(api, batch)) == [{"getMessageId": later}, {"getMessageId": now}]
    assert record(api, later)[b"state"] == b"scheduled"
    assert record(api, now)[b"state"] == b"queued"
    assert api.queued() == queued + 1


def _other_db(redis_url: str) -> str:
    return redis_url.rsplit("/", 1)[0] + "/3"


def test_with_another_broker_one_ring_is_published_for_the_batch(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=_other_db(redis_url), delivery_batch=8)
    broker = redis.Redis.from_url(_other_db(redis_url))
    try:
        ids = [unique_id(), unique_id()]
        queued = api.queued()
        batch = {"messages": [text(ids[0]), text(ids[1], to=""), text()]}
        results = results_of(post_batch(api, batch))
        assert results[0] == {"getMessageId": ids[0]} and results[1]["code"] == 400
        rings = [json.loads(t)["headers"]["task"] for t in broker.lrange(api.settings.queue, 0, -1)]
        assert rings == [RING_TASK]
        assert api.queued() == queued + 2  # both wait on the pending list
    finally:
        broker.delete(api.settings.queue)
        broker.close()
        api.close()


def test_with_another_broker_each_accepted_message_is_published(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=_other_db(redis_url), delivery_batch=0)
    broker = redis.Redis.from_url(_other_db(redis_url))
    try:
        ids = [unique_id(), unique_id()]
        batch = {"messages": [text(ids[0]), text(ids[1], to=""), text()]}
        results = results_of(post_batch(api, batch))
        assert results[0] == {"getMessageId": ids[0]} and results[1]["code"] == 400
        assert broker.llen(api.settings.queue) == 2
        assert api.queued() == 0  # nothing pushed onto the store's Redis
    finally:
        broker.delete(api.settings.queue)
        broker.close()
        api.close()


def test_with_the_broker_down_each_message_is_503_and_its_record_removed(redis_url: str) -> None:
    """The broker is tried once per batch: after its first refusal the rest are not sent."""
    api = make_harness(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0", delivery_batch=0)
    producer = api.app.state.runtime.dispatcher
    tried: list[Any] = []
    publish = producer.publish
    producer.publish = lambda ref, task_id=None: tried.append(ref) or publish(ref, task_id)
    try:
        ids = [unique_id() for _ in range(3)]
        messages = [text(i) for i in ids] + [text(ids[2])]  # the last, a repeat of the third
        results = results_of(post_batch(api, {"messages": messages}))
        assert [r["code"] for r in results] == [503, 503, 503, 503]
        assert all(r["errors"] == [] for r in results)
        assert len(tried) == 1
        for message_id in ids:
            assert not api.has_record(message_id)
    finally:
        api.close()


def test_with_the_broker_down_the_batch_s_ring_fails_and_every_record_is_removed(
    redis_url: str,
) -> None:
    api = make_harness(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0", delivery_batch=8)
    try:
        queued = api.queued()
        ids = [unique_id() for _ in range(3)]
        results = results_of(post_batch(api, {"messages": [text(i) for i in ids]}))
        assert [r["code"] for r in results] == [503, 503, 503]
        for message_id in ids:
            assert not api.has_record(message_id)
        assert api.queued() == queued, "their pending entries went with them"
    finally:
        api.close()


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counted: list[int] = []
        self.submits_in_flight = Gauge("in_flight", "in flight", registry=self.registry)

    def count_submit(self, code: int, client: Any = None, refusal: Any = None) -> None:
        self.counted.append(code)


def test_batches_take_their_weight_of_the_in_flight_bound(redis_url: str) -> None:
    """Bound 4, single bodies of 1,000 bytes: a 2,500-byte batch holds 3 places, a single
    submit the fourth, a further batch is busy; alone, a batch heavier than the bound
    still goes through."""
    release = asyncio.Event()
    answered: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        answered.append(scope["path"])

    metrics = _Metrics()
    envelope = EnvelopeWriter(make_settings(redis_url))
    bound = SubmitBound(app, limit=4, envelope=envelope, metrics=metrics,  # type: ignore[arg-type]
                        single_bytes=1000, batch_bytes=10_000)  # fmt: skip

    def call(path: str, length: int | None) -> Any:
        headers = [] if length is None else [(b"content-length", str(length).encode())]
        scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
        sent: list[Any] = []

        async def send(message: Any) -> None:
            sent.append(message)

        async def receive() -> Any:
            return {"type": "http.request", "body": b"", "more_body": False}

        return asyncio.ensure_future(bound(scope, receive, send)), sent

    async def scenario() -> None:
        batch, _ = call(SUBMIT_BATCH, 2500)
        single, _ = call(SUBMIT, 10)
        await asyncio.sleep(0.05)
        assert bound.in_flight == 4 == metrics.registry.get_sample_value("in_flight")
        refused, sent = call(SUBMIT_BATCH, 1500)
        await refused
        assert sent[0]["status"] == 503 and metrics.counted == [503]
        release.set()
        await asyncio.gather(batch, single)
        assert bound.in_flight == 0 == metrics.registry.get_sample_value("in_flight")
        heavy, _ = call(SUBMIT_BATCH, None)
        await heavy

    asyncio.run(scenario())
    assert answered == [SUBMIT_BATCH, SUBMIT, SUBMIT_BATCH]


def test_a_batch_refused_whole_counts_as_one_refused_submit(api: Harness) -> None:
    def rejected() -> float:
        samples = scrape(api)
        return samples["dispatcher_rejected_total{client=-,reason=unauthorized}"]

    before = rejected()
    body = body_of({"messages": [text(unique_id()), text(unique_id())]})
    wrong = api.params(body, path=SUBMIT_BATCH, secret="not-the-secret")
    assert post_batch(api, body, params=wrong).status_code == 401
    assert rejected() == before + 1
