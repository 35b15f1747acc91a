"""Hardened input (docs/security.md), over HTTP and from the Python producer: every refusal
is a 400 naming the field and leaves nothing in Redis."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.api.paths import STATUS_MANY
from dispatcher.errors import InvalidMessage
from dispatcher.producer import Dispatcher
from tests.seed import SEED_BODY
from tests.unit.test_api_support import TEXT, Harness, field_errors, make_harness, unique_id


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url, qiniu_domain="http://media.example.com")
    yield harness
    harness.close()


# ---------------------------------------------------------------------------
# Hardened input, over HTTP and from the producer: 400 naming the field, nothing kept


def _text_with(**fields: Any) -> dict[str, Any]:
    return {**TEXT, "getMessageId": unique_id(), **fields}


def _ext_nested(levels: int) -> dict[str, Any]:
    ext: dict[str, Any] = {"leaf": "x"}
    for _ in range(levels - 1):
        ext = {"k": ext}
    return ext


def _image(key: str) -> dict[str, Any]:
    return _text_with(messageType=2, messageInfo={"imageMessage": key})


def _news(**info: str) -> dict[str, Any]:
    return _text_with(messageType=7, messageInfo={"title": "t", "url": "https://e.com/", **info})


HARDENING: dict[str, tuple[dict[str, Any], str]] = {
    "NUL in from": (_text_with(**{"from": "u\x00evil"}), "from"),
    "unit separator in to": (_text_with(to="u\x1f2"), "to"),
    "escape in to": (_text_with(to="u\x1b[31m"), "to"),
    "NUL in getMessageId": (_text_with(getMessageId="abc\x00def"), "getMessageId"),
    "bell in textMessage": (
        _text_with(messageInfo={"textMessage": "ding\x07"}),
        "messageInfo.textMessage",
    ),
    "ext 17 levels deep": (_text_with(ext=_ext_nested(17)), "ext"),
    "ext 800 levels deep": (_text_with(ext=_ext_nested(800)), "ext"),
    "media key with ..": (_image("x/../pic.jpg"), "messageInfo.imageMessage"),
    "media key with leading /": (_image("/pic.jpg"), "messageInfo.imageMessage"),
    "media key with backslash": (_image("x\\..\\pic.jpg"), "messageInfo.imageMessage"),
    "media key with empty segment": (_image("x//pic.jpg"), "messageInfo.imageMessage"),
    "media key with . segment": (_image("./pic.jpg"), "messageInfo.imageMessage"),
    "news url javascript:": (_news(url="javascript:alert(1)"), "messageInfo.url"),
    "news url data:": (_news(url="data:text/html,hi"), "messageInfo.url"),
    "news url relative": (_news(url="/local/page"), "messageInfo.url"),
    "news picUrl file:": (_news(picUrl="file:///etc/passwd"), "messageInfo.picUrl"),
    "news url with a newline": (_news(url="https://e.com/\nx"), "messageInfo.url"),
}


@pytest.mark.parametrize("case", list(HARDENING))
def test_hardened_input_is_400_over_http_naming_the_field(api: Harness, case: str) -> None:
    payload, field = HARDENING[case]
    queued, records = api.queued(), api.record_count()
    response = api.submit(payload)
    assert response.status_code == 400, response.text
    assert field in field_errors(response), field_errors(response)
    assert (api.queued(), api.record_count()) == (queued, records)
    assert not api.has_record(payload["getMessageId"])


@pytest.mark.parametrize("case", list(HARDENING))
def test_hardened_input_is_refused_by_the_producer_naming_the_field(
    api: Harness, case: str
) -> None:
    payload, field = HARDENING[case]
    producer = Dispatcher(api.settings)
    queued, records = api.queued(), api.record_count()
    try:
        with pytest.raises(InvalidMessage) as refused:
            producer.submit(payload, client="c1")
    finally:
        producer.close()
    assert field in {e.field for e in refused.value.errors}
    assert (api.queued(), api.record_count()) == (queued, records)
    assert not api.has_record(payload["getMessageId"])


def test_ext_16_levels_deep_and_tabs_and_newlines_in_text_are_accepted(api: Harness) -> None:
    payload = _text_with(ext=_ext_nested(16), messageInfo={"textMessage": "a\tb\r\nc"})
    response = api.submit(payload)
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (
            b'{"messageType":1,"from":"u1","to":"u2","to":"u3","messageInfo":{"textMessage":"x"}}',
            "to",
        ),
        (
            b'{"messageType":1,"from":"u1","to":"u2","messageInfo":'
            b'{"textMessage":"a","textMessage":"b"}}',
            "messageInfo.textMessage",
        ),
        (
            b'{"messageType":1,"from":"u1","to":"u2","messageInfo":{"textMessage":"x"},'
            b'"ext":{"list":[{"k":1,"k":2}]}}',
            "ext.list.0.k",
        ),
    ],
)
def test_duplicate_json_keys_are_400_naming_the_key(api: Harness, body: bytes, field: str) -> None:
    queued, records = api.queued(), api.record_count()
    response = api.submit(body)
    assert response.status_code == 400, response.text
    assert field_errors(response) == {field: "is given more than once"}
    assert (api.queued(), api.record_count()) == (queued, records)


def test_duplicate_keys_in_a_status_query_are_400_too(api: Harness) -> None:
    body = b'{"getMessageIds":["a1"],"getMessageIds":["b2"]}'
    params = api.params(body, path=STATUS_MANY)
    response = api.http.post(STATUS_MANY, params=params, content=body)
    assert response.status_code == 400
    assert field_errors(response) == {"getMessageIds": "is given more than once"}


def test_the_seeds_body_is_still_accepted(api: Harness) -> None:
    assert api.submit(SEED_BODY).status_code == 200
