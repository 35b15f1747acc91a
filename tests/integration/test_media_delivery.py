"""Media end to end: real Redis + worker process + Easemob and Qiniu simulators."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from dispatcher.errors import InvalidMessage
from dispatcher.sandbox.qiniu import seed_demo_objects
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, wait_for_state
from tests.seed import SEED_VIDEO, seed_payload

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def place(qiniu: Any, key: str, **meta: Any) -> None:
    httpx.put(f"{qiniu.url}/_sandbox/objects/{key}", json=meta, timeout=10).raise_for_status()


def sent_msgs(easemob: Any, message_id: str) -> list[dict[str, Any]]:
    return [
        entry["json"]["msg"]
        for entry in easemob.requests(MESSAGES_PATH)
        if (entry["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        == message_id
    ]


def test_seed_example_with_only_the_video_key_is_delivered_with_resolved_media(
    dispatcher: Any, easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    place(
        qiniu_sim,
        SEED_VIDEO,
        fsize=3_145_728,
        mimeType="video/mp4",
        duration=15.2,
        width=640,
        height=360,
    )
    start_worker()
    message_id = dispatcher.submit(seed_payload())
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered", record.history
    [msg] = sent_msgs(easemob, message_id)
    assert msg == {
        "type": "video",
        "url": f"{qiniu_sim.url}/{SEED_VIDEO}",
        "filename": SEED_VIDEO,
        "thumb": f"{qiniu_sim.url}/{SEED_VIDEO}?vframe/jpg/offset/0",
        "length": 16,
        "file_length": 3_145_728,
    }


def test_video_with_a_thumbnail_key_uses_the_thumbnail_url(
    dispatcher: Any, easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    demo = seed_demo_objects(qiniu_sim.app)  # real MP4 and JPEG bytes
    assert "demo.mp4" in demo and "demo.jpg" in demo
    start_worker()
    message_id = dispatcher.submit(seed_payload("demo.mp4", thumbMessage="demo.jpg"))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered", record.history
    [msg] = sent_msgs(easemob, message_id)
    stat = httpx.get(f"{qiniu_sim.url}/demo.mp4?avinfo", timeout=10).json()
    assert msg["url"] == f"{qiniu_sim.url}/demo.mp4"
    assert msg["thumb"] == f"{qiniu_sim.url}/demo.jpg"
    assert msg["length"] == 5
    assert msg["file_length"] == int(stat["format"]["size"])


@pytest.mark.parametrize(
    ("objects", "info", "code"),
    [
        ({"big.mp4": {"fsize": 10 * 1024 * 1024, "duration": 5}}, {}, "media_too_large"),
        (
            {
                "ok.mp4": {"fsize": 1000, "duration": 5},
                "fat.jpg": {"fsize": 65537, "width": 10, "height": 10},
            },
            {"thumbMessage": "fat.jpg"},
            "media_too_large",
        ),
        ({}, {}, "media_not_found"),
    ],
    ids=["video-over-10MiB", "thumbnail-over-64KiB", "missing-key"],
)
def test_media_outside_the_limits_or_missing_fails_without_an_easemob_call(
    dispatcher: Any,
    easemob: Any,
    qiniu_sim: Any,
    start_worker: Any,
    objects: dict[str, dict[str, Any]],
    info: dict[str, Any],
    code: str,
) -> None:
    for key, meta in objects.items():
        place(qiniu_sim, key, mimeType="video/mp4" if key.endswith("mp4") else "image/jpeg", **meta)
    video = next((k for k in objects if k.endswith(".mp4")), f"missing{uuid.uuid4().hex}.mp4")
    start_worker()
    message_id = dispatcher.submit(seed_payload(video, **info))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "failed"
    assert record.attempts == 1
    assert record.lastError is not None and record.lastError.code == code
    assert record.lastError.retryable is False
    assert sent_msgs(easemob, message_id) == []


def test_qiniu_503_twice_then_ok_is_delivered(
    dispatcher: Any, easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    key = f"flaky{uuid.uuid4().hex}.mp4"
    place(qiniu_sim, key, fsize=5000, mimeType="video/mp4", duration=3, width=320, height=240)
    qiniu_sim.fault(path="^/stat/", status=503, body={"error": "service unavailable"}, times=2)
    start_worker()
    message_id = dispatcher.submit(seed_payload(key))
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered", record.history
    assert record.attempts == 3
    assert [h.state for h in record.history].count("retrying") == 2
    assert len(sent_msgs(easemob, message_id)) == 1


def test_a_file_url_on_a_foreign_host_is_rejected_at_submit(dispatcher: Any) -> None:
    queue = dispatcher.settings.queue
    in_flight, queued = dispatcher.store.read.in_flight(), dispatcher.redis.llen(queue)
    body = seed_payload(fileUrl="http://169.254.169.254/latest/meta-data")
    body["getMessageId"] = "foreignUrl" + uuid.uuid4().hex
    with pytest.raises(InvalidMessage) as caught:
        dispatcher.submit(body)
    assert {e.field for e in caught.value.errors} == {"messageInfo.fileUrl"}
    assert dispatcher.status(body["getMessageId"]) is None
    assert dispatcher.store.read.in_flight() == in_flight
    assert dispatcher.redis.llen(queue) == queued
