"""``POST /sender/v1/handleBasicMessage``: the seed's envelope, every error code of docs/api.md,
and the bad-input list of docs/reliability.md. Every rejection is checked for what it left
behind: nothing queued, no status record."""

from __future__ import annotations

import json
import re
import socket
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from dispatcher import keys
from dispatcher.embedded import free_port
from dispatcher.ids import MessageRef
from tests.unit.test_api_support import (
    SEED_BODY,
    TEXT,
    Harness,
    body_of,
    envelope_ok,
    field_errors,
    make_harness,
    unique_id,
)

QINIU_DOMAIN = "http://media.example.com"


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url, qiniu_domain=QINIU_DOMAIN)
    yield harness
    harness.close()


def dead_redis_url() -> str:
    return f"redis://127.0.0.1:{free_port()}/0"


# ---------------------------------------------------------------------------
# 200


def test_accepted_submit_answers_the_seed_envelope(api: Harness) -> None:
    response = api.submit(TEXT)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    envelope = envelope_ok(response)
    assert envelope["message"] == "成功"
    assert list(envelope["data"]) == ["getMessageId"]
    prefix = api.settings.id_prefix
    assert re.fullmatch(prefix + r"[0-9a-f]{32}", envelope["data"]["getMessageId"])
    foot = envelope["foot"]
    assert foot["servicePhone"] == "400800400"
    assert foot["host"] == socket.gethostname()
    stamp = datetime.strptime(foot["operationTime"], "%Y-%m-%d %H:%M:%S")
    shanghai_now = datetime.now(ZoneInfo("Asia/Shanghai")).replace(tzinfo=None)
    assert abs(shanghai_now - stamp) < timedelta(seconds=5)
    # Raw bytes: the Chinese text is UTF-8, not \\u-escaped, exactly as the seed shows it.
    assert '"message":"成功"'.encode() in response.content


def test_envelope_foot_follows_configured_time_zone_and_phone(redis_url: str) -> None:
    harness = make_harness(redis_url, timezone="America/New_York", service_phone="95555")
    try:
        foot = harness.submit(TEXT).json()["foot"]
    finally:
        harness.close()
    assert foot["servicePhone"] == "95555"
    stamp = datetime.strptime(foot["operationTime"], "%Y-%m-%d %H:%M:%S")
    new_york_now = datetime.now(ZoneInfo("America/New_York")).replace(tzinfo=None)
    assert abs(new_york_now - stamp) < timedelta(seconds=5)


def test_accepted_submit_is_queued_once_with_a_record_owned_by_the_client(api: Harness) -> None:
    response = api.submit(TEXT)
    message_id = response.json()["data"]["getMessageId"]
    assert api.queued() == 1
    assert api.redis.hget(keys.message(MessageRef("c1", message_id)), "client") == b"c1"
    assert api.redis.hget(keys.message(MessageRef("c1", message_id)), "state") == b"queued"


def test_the_seeds_example_body_is_accepted_byte_for_byte(api: Harness) -> None:
    response = api.submit(SEED_BODY)
    assert response.status_code == 200, response.text
    message_id = response.json()["data"]["getMessageId"]
    stored = json.loads(
        api.redis.hget(keys.message(MessageRef("c1", message_id)), "message") or b"{}"
    )
    assert stored["messageInfo"] == {"videoMessage": "661d21d918d8476c88fc9b90279c400f.mp4"}
    assert stored["to"] == "148992289019003396"
    assert api.redis.hget(keys.message(MessageRef("c1", message_id)), "targetType") == b"chatgroups"


def test_same_id_and_content_again_answers_200_and_queues_nothing_new(api: Harness) -> None:
    payload = {**TEXT, "getMessageId": unique_id()}
    first = api.submit(payload)
    second = api.submit(payload)
    assert first.status_code == second.status_code == 200
    assert (
        first.json()["data"] == second.json()["data"] == {"getMessageId": payload["getMessageId"]}
    )
    assert api.queued() == 1


def test_valid_unicode_is_stored_byte_for_byte(api: Harness) -> None:
    text = "emoji 🧪👩\u200d💻 RTL שלום zero\u200bwidth 𝔘𝔫𝔦"
    payload = {**TEXT, "messageInfo": {"textMessage": text}}
    message_id = api.submit(payload).json()["data"]["getMessageId"]
    stored = json.loads(
        api.redis.hget(keys.message(MessageRef("c1", message_id)), "message") or b"{}"
    )
    assert stored["messageInfo"]["textMessage"].encode() == text.encode()


def test_escaped_surrogate_pair_is_valid_unicode(api: Harness) -> None:
    response = api.submit(
        b'{"messageType":1,"from":"a","to":"b","messageInfo":{"textMessage":"\\ud83d\\ude00"}}'
    )
    assert response.status_code == 200, response.text


# ---------------------------------------------------------------------------
# Every error code of docs/api.md, table-driven


@dataclass
class ErrorCase:
    code: int
    body: Callable[[str], Any]
    """Body for a given getMessageId."""
    fields: set[str] = field(default_factory=set)
    """Fields the answer must name (400/413)."""
    settings: Callable[[], dict[str, Any]] = dict
    prepare: Callable[[Harness, str], None] | None = None
    """Runs first (and may itself queue): what is measured is the case's own request."""


def _text(message_id: str, **extra: Any) -> dict[str, Any]:
    return {**TEXT, "getMessageId": message_id, **extra}


def _submit_ok(api: Harness, message_id: str) -> None:
    assert api.submit(_text(message_id)).status_code == 200


def _use_up_rate(api: Harness, message_id: str) -> None:
    assert api.submit(TEXT).status_code == 200


ERROR_CASES = {
    "400 body not JSON": ErrorCase(
        400, lambda i: b'{"messageType": 1, "getMessageId": "' + i.encode(), {"body"}
    ),
    "400 JSON but not an object": ErrorCase(400, lambda i: [_text(i)], {"body"}),
    "400 every broken field listed": ErrorCase(
        400,
        lambda i: {
            "messageType": 4,
            "from": "",
            "to": "b",
            "getMessageId": i,
            "messageInfo": {
                "videoMessage": "clip.avi",
                "fileLength": 10485760,
                "thumbFileLength": 65537,
            },
        },
        {
            "from",
            "messageInfo.videoMessage",
            "messageInfo.fileLength",
            "messageInfo.thumbFileLength",
        },
    ),
    "401 bad sign": ErrorCase(
        401, _text, settings=lambda: {"clients": {"c1": {"secret": "rotated", "channels": ["ch1"]}}}
    ),
    "409 getMessageId reused for other content": ErrorCase(
        409, lambda i: _text(i, to="somebody_else"), prepare=_submit_ok
    ),
    "413 request body over the limit": ErrorCase(
        413,
        lambda i: _text(i, messageInfo={"textMessage": "x" * 4000}),
        {"body"},
        settings=lambda: {"max_request_bytes": 1024},
    ),
    "413 Easemob body over the provider limit": ErrorCase(
        413, lambda i: _text(i, messageInfo={"textMessage": "中" * 5000}), {"body"}
    ),
    "429 client rate limit": ErrorCase(
        429,
        _text,
        settings=lambda: {"submit_rate_per_second": 0.01, "submit_burst": 1},
        prepare=_use_up_rate,
    ),
    "503 Redis unreachable": ErrorCase(
        503, _text, settings=lambda: {"redis_url": dead_redis_url()}
    ),
    "503 broker unreachable": ErrorCase(
        503, _text, settings=lambda: {"broker_url": dead_redis_url()}
    ),
}


@pytest.mark.parametrize("name", list(ERROR_CASES))
def test_every_error_answers_its_code_in_the_envelope_and_leaves_nothing(
    redis_url: str, name: str
) -> None:
    case = ERROR_CASES[name]
    api = make_harness(redis_url, qiniu_domain=QINIU_DOMAIN, **case.settings())
    try:
        message_id = unique_id()
        if case.prepare:
            case.prepare(api, message_id)
        queued, records = api.queued(), api.record_count()
        original = api.redis.hgetall(keys.message(MessageRef("c1", message_id)))

        started = time.monotonic()
        response = api.submit(case.body(message_id))
        elapsed = time.monotonic() - started

        assert response.status_code == case.code, response.text
        envelope = envelope_ok(response)
        assert envelope["message"] and envelope["message"] != "成功"
        if case.code in (400, 413):
            assert case.fields <= set(field_errors(response)), envelope["data"]
        else:
            assert envelope["data"] is None or "errors" not in envelope["data"]
        assert api.queued() == queued, "a rejected submit queued something"
        assert api.record_count() == records, "a rejected submit left a status record"
        assert api.redis.hgetall(keys.message(MessageRef("c1", message_id))) == original
        if case.code == 409:
            assert original and original[b"to"] == b"u_receiver"
            assert envelope["data"] == {"getMessageId": message_id}
        else:
            assert not api.has_record(message_id)
        if case.code == 429:
            assert int(response.headers["Retry-After"]) >= 1
            assert envelope["data"]["retryAfter"] == int(response.headers["Retry-After"])
        if case.code == 503:
            assert elapsed < 5, "a dead dependency must be a quick 503, not a hang"
    finally:
        api.close()


def test_after_the_retry_after_wait_the_same_bytes_are_accepted(redis_url: str) -> None:
    """A 429 gives the nonce back: nothing was done, so the identical request is no replay."""
    api = make_harness(redis_url, submit_rate_per_second=20, submit_burst=1)
    try:
        assert api.submit(TEXT).status_code == 200
        body = body_of(_text(unique_id()))
        params = api.params(body)
        refused = api.submit(body, params=params)
        assert refused.status_code == 429
        time.sleep(0.06)
        accepted = api.submit(body, params=params)
        assert accepted.status_code == 200, accepted.text
    finally:
        api.close()


def test_the_same_signed_request_twice_is_a_replay_and_queues_nothing(api: Harness) -> None:
    body = body_of(_text(unique_id()))
    params = api.params(body)
    assert api.submit(body, params=params).status_code == 200
    queued, records = api.queued(), api.record_count()
    replayed = api.submit(body, params=params)
    assert replayed.status_code == 401
    assert replayed.json()["message"] == "authentication failed"
    assert (api.queued(), api.record_count()) == (queued, records)


def test_rate_limit_is_per_client(redis_url: str) -> None:
    api = make_harness(redis_url, submit_rate_per_second=0.01, submit_burst=1)
    try:
        assert api.submit(TEXT, client="c1").status_code == 200
        assert api.submit(TEXT, client="c1").status_code == 429
        assert api.submit(TEXT, client="c2").status_code == 200
    finally:
        api.close()


def test_broker_down_removes_the_record_and_gives_the_nonce_back(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=dead_redis_url())
    try:
        message_id = unique_id()
        body = body_of(_text(message_id))
        params = api.params(body)
        assert api.submit(body, params=params).status_code == 503
        assert not api.has_record(message_id)
        assert not api.redis.exists(keys.replay_guard("c1", params["nonce"]))
    finally:
        api.close()


# ---------------------------------------------------------------------------
# docs/reliability.md "Bad input", at the API


def _video(**info: Any) -> dict[str, Any]:
    return {
        "messageType": 4,
        "from": "a",
        "to": "b",
        "messageInfo": {"videoMessage": "clip.mp4", **info},
    }


BAD_INPUT: dict[str, tuple[Any, int, set[str]]] = {
    "not JSON": (b"{'messageType': 1}", 400, {"body"}),
    "empty body": (b"", 400, {"body"}),
    "JSON array": (b"[1, 2]", 400, {"body"}),
    "JSON string": (b'"hello"', 400, {"body"}),
    "JSON null": (b"null", 400, {"body"}),
    "NaN is not JSON": (
        b'{"messageType":5,"from":"a","to":"b","messageInfo":{"latitude":NaN,"longitude":1,"address":"x"}}',
        400,
        {"body"},
    ),
    "invalid UTF-8": (
        b'{"messageType":1,"from":"a","to":"b","messageInfo":{"textMessage":"\xff\xfe"}}',
        400,
        {"body"},
    ),
    "UTF-16 body": ('{"messageType":1}'.encode("utf-16"), 400, {"body"}),
    "unpaired surrogate escape": (
        b'{"messageType":1,"from":"a","to":"b","messageInfo":{"textMessage":"\\ud800"}}',
        400,
        {"body"},
    ),
    "nested too deeply": (
        b'{"messageType":1,"from":"a","to":"b","messageInfo":{"textMessage":"x"},"ext":{"k":'
        + b"[" * 100_000
        + b"]" * 100_000
        + b"}}",
        413,
        {"body"},
    ),
    "missing required fields": ({}, 400, {"messageType", "from", "to", "messageInfo"}),
    "mistyped required fields": (
        {"messageType": "one", "from": 5, "to": [], "messageInfo": "x"},
        400,
        {"messageType", "from", "to", "messageInfo"},
    ),
    "messageType 0": ({**TEXT, "messageType": 0}, 400, {"messageType"}),
    "messageType 11": ({**TEXT, "messageType": 11}, 400, {"messageType"}),
    "messageType true": ({**TEXT, "messageType": True}, 400, {"messageType"}),
    "messageInfo of another type": (
        _video(textMessage="hi") | {"messageInfo": {"textMessage": "hi"}},
        400,
        {"messageInfo.videoMessage", "messageInfo.textMessage"},
    ),
    "video key not mp4": (_video(videoMessage="clip.avi"), 400, {"messageInfo.videoMessage"}),
    "thumbnail key not jpg": (_video(thumbMessage="thumb.png"), 400, {"messageInfo.thumbMessage"}),
    "image key not an image": (
        {"messageType": 2, "from": "a", "to": "b", "messageInfo": {"imageMessage": "a.bmp"}},
        400,
        {"messageInfo.imageMessage"},
    ),
    "voice key not audio": (
        {"messageType": 3, "from": "a", "to": "b", "messageInfo": {"voiceMessage": "a.wav"}},
        400,
        {"messageInfo.voiceMessage"},
    ),
    "video of 10 MiB": (_video(fileLength=10 * 1024 * 1024), 400, {"messageInfo.fileLength"}),
    "thumbnail over 64 KiB": (_video(thumbFileLength=65537), 400, {"messageInfo.thumbFileLength"}),
    "coordinates out of range": (
        {
            "messageType": 5,
            "from": "a",
            "to": "b",
            "messageInfo": {"latitude": 90.5, "longitude": -180.5, "address": "x"},
        },
        400,
        {"messageInfo.latitude", "messageInfo.longitude"},
    ),
    "template content not JSON": (
        {
            "messageType": 9,
            "from": "a",
            "to": "b",
            "messageInfo": {"textMessage": "t"},
            "ext": {"template": {"templetId": 1, "content": "{oops"}},
        },
        400,
        {"ext.template.content"},
    ),
    "expandMsg Content not JSON": (
        {
            "messageType": 10,
            "from": "a",
            "to": "b",
            "messageInfo": {"textMessage": "t"},
            "ext": {"expandMsg": {"MsgType": "card", "Content": "nope"}},
        },
        400,
        {"ext.expandMsg.Content"},
    ),
    "template message without template": (
        {"messageType": 9, "from": "a", "to": "b", "messageInfo": {"textMessage": "t"}},
        400,
        {"ext.template"},
    ),
    "Easemob body over the provider limit": (
        {**TEXT, "messageInfo": {"textMessage": "x" * 3000}, "ext": {"blob": "x" * 3000}},
        413,
        {"body"},
    ),
    "ext alone over the provider limit": ({**TEXT, "ext": {"blob": "x" * 6000}}, 413, {"ext"}),
    "request body over 64 KiB": ({**TEXT, "ext": {"blob": "x" * 70_000}}, 413, {"body"}),
    "getMessageId with a dash": ({**TEXT, "getMessageId": "abc-123"}, 400, {"getMessageId"}),
    "getMessageId with a space": ({**TEXT, "getMessageId": "abc 123"}, 400, {"getMessageId"}),
    "getMessageId non-ASCII": ({**TEXT, "getMessageId": "abcé"}, 400, {"getMessageId"}),
    "getMessageId of 65 chars": ({**TEXT, "getMessageId": "a" * 65}, 400, {"getMessageId"}),
    "media URL off the Qiniu domain": (
        _video(fileUrl="http://169.254.169.254/latest/meta-data"),
        400,
        {"messageInfo.fileUrl"},
    ),
    "media URL not http": (_video(fileUrl="file:///etc/passwd"), 400, {"messageInfo.fileUrl"}),
    "channelType not registered": ({**TEXT, "channelType": 3}, 400, {"channelType"}),
    "reserved ext key": ({**TEXT, "ext": {"dispatcher": {"getMessageId": "x"}}}, 400, {"ext"}),
    "unknown top-level field": ({**TEXT, "urgency": "high"}, 400, {"urgency"}),
    "priority not known": ({**TEXT, "priority": "urgent"}, 400, {"priority"}),
}


@pytest.mark.parametrize("name", list(BAD_INPUT))
def test_bad_input_gets_a_4xx_naming_the_field_and_leaves_no_trace(api: Harness, name: str) -> None:
    payload, code, fields = BAD_INPUT[name]
    queued, records = api.queued(), api.record_count()
    response = api.submit(payload)
    assert response.status_code == code, response.text
    assert fields <= set(field_errors(response)), response.json()["data"]
    assert api.queued() == queued
    assert api.record_count() == records
    if isinstance(payload, dict) and isinstance(payload.get("getMessageId"), str):
        assert not api.has_record(payload["getMessageId"])


def test_deep_but_in_limit_nesting_is_a_clean_answer(api: Harness) -> None:
    """Nesting that json accepts must not blow up validation or the size check."""
    for depth in (500, 5000):
        nested = b"[" * depth + b"]" * depth
        body = (
            b'{"messageType":1,"from":"a","to":"b","messageInfo":{"textMessage":"x"},"ext":{"k":'
            + nested
            + b"}}"
        )
        response = api.submit(body)
        assert response.status_code in (200, 400), (depth, response.text)
