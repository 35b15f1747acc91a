"""``dispatcher.client``: the signing client, sync over real HTTP (uvicorn on loopback) and
async over the ASGI transport; answers map to the producer API's errors."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher.client import AsyncClient, Client
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
from dispatcher.sandbox.server import ServerThread
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
