"""Validation of untrusted message bodies: every broken field is named."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.errors import InvalidMessage
from dispatcher.ids import new_message_id
from dispatcher.models import MessageType, VideoInfo, parse_message
from tests.seed import seed_payload

DOMAIN = "http://cdn.example.com"
SEED_BODY = seed_payload()


def fields_of(payload: Any) -> dict[str, str]:
    with pytest.raises(InvalidMessage) as caught:
        parse_message(payload, media_domain=DOMAIN)
    return {e.field: e.error for e in caught.value.errors}


def text(**overrides: Any) -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "a",
        "to": "b",
        "messageInfo": {"textMessage": "hi"},
        **overrides,
    }


def test_seed_example_body_is_valid_and_targets_a_group() -> None:
    message = parse_message(SEED_BODY)
    assert message.messageType is MessageType.VIDEO
    assert isinstance(message.messageInfo, VideoInfo)
    assert message.messageInfo.videoMessage == "661d21d918d8476c88fc9b90279c400f.mp4"
    assert message.target_type == "chatgroups"


@pytest.mark.parametrize("payload", [[], "text", 3, None, [{"messageType": 1}]])
def test_body_that_is_not_an_object_is_rejected(payload: Any) -> None:
    assert fields_of(payload) == {"body": "must be a JSON object"}


def test_every_missing_required_field_is_listed() -> None:
    errors = fields_of({})
    assert set(errors) == {"messageType", "from", "to", "messageInfo"}
    assert errors["from"] == "is required"


@pytest.mark.parametrize("value", [0, 11, -1, "4", 4.5, True])
def test_message_type_out_of_range_or_mistyped_is_rejected(value: Any) -> None:
    assert "messageType" in fields_of(text(messageType=value))


def test_message_info_of_the_wrong_shape_names_the_missing_and_unknown_fields() -> None:
    errors = fields_of(
        {"messageType": 4, "from": "a", "to": "b", "messageInfo": {"textMessage": "hi"}}
    )
    assert errors["messageInfo.videoMessage"] == "is required"
    assert errors["messageInfo.textMessage"] == "is not a known field"


@pytest.mark.parametrize(
    ("info", "field"),
    [
        ({"videoMessage": "a.avi"}, "messageInfo.videoMessage"),
        ({"videoMessage": "a.mp4", "thumbMessage": "a.png"}, "messageInfo.thumbMessage"),
        ({"videoMessage": "a.mp4", "fileLength": 10485760}, "messageInfo.fileLength"),
        ({"videoMessage": "a.mp4", "thumbFileLength": 65537}, "messageInfo.thumbFileLength"),
        (
            {"videoMessage": "a.mp4", "fileUrl": "http://169.254.169.254/latest"},
            "messageInfo.fileUrl",
        ),
        (
            {"videoMessage": "a.mp4", "thumbFileUrl": "file:///etc/passwd"},
            "messageInfo.thumbFileUrl",
        ),
    ],
)
def test_video_rules_of_the_seed_are_enforced(info: dict[str, Any], field: str) -> None:
    assert field in fields_of({"messageType": 4, "from": "a", "to": "b", "messageInfo": info})


def test_video_limits_accept_the_edges() -> None:
    message = parse_message(
        {
            "messageType": 4,
            "from": "a",
            "to": "b",
            "messageInfo": {
                "videoMessage": "a.MP4",
                "thumbMessage": "a.jpg",
                "fileLength": 10485759,
                "thumbFileLength": 65536,
                "fileUrl": f"{DOMAIN}/a.MP4",
            },
        },
        media_domain=DOMAIN,
    )
    assert message.messageInfo.fileLength == 10485759  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("message_type", "info", "field"),
    [
        (2, {"imageMessage": "a.bmp"}, "messageInfo.imageMessage"),
        (2, {"imageMessage": "a.png", "fileLength": 10485761}, "messageInfo.fileLength"),
        (3, {"voiceMessage": "a.wav"}, "messageInfo.voiceMessage"),
        (3, {"voiceMessage": "a.amr", "duration": 61}, "messageInfo.duration"),
        (3, {"voiceMessage": "a.amr", "fileLength": 2097153}, "messageInfo.fileLength"),
        (5, {"latitude": 91, "longitude": 0, "address": "x"}, "messageInfo.latitude"),
        (5, {"latitude": 0, "longitude": -181, "address": "x"}, "messageInfo.longitude"),
        (5, {"latitude": 0, "longitude": 0}, "messageInfo.address"),
        (6, {"action": ""}, "messageInfo.action"),
        (7, {"title": "t"}, "messageInfo.url"),
        (1, {"textMessage": ""}, "messageInfo.textMessage"),
        (1, {"textMessage": "x" * 5001}, "messageInfo.textMessage"),
    ],
)
def test_type_specific_rules(message_type: int, info: dict[str, Any], field: str) -> None:
    assert field in fields_of(
        {"messageType": message_type, "from": "a", "to": "b", "messageInfo": info}
    )


def test_template_and_extension_need_their_ext_and_json_content() -> None:
    assert "ext.template" in fields_of({**text(), "messageType": 9})
    assert "ext.expandMsg" in fields_of({**text(), "messageType": 10})
    assert "ext.template.content" in fields_of(
        {**text(), "messageType": 9, "ext": {"template": {"templetId": 1, "content": "{not json"}}}
    )
    assert "ext.expandMsg.Content" in fields_of(
        {**text(), "messageType": 10, "ext": {"expandMsg": {"MsgType": "card", "Content": "nope"}}}
    )


def test_ext_keys_are_typed_and_unknown_keys_pass_through() -> None:
    assert "ext.getType" in fields_of(text(ext={"getType": 5}))
    assert "ext.isEnd" in fields_of(text(ext={"isEnd": True}))
    assert "ext.dispatcher" in fields_of(text(ext={"dispatcher": {}})) or "ext" in fields_of(
        text(ext={"dispatcher": {}})
    )
    message = parse_message(text(ext={"em_apns_ext": {"em_push_title": "t"}, "isEnd": "1"}))
    assert message.ext is not None and message.ext.isEnd == "1"
    assert message.ext.model_dump(exclude_unset=True) == {
        "em_apns_ext": {"em_push_title": "t"},
        "isEnd": "1",
    }


@pytest.mark.parametrize("bad_id", ["a-b", "a_b", "", "x" * 65, "ключ", "a b"])
def test_caller_ids_outside_the_alphabet_are_rejected(bad_id: str) -> None:
    assert "getMessageId" in fields_of(text(getMessageId=bad_id))


def test_channel_type_is_a_hint_among_the_registered_channels() -> None:
    assert "channelType" in fields_of(text(channelType=3))
    assert parse_message(text(channelType=2)).channelType == 2
    message = parse_message(text(channelType=1))
    assert "channelType" not in message.stored(), "a hint is not part of the content"


def test_generated_ids_are_prefix_plus_uuid_hex() -> None:
    message_id = new_message_id("m0")
    assert message_id.startswith("m0") and len(message_id) == 34
    int(message_id[2:], 16)
    with pytest.raises(ValueError):
        new_message_id("bad-prefix")


def test_fingerprint_ignores_the_id_and_notices_content() -> None:
    a = parse_message(text(getMessageId="abc"))
    b = parse_message(text(getMessageId="xyz"))
    c = parse_message(text(messageInfo={"textMessage": "other"}))
    assert a.fingerprint() == b.fingerprint() != c.fingerprint()


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: (
            st.lists(children, max_size=4)
            | st.dictionaries(st.text(max_size=12), children, max_size=6)
        ),
        max_leaves=20,
    )
)
def test_arbitrary_json_never_crashes_validation(payload: Any) -> None:
    try:
        parse_message(payload, media_domain=DOMAIN)
    except InvalidMessage as exc:
        assert exc.errors and all(e.field and e.error for e in exc.errors)


@settings(max_examples=200, deadline=None)
@given(
    message_type=st.integers(min_value=1, max_value=10),
    info=st.dictionaries(
        st.sampled_from(
            [
                "textMessage",
                "videoMessage",
                "imageMessage",
                "voiceMessage",
                "fileLength",
                "duration",
                "latitude",
                "longitude",
                "address",
                "action",
                "title",
                "url",
                "fileUrl",
            ]
        ),
        st.none() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
        max_size=5,
    ),
)
def test_typed_but_random_message_info_never_crashes(
    message_type: int, info: dict[str, Any]
) -> None:
    try:
        parse_message(
            {"messageType": message_type, "from": "a", "to": "b", "messageInfo": info},
            media_domain=DOMAIN,
        )
    except InvalidMessage as exc:
        assert exc.errors


def test_lone_surrogates_are_rejected_as_invalid_unicode() -> None:
    assert fields_of(text(messageInfo={"textMessage": "bad \ud800 half"})) == {
        "body": "contains invalid Unicode (a lone surrogate)"
    }
