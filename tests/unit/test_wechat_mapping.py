"""Our messages as WeChat bodies, and what the WeChat channel refuses at submit (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from dispatcher.channels.wechat_config import WeChatConfig, WindowFallback
from dispatcher.channels.wechat_mapping import (
    IMAGE,
    SUPPORTED_TYPES,
    THUMB,
    VIDEO,
    VOICE,
    check_message,
    custom_body,
    fallback_body,
    media_needs,
    refusal,
    summary,
    template_body,
    template_data,
)
from dispatcher.errors import InvalidMessage, MediaError, MessageTooLarge
from dispatcher.models import Message, MessageType, parse_message

OPENID = "oSandboxUser0000000000000001"
TEMPLATES = {"1001": "TPL-ORDER"}


def message(message_type: int, info: dict[str, Any], **extra: Any) -> Message:
    payload = {"messageType": message_type, "from": "svc", "to": OPENID, "messageInfo": info}
    return parse_message({**payload, **extra})


def template_message(content: Any, templet_id: int = 1001) -> Message:
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    return message(
        9,
        {"textMessage": "订单已发货"},
        ext={"template": {"templetId": templet_id, "content": text}},
    )


def test_text() -> None:
    assert custom_body(message(1, {"textMessage": "你好"}), {}) == {
        "touser": OPENID,
        "msgtype": "text",
        "text": {"content": "你好"},
    }


@pytest.mark.parametrize(("kind", "key"), [("image", "a/b.png"), ("voice", "v.mp3")])
def test_image_and_voice_point_at_uploaded_media(kind: str, key: str) -> None:
    info = {f"{kind}Message": key}
    msg = message(2 if kind == "image" else 3, info)
    [need] = media_needs(msg)
    assert (need.role, need.key, need.limit) == ("media", key, IMAGE if kind == "image" else VOICE)
    assert custom_body(msg, {"media": "MID"}) == {
        "touser": OPENID,
        "msgtype": kind,
        kind: {"media_id": "MID"},
    }


def test_video_with_thumbnail_title_and_description() -> None:
    msg = message(
        4,
        {"videoMessage": "v.mp4", "thumbMessage": "t.jpg", "title": "T", "description": "D"},
    )
    needs = media_needs(msg)
    assert [(n.role, n.key, n.limit) for n in needs] == [
        ("media", "v.mp4", VIDEO),
        ("thumb", "t.jpg", THUMB),
    ]
    assert needs[0].upload_name == "video.mp4" and needs[1].upload_name == "thumb.jpg"
    assert custom_body(msg, {"media": "V", "thumb": "T1"}) == {
        "touser": OPENID,
        "msgtype": "video",
        "video": {"media_id": "V", "thumb_media_id": "T1", "title": "T", "description": "D"},
    }


def test_video_without_a_named_thumbnail_sends_none() -> None:
    msg = message(4, {"videoMessage": "v.mp4"})
    assert [n.role for n in media_needs(msg)] == ["media"]
    assert custom_body(msg, {"media": "V"})["video"] == {"media_id": "V"}


def test_a_body_without_its_media_id_is_a_bug_not_a_send() -> None:
    with pytest.raises(MediaError):
        custom_body(message(2, {"imageMessage": "a.jpg"}), {})


@pytest.mark.parametrize("message_type", [7, 8])
def test_news_and_custom_news_are_one_article(message_type: int) -> None:
    info = {"title": "标题", "description": "D", "url": "https://e.x/a", "picUrl": "https://e.x/p"}
    if message_type == 8:
        info["extra"] = "dropped"
    assert custom_body(message(message_type, info), {}) == {
        "touser": OPENID,
        "msgtype": "news",
        "news": {
            "articles": [
                {
                    "title": "标题",
                    "url": "https://e.x/a",
                    "description": "D",
                    "picurl": "https://e.x/p",
                }
            ]
        },
    }
    bare = custom_body(message(message_type, {"title": "t", "url": "https://e.x/u"}), {})
    assert bare["news"]["articles"] == [{"title": "t", "url": "https://e.x/u"}]


def test_template_message() -> None:
    msg = template_message(
        {
            "first": "您好",
            "amount": 12.5,
            "urgent": True,
            "remark": {"value": "谢谢", "color": "#173177"},
        }
    )
    assert template_body("m0-7", msg, TEMPLATES) == {
        "touser": OPENID,
        "template_id": "TPL-ORDER",
        "data": {
            "first": {"value": "您好"},
            "amount": {"value": "12.5"},
            "urgent": {"value": "true"},
            "remark": {"value": "谢谢", "color": "#173177"},
        },
        "client_msg_id": "m0-7",
    }


@pytest.mark.parametrize(
    "content",
    [
        '["a"]',
        "{}",
        '"text"',
        {"a": ["x"]},
        {"a": {"color": "#fff"}},
        {"a": {"value": "x", "b": 1}},
    ],
)
def test_template_content_wechat_cannot_take(content: Any) -> None:
    text = content if isinstance(content, str) else json.dumps(content)
    with pytest.raises(ValueError):
        template_data(text)
    with pytest.raises(InvalidMessage) as raised:
        check_message(template_message(text), TEMPLATES)
    assert [e.field for e in raised.value.errors] == ["ext.template.content"]


def test_unmapped_templet_id_is_refused_at_submit_and_send() -> None:
    msg = template_message({"first": "x"}, templet_id=2002)
    with pytest.raises(InvalidMessage) as raised:
        check_message(msg, TEMPLATES)
    assert raised.value.errors[0].field == "ext.template.templetId"
    assert "2002" in raised.value.errors[0].error
    with pytest.raises(InvalidMessage):
        template_body("m0-1", msg, TEMPLATES)


@pytest.mark.parametrize(
    ("message_type", "info", "ext"),
    [
        (5, {"latitude": 1.0, "longitude": 2.0, "address": "x"}, None),
        (6, {"action": "refresh"}, None),
        (10, {"textMessage": "x"}, {"expandMsg": {"MsgType": "card", "Content": "{}"}}),
    ],
)
def test_location_pass_through_and_extension_are_not_carried(
    message_type: int, info: dict[str, Any], ext: Any
) -> None:
    msg = message(message_type, info, **({"ext": ext} if ext else {}))
    assert MessageType(message_type) not in SUPPORTED_TYPES
    reason = refusal(MessageType(message_type))
    assert reason is not None and "wechat" in reason and str(message_type) in reason
    with pytest.raises(InvalidMessage) as raised:
        check_message(msg, TEMPLATES)
    assert raised.value.errors[0].field == "messageType"
    with pytest.raises(TypeError):
        custom_body(msg, {})


def test_supported_types_pass_the_submit_check() -> None:
    for msg in (
        message(1, {"textMessage": "字" * 682}),
        message(2, {"imageMessage": "a.jpeg", "fileLength": 2 * 1024 * 1024}),
        message(3, {"voiceMessage": "a.amr"}),
        message(4, {"videoMessage": "a.mp4", "thumbMessage": "t.jpg", "thumbFileLength": 65536}),
        message(7, {"title": "t", "url": "https://e.x/u"}),
        template_message({"first": "x"}),
    ):
        check_message(msg, TEMPLATES)
        assert refusal(msg.messageType) is None


@pytest.mark.parametrize(
    ("message_type", "info", "field", "error_type"),
    [
        (1, {"textMessage": "字" * 683}, "messageInfo.textMessage", MessageTooLarge),
        (2, {"imageMessage": "a.gif"}, "messageInfo.imageMessage", InvalidMessage),
        (2, {"imageMessage": "a.jpg", "fileLength": 2 * 1024 * 1024 + 1}, "messageInfo.imageMessage", MessageTooLarge),
        (3, {"voiceMessage": "a.aac"}, "messageInfo.voiceMessage", InvalidMessage),
    ],
)  # fmt: skip
def test_wechat_limits_differ_from_easemobs(
    message_type: int, info: dict[str, Any], field: str, error_type: type[Exception]
) -> None:
    with pytest.raises(InvalidMessage) as raised:
        check_message(message(message_type, info), TEMPLATES)
    assert type(raised.value) is error_type
    assert raised.value.errors[0].field == field


def test_summary_and_fallback_body() -> None:
    fallback = WindowFallback(
        template_id="TPL-MISSED", data={"first": "您有一条新消息：{text}", "remark": "请查看"}
    )
    assert fallback_body("m0-9", message(1, {"textMessage": "在吗"}), fallback) == {
        "touser": OPENID,
        "template_id": "TPL-MISSED",
        "data": {"first": {"value": "您有一条新消息：在吗"}, "remark": {"value": "请查看"}},
        "client_msg_id": "m0-9",
    }
    with_url = fallback.model_copy(update={"url": "https://e.x/inbox"})
    assert fallback_body("m0-9", message(1, {"textMessage": "x"}), with_url)["url"] == (
        "https://e.x/inbox"
    )
    assert summary(message(2, {"imageMessage": "a.jpg"})) == "[image]"
    assert summary(message(4, {"videoMessage": "a.mp4", "title": "Clip"})) == "Clip"
    assert summary(message(7, {"title": "News", "url": "https://e.x/u"})) == "News"
    long = summary(message(1, {"textMessage": "x" * 500}))
    assert len(long) == 200 and long.endswith("…")


def test_config_validation() -> None:
    config = WeChatConfig(
        appid="wx1", secret="s", base_url="http://127.0.0.1:9103/", daily_quotas={"custom_send": 5}
    )
    assert config.base_url == "http://127.0.0.1:9103"
    assert config.daily_quotas == {
        "custom_send": 5,
        "template_send": 100_000,
        "media_upload": 100_000,
    }
    assert "s" not in repr(config.secret)
    for bad in (
        {"templates": {"abc": "TPL"}},
        {"templates": {"1": ""}},
        {"daily_quotas": {"sends": 1}},
        {"timezone": "Mars/Base"},
        {"appid": "wx 1"},
    ):
        with pytest.raises(ValidationError):
            WeChatConfig.model_validate({"appid": "wx1", "secret": "s", **bad})
