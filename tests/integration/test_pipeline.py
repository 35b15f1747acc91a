"""End to end on real parts: producer -> Redis -> Celery worker process -> Easemob simulator."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from tests.conftest import EASEMOB_APP, EASEMOB_ORG, wait_for_state

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def sent_bodies(easemob: Any, message_id: str) -> list[dict[str, Any]]:
    return [
        entry["json"]
        for entry in easemob.requests(MESSAGES_PATH)
        if entry["path"] == MESSAGES_PATH
        and (entry["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        == message_id
    ]


def place(qiniu: Any, key: str, **meta: Any) -> None:
    httpx.put(f"{qiniu.url}/_sandbox/objects/{key}", json=meta, timeout=10).raise_for_status()


def media_cases(domain: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    return [
        (
            {
                "messageType": 2,
                "messageInfo": {
                    "imageMessage": "cat.png",
                    "fileUrl": f"{domain}/cat.png",
                    "fileLength": 2048,
                    "imageWidth": 640,
                    "imageHeight": 480,
                },
            },
            {
                "type": "img",
                "url": f"{domain}/cat.png",
                "filename": "cat.png",
                "size": {"width": 640, "height": 480},
            },
        ),
        (
            {
                "messageType": 3,
                "messageInfo": {
                    "voiceMessage": "hello.amr",
                    "fileUrl": f"{domain}/hello.amr",
                    "fileLength": 4096,
                    "duration": 7,
                },
            },
            {"type": "audio", "url": f"{domain}/hello.amr", "filename": "hello.amr", "length": 7},
        ),
        (
            {
                "messageType": 4,
                "messageInfo": {
                    "videoMessage": "clip.mp4",
                    "thumbMessage": "clip.jpg",
                    "fileUrl": f"{domain}/clip.mp4",
                    "fileLength": 1_000_000,
                    "duration": 12,
                    "thumbFileUrl": f"{domain}/clip.jpg",
                    "thumbFileLength": 5000,
                    "imageWidth": 320,
                    "imageHeight": 240,
                },
            },
            {
                "type": "video",
                "url": f"{domain}/clip.mp4",
                "filename": "clip.mp4",
                "thumb": f"{domain}/clip.jpg",
                "length": 12,
                "file_length": 1_000_000,
            },
        ),
    ]


PLAIN_CASES: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = [
    (
        {"messageType": 1, "messageInfo": {"textMessage": "你好 👋 مرحبا\u200b"}},
        {},
        {"type": "txt", "msg": "你好 👋 مرحبا\u200b"},
    ),
    (
        {
            "messageType": 5,
            "messageInfo": {"latitude": 39.966, "longitude": 116.322, "address": "北京"},
        },
        {},
        {"type": "loc", "lat": "39.966", "lng": "116.322", "addr": "北京"},
    ),
    (
        {"messageType": 6, "messageInfo": {"action": "refresh_inbox"}},
        {},
        {"type": "cmd", "action": "refresh_inbox"},
    ),
    (
        {
            "messageType": 7,
            "messageInfo": {
                "title": "News",
                "url": "https://example.com/n/1",
                "picUrl": "https://example.com/p.jpg",
            },
        },
        {},
        {
            "type": "custom",
            "customEvent": "news",
            "customExts": {
                "title": "News",
                "url": "https://example.com/n/1",
                "picUrl": "https://example.com/p.jpg",
            },
        },
    ),
    (
        {
            "messageType": 8,
            "messageInfo": {"title": "Deal", "url": "https://example.com/d", "price": "9.90"},
        },
        {},
        {
            "type": "custom",
            "customEvent": "customNews",
            "customExts": {"title": "Deal", "url": "https://example.com/d", "price": "9.90"},
        },
    ),
    (
        {"messageType": 9, "messageInfo": {"textMessage": "Your order shipped"}},
        {"template": {"templetId": 42, "content": '{"order": "A1"}'}},
        {"type": "txt", "msg": "Your order shipped"},
    ),
    (
        {"messageType": 10, "messageInfo": {"textMessage": "Card"}},
        {"expandMsg": {"MsgType": "card", "Content": '{"id": 7}'}},
        {"type": "custom", "customEvent": "card", "customExts": {"content": '{"id": 7}'}},
    ),
]


def test_every_message_type_is_delivered_with_the_prescribed_easemob_body(
    dispatcher: Any, easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    start_worker()
    cases: list[tuple[dict[str, Any], dict[str, Any], dict[str, Any]]] = list(PLAIN_CASES)
    place(qiniu_sim, "cat.png", fsize=2048, mimeType="image/png", width=640, height=480)
    place(qiniu_sim, "hello.amr", fsize=4096, mimeType="audio/amr", duration=7)
    place(
        qiniu_sim,
        "clip.mp4",
        fsize=1_000_000,
        mimeType="video/mp4",
        duration=12,
        width=320,
        height=240,
    )
    place(qiniu_sim, "clip.jpg", fsize=5000, mimeType="image/jpeg", width=320, height=240)
    cases += [(payload, {}, msg) for payload, msg in media_cases(qiniu_sim.url)]

    submitted = []
    for index, (payload, ext, expected_msg) in enumerate(cases):
        body = {
            "from": "u_sender",
            "to": f"u_receiver{index}",
            **payload,
            "ext": {"chatType": "WX", **ext},
        }
        submitted.append((dispatcher.submit(body), body, expected_msg))

    for message_id, body, expected_msg in submitted:
        record = wait_for_state(dispatcher, message_id)
        assert record.state == "delivered", (body, record.lastError, record.history)
        assert record.attempts == 1
        [sent] = sent_bodies(easemob, message_id)
        assert sent == {
            "target_type": "users",
            "target": [body["to"]],
            "msg": expected_msg,
            "from": "u_sender",
            "ext": {**body["ext"], "dispatcher": {"getMessageId": message_id}},
        }
        assert record.providerMessageId and record.providerMessageId.isdigit()
        assert [h.state for h in record.history] == ["queued", "processing", "delivered"]


def test_unicode_reaches_the_provider_byte_for_byte(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    text = "emoji 🧪👩\u200d💻 RTL שלום zero\u200bwidth 𝔘𝔫𝔦"
    message_id = dispatcher.submit(
        {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": text}}
    )
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered"
    bodies = sent_bodies(easemob, message_id)
    assert len(bodies) == 1, record.history
    sent = bodies[0]
    assert sent["msg"]["msg"] == text
    assert (
        json.dumps(sent["msg"]["msg"], ensure_ascii=False).encode()
        == json.dumps(text, ensure_ascii=False).encode()
    )


def test_group_id_recipient_is_sent_as_chatgroups(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    start_worker()
    message_id = dispatcher.submit(
        {
            "messageType": 1,
            "from": "a",
            "to": "148992289019003396",
            "messageInfo": {"textMessage": "hi"},
        }
    )
    assert wait_for_state(dispatcher, message_id).state == "delivered"
    [sent] = sent_bodies(easemob, message_id)
    assert sent["target_type"] == "chatgroups"
    assert sent["target"] == ["148992289019003396"]
