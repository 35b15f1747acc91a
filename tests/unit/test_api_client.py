"""``dispatcher.client``: the signing client, sync over real HTTP (uvicorn on loopback) and
async over the ASGI transport; answers map to the producer API's errors; a fan-out's
recipients page by page, over HTTP and in process."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.client import AsyncClient, Client, RecipientOutcome, RecipientState
from dispatcher.embedded import free_port
from dispatcher.errors import (
    Conflict,
    InvalidMessage,
    MessageTooLarge,
    NotFound,
    RateLimited,
    RecallRefused,
    Unauthorized,
    Unavailable,
)
from dispatcher.ids import MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.sandbox.server import ServerThread
from dispatcher.store.recipients import delivered, failed
from tests.unit.test_api_support import SEED_BODY, TEXT, Harness, make_harness, unique_id


@pytest.fixture()
def served(redis_url: str) -> Iterator[tuple[Harness, str]]:
    harness = make_harness(redis_url)
    with ServerThread(harness.app) as server:
        yield harness, server.url
    harness.close()


def client_for(
    url: str, client: str = "c1", secret: str = "secret-one", channel: str = "ch1", **options: Any
) -> Client:
    return Client(url, client, secret, channel=channel, **options)


def test_submit_then_status_round_trip(served: tuple[Harness, str]) -> None:
    harness, url = served
    with client_for(url) as api:
        message_id = api.submit(TEXT)
        record = api.status(message_id)
        assert record is not None
        assert record["getMessageId"] == message_id and record["state"] == "queued"
        assert api.status_many([message_id, unique_id()]) == [record, None]
    assert harness.queued() == 1


def test_identical_submits_in_the_same_second_are_not_replays(served: tuple[Harness, str]) -> None:
    _, url = served
    payload = {**TEXT, "getMessageId": unique_id()}
    with client_for(url) as api:
        assert api.submit(payload) == api.submit(payload) == payload["getMessageId"]


def test_raw_bytes_are_sent_as_given(served: tuple[Harness, str]) -> None:
    harness, url = served
    with client_for(url) as api:
        message_id = api.submit(SEED_BODY)
    assert harness.has_record(message_id)


def test_md5_is_accepted_only_from_a_client_configured_for_it(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url, "old", "secret-old", "old", algorithm="md5") as api:
        assert api.submit(TEXT)
    with client_for(url, algorithm="md5") as api, pytest.raises(Unauthorized):
        api.submit(TEXT)


def test_legacy_signing_client_works_with_v1_signs(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url, "old", "secret-old", "old", legacy_signing=True) as api:
        message_id = api.submit(TEXT)
        assert api.status(message_id) is not None
    with client_for(url, legacy_signing=True) as api, pytest.raises(Unauthorized):
        api.submit(TEXT)


def test_unknown_status_is_none(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url) as api:
        assert api.status(unique_id()) is None


def test_invalid_message_raises_with_every_field(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url) as api, pytest.raises(InvalidMessage) as caught:
        api.submit(
            {
                "messageType": 5,
                "from": "a",
                "to": "b",
                "messageInfo": {"latitude": 99, "longitude": 999, "address": "x"},
            }
        )
    assert {e.field for e in caught.value.errors} == {
        "messageInfo.latitude",
        "messageInfo.longitude",
    }


def test_too_large_raises_message_too_large(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url) as api, pytest.raises(MessageTooLarge):
        api.submit({**TEXT, "messageInfo": {"textMessage": "中" * 5000}})


def test_conflict_raises_conflict_with_the_id(served: tuple[Harness, str]) -> None:
    _, url = served
    message_id = unique_id()
    with client_for(url) as api:
        api.submit({**TEXT, "getMessageId": message_id})
        with pytest.raises(Conflict) as caught:
            api.submit({**TEXT, "getMessageId": message_id, "to": "someone_else"})
    assert caught.value.message_id == message_id


def test_wrong_secret_raises_unauthorized(served: tuple[Harness, str]) -> None:
    _, url = served
    with (
        client_for(url, secret="wrong") as api,
        pytest.raises(Unauthorized, match="authentication failed"),
    ):
        api.submit(TEXT)


def test_rate_limit_raises_rate_limited_with_the_wait(redis_url: str) -> None:
    harness = make_harness(redis_url, submit_rate_per_second=0.5, submit_burst=1)
    try:
        with ServerThread(harness.app) as server, client_for(server.url) as api:
            api.submit(TEXT)
            with pytest.raises(RateLimited) as caught:
                api.submit(TEXT)
        assert caught.value.retry_after >= 1
        assert caught.value.client == "c1"
    finally:
        harness.close()


def test_unreachable_api_raises_unavailable() -> None:
    with client_for(f"http://127.0.0.1:{free_port()}") as api, pytest.raises(Unavailable):
        api.submit(TEXT)


def test_api_answering_503_raises_unavailable(redis_url: str) -> None:
    harness = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        with (
            ServerThread(harness.app) as server,
            client_for(server.url) as api,
            pytest.raises(Unavailable),
        ):
            api.submit(TEXT)
    finally:
        harness.close()


def test_async_client_does_the_same_over_asgi(served: tuple[Harness, str]) -> None:
    harness, _ = served

    async def scenario() -> tuple[str, dict[str, Any] | None, list[Any]]:
        transport = httpx.ASGITransport(app=harness.app)
        async with AsyncClient(
            "http://api", "c1", "secret-one", channel="ch1", transport=transport
        ) as api:
            message_id = await api.submit(TEXT)
            with pytest.raises(InvalidMessage):
                await api.submit({**TEXT, "messageType": 42})
            return message_id, await api.status(message_id), await api.status_many([unique_id()])

    message_id, record, many = asyncio.run(scenario())
    assert record is not None and record["getMessageId"] == message_id
    assert many == [None]


def test_client_repr_and_errors_never_show_the_secret(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url, secret="wrong-secret-value") as api:
        assert "wrong-secret-value" not in repr(api.signer)
        with pytest.raises(Unauthorized) as caught:
            api.submit(TEXT)
    assert "wrong-secret-value" not in str(caught.value)


def test_cancel_and_recall_answer_through_the_client(served: tuple[Harness, str]) -> None:
    _, url = served
    with client_for(url) as api:
        message_id = api.submit({**TEXT, "sendAt": int(time.time() * 1000) + 60_000})
        assert api.status(message_id)["state"] == "scheduled"  # type: ignore[index]
        with pytest.raises(RecallRefused) as refused:
            api.recall(message_id)
        assert refused.value.reason == "not_delivered"
        assert api.cancel(message_id)["outcome"] == "cancelled"
        with pytest.raises(NotFound):
            api.cancel(unique_id())


def test_submit_many_maps_each_result_to_an_id_or_its_error(served: tuple[Harness, str]) -> None:
    harness, url = served
    taken, fresh = unique_id(), unique_id()
    with client_for(url) as api:
        api.submit({**TEXT, "getMessageId": taken})
        results = api.submit_many(
            [
                {**TEXT, "getMessageId": fresh},
                {**TEXT, "to": ""},
                {**TEXT, "getMessageId": taken, "to": "someone_else"},
                {**TEXT, "messageInfo": {"textMessage": "中" * 5000}},
            ]
        )
        assert results[0] == fresh
        assert isinstance(results[1], InvalidMessage)
        assert [e.field for e in results[1].errors] == ["to"]
        assert isinstance(results[2], Conflict) and results[2].message_id == taken
        assert isinstance(results[3], MessageTooLarge)
        with pytest.raises(InvalidMessage, match="messages"):
            api.submit_many([])
    assert harness.queued() == 2


def test_async_submit_many_over_asgi(served: tuple[Harness, str]) -> None:
    harness, _ = served
    transport = httpx.ASGITransport(app=harness.app)

    async def scenario() -> list[Any]:
        async with AsyncClient(
            "http://api", "c1", "secret-one", channel="ch1", transport=transport
        ) as api:
            return await api.submit_many([TEXT, {**TEXT, "from": ""}])

    first, second = asyncio.run(scenario())
    assert isinstance(first, str) and first.startswith(harness.settings.id_prefix)
    assert isinstance(second, InvalidMessage)


class CountingTransport(httpx.HTTPTransport):
    """A real HTTP transport that keeps each request's query (to count pages)."""

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[dict[str, str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.queries.append(dict(request.url.params))
        return super().handle_request(request)


def fan_out(harness: Harness, names: list[str], delivered_up_to: int, failed_at: int) -> str:
    """A c1 message to ``names``: the first ``delivered_up_to`` delivered (as 1000 + i),
    the one at ``failed_at`` failed for good, the others pending."""
    response = harness.submit({**TEXT, "to": names})
    assert response.status_code == 200, response.text
    message_id = str(response.json()["data"]["getMessageId"])
    store = harness.app.state.runtime.dispatcher.store
    ref = MessageRef("c1", message_id)
    store.recipients.record(ref, [(i, delivered(str(1000 + i))) for i in range(delivered_up_to)])
    store.recipients.record(ref, [(failed_at, failed("refused:gone"))])
    return message_id


def test_recipients_pages_through_every_recipient_typed(served: tuple[Harness, str]) -> None:
    harness, url = served
    names = [f"r{i}" for i in range(25)]
    message_id = fan_out(harness, names, delivered_up_to=20, failed_at=21)
    transport = CountingTransport()
    with client_for(url, transport=transport) as api:
        every = list(api.recipients(message_id, page_size=10))
        assert [q.get("cursor") for q in transport.queries] == [None, "10", "20"]
        assert [o.to for o in every] == names
        assert every[3] == RecipientOutcome("r3", RecipientState.DELIVERED, "1003")
        assert every[21] == RecipientOutcome("r21", RecipientState.FAILED, error="refused:gone")
        assert every[24] == RecipientOutcome("r24", RecipientState.PENDING)
        # A filter keeps paging past pages it empties (r0..r9 hold no pending one).
        pending = [o.to for o in api.recipients(message_id, "pending", page_size=10)]
        assert pending == ["r20", "r22", "r23", "r24"]
        assert [o.to for o in api.recipients(message_id, RecipientState.FAILED)] == ["r21"]
        with pytest.raises(ValueError):
            next(api.recipients(message_id, "lost"))


def test_recipients_of_another_clients_message_are_refused(served: tuple[Harness, str]) -> None:
    harness, url = served
    message_id = fan_out(harness, ["a", "b", "c"], delivered_up_to=1, failed_at=2)
    with client_for(url, "c2", "secret-two", "ch2") as other, pytest.raises(NotFound):
        next(other.recipients(message_id))
    with client_for(url, "ops", "secret-ops", "ops") as admin:
        assert [o.state for o in admin.recipients(message_id, owner="c1")] == [
            RecipientState.DELIVERED,
            RecipientState.PENDING,
            RecipientState.FAILED,
        ]
    with client_for(url) as api, pytest.raises(NotFound):
        next(api.recipients(api.submit(TEXT)))  # one recipient: no list to page through


def test_recipients_default_pages_over_http_async_and_in_process(
    served: tuple[Harness, str],
) -> None:
    harness, url = served
    names = [f"user{i:04d}" for i in range(1500)]
    message_id = fan_out(harness, names, delivered_up_to=1200, failed_at=1300)
    transport = CountingTransport()
    with client_for(url, transport=transport) as api:
        assert [o.to for o in api.recipients(message_id)] == names
        assert len(transport.queries) == 2  # the server's page: 1,000

    async def scenario() -> list[RecipientOutcome]:
        asgi = httpx.ASGITransport(app=harness.app)
        async with AsyncClient(
            "http://api", "c1", "secret-one", channel="ch1", transport=asgi
        ) as api:
            with pytest.raises(NotFound):
                await anext(api.recipients(unique_id()))
            return [o async for o in api.recipients(message_id, "pending", page_size=100)]

    expected = [n for i, n in enumerate(names) if i >= 1200 and i != 1300]
    assert [o.to for o in asyncio.run(scenario())] == expected
    producer = Dispatcher(harness.settings, namespace="c1")
    try:
        assert [o.to for o in producer.recipients(message_id, "pending")] == expected
        failed_one = list(producer.recipients(MessageRef("c1", message_id), "failed"))
        assert failed_one == [
            RecipientOutcome("user1300", RecipientState.FAILED, error="refused:gone")
        ]
        assert sum(1 for _ in producer.recipients(message_id)) == 1500
        with pytest.raises(NotFound):
            next(Dispatcher(harness.settings, namespace="c2").recipients(message_id))
    finally:
        producer.close()
