"""The bad-input list of docs/reliability.md at the Python producer: a named field error, no trace left."""

from __future__ import annotations

from typing import Any

import pytest

from dispatcher.errors import InvalidMessage, MessageTooLarge
from tests.seed import seed_payload

pytestmark = pytest.mark.integration

TEXT = {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": "hi"}}

CASES: list[tuple[str, Any, str]] = [
    ("not an object", ["messageType", 1], "body"),
    ("missing required field", {k: v for k, v in TEXT.items() if k != "to"}, "to"),
    ("mistyped field", {**TEXT, "from": 7}, "from"),
    ("messageType out of range", {**TEXT, "messageType": 11}, "messageType"),
    ("messageInfo of the wrong shape", {**TEXT, "messageType": 4}, "messageInfo.videoMessage"),
    ("media key with the wrong extension", seed_payload("clip.avi"), "messageInfo.videoMessage"),
    ("video over 10 MiB", seed_payload(fileLength=10 * 1024 * 1024), "messageInfo.fileLength"),
    ("thumbnail over 64 KiB", seed_payload(thumbFileLength=65537), "messageInfo.thumbFileLength"),
    (
        "latitude out of range",
        {**TEXT, "messageType": 5, "messageInfo": {"latitude": 91, "longitude": 0, "address": "x"}},
        "messageInfo.latitude",
    ),
    (
        "template content not JSON",
        {**TEXT, "messageType": 9, "ext": {"template": {"templetId": 1, "content": "{"}}},
        "ext.template.content",
    ),
    (
        "expandMsg Content not JSON",
        {**TEXT, "messageType": 10, "ext": {"expandMsg": {"MsgType": "c", "Content": "x"}}},
        "ext.expandMsg.Content",
    ),
    (
        "Easemob body over the size limit",
        {**TEXT, "messageInfo": {"textMessage": "字" * 2000}},
        "body",
    ),
    ("id outside [A-Za-z0-9]", {**TEXT, "getMessageId": "id-with-dash"}, "getMessageId"),
    ("invalid Unicode", {**TEXT, "messageInfo": {"textMessage": "\udc80"}}, "body"),
    (
        "media URL off the Qiniu domain",
        seed_payload(fileUrl="http://10.0.0.1/internal"),
        "messageInfo.fileUrl",
    ),
]


@pytest.mark.parametrize(
    ("payload", "field"), [(p, f) for _, p, f in CASES], ids=[c[0] for c in CASES]
)
def test_bad_input_names_the_field_and_leaves_no_trace(
    dispatcher: Any, payload: Any, field: str
) -> None:
    queue = dispatcher.settings.queue
    before = (
        dispatcher.store.read.in_flight(),
        dispatcher.redis.llen(queue),
        dispatcher.redis.dbsize(),
    )
    with pytest.raises(InvalidMessage) as caught:
        dispatcher.submit(payload)
    assert field in {e.field for e in caught.value.errors}, caught.value.errors
    after = (
        dispatcher.store.read.in_flight(),
        dispatcher.redis.llen(queue),
        dispatcher.redis.dbsize(),
    )
    assert after == before


def test_an_oversized_easemob_body_is_message_too_large(dispatcher: Any) -> None:
    with pytest.raises(MessageTooLarge) as caught:
        dispatcher.submit({**TEXT, "messageInfo": {"textMessage": "字" * 2000}})
    assert "5120" in caught.value.errors[0].error
