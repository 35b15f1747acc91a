"""Pure mapping and classification of the Easemob channel: no servers needed."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from dispatcher.channels.easemob import (
    body_size,
    build_body,
    check_size,
    classify,
    retry_after_seconds,
    transport_error,
)
from dispatcher.channels.http import encode_body
from dispatcher.errors import MediaError, MessageTooLarge
from dispatcher.models import parse_message

DOMAIN = "http://cdn.example.com"


def message(message_type: int, info: dict[str, Any], **extra: Any) -> Any:
    return parse_message(
        {"messageType": message_type, "from": "alice", "to": "bob", "messageInfo": info, **extra},
        media_domain=DOMAIN,
    )


def test_text_body_is_the_classic_shape_with_our_id_in_ext() -> None:
    body = build_body("m0abc", message(1, {"textMessage": "hi"}, ext={"chatType": "WX"}))
    assert body == {
        "target_type": "users",
        "target": ["bob"],
        "msg": {"type": "txt", "msg": "hi"},
        "from": "alice",
        "ext": {"chatType": "WX", "dispatcher": {"getMessageId": "m0abc"}},
    }


def test_explicit_target_type_wins_over_the_digits_rule() -> None:
    body = build_body("m", message(1, {"textMessage": "hi"}, to="12345", targetType="chatrooms"))
    assert body["target_type"] == "chatrooms"


def test_location_coordinates_are_strings() -> None:
    body = build_body("m", message(5, {"latitude": 39.966, "longitude": 116, "address": "x"}))
    assert body["msg"] == {"type": "loc", "lat": "39.966", "lng": "116", "addr": "x"}


def test_video_without_resolved_fields_cannot_be_mapped() -> None:
    with pytest.raises(MediaError) as caught:
        build_body("m", message(4, {"videoMessage": "v.mp4"}))
    assert caught.value.code == "media_unresolved"
    assert caught.value.retryable is False


def test_extension_maps_expand_msg_to_custom_event() -> None:
    msg = build_body(
        "m",
        message(
            10,
            {"textMessage": "fallback"},
            ext={"expandMsg": {"MsgType": "order/v1", "Content": "{}"}},
        ),
    )["msg"]
    assert msg == {"type": "custom", "customEvent": "order/v1", "customExts": {"content": "{}"}}


def test_encoding_keeps_unicode_unescaped() -> None:
    assert encode_body({"m": "你好👋"}) == '{"m":"你好👋"}'.encode()


def test_size_check_counts_worst_case_media_urls_before_resolution() -> None:
    video = message(4, {"videoMessage": "v.mp4"})
    assert body_size("m", video) > 2 * 256
    check_size("m", video, 5120)
    big = message(1, {"textMessage": "字" * 2000})  # 6000 bytes of UTF-8
    with pytest.raises(MessageTooLarge) as caught:
        check_size("m", big, 5120)
    assert "5120" in caught.value.errors[0].error


@pytest.mark.parametrize(
    ("status", "body", "retryable"),
    [
        (429, {"error": "reach_limit"}, True),
        (
            403,
            {
                "error": "forbidden_op",
                "error_description": "Forbidden for url: [...] message limit",
            },
            True,
        ),
        (403, {"error": "forbidden_op", "error_description": "user is not in group"}, False),
        (500, None, True),
        (503, {"error": "x"}, True),
        (400, {"error": "illegal_argument", "error_description": "from can't be empty"}, False),
        (404, {"error": "organization_application_not_found"}, False),
        (413, {"error": "Request Entity Too Large"}, False),
        (415, {"error": "web_application"}, False),
    ],
)
def test_classification_follows_the_delivery_rules(status: int, body: Any, retryable: bool) -> None:
    error = classify(status, body, {})
    assert error.retryable is retryable
    assert str(status) in error.message


def test_retry_after_header_is_honoured_in_seconds_or_as_a_date() -> None:
    assert classify(429, {"error": "reach_limit"}, {"retry-after": "7"}).retry_after == 7
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0
    assert retry_after_seconds("soon") is None


def test_connect_failures_are_not_ambiguous_but_lost_responses_are() -> None:
    request = httpx.Request("POST", "http://x")
    assert transport_error(httpx.ConnectError("no", request=request)).ambiguous is False
    lost = transport_error(httpx.ReadTimeout("slow", request=request))
    assert lost.ambiguous is True and lost.retryable is True
