"""Worker logs: one JSON object per line when asked, the getMessageId on every message line, no secrets."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.conftest import EASEMOB_CLIENT_SECRET, wait_for_state

pytestmark = pytest.mark.integration


def test_json_logs_name_the_message_and_hide_secrets(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    worker = start_worker(log_format="json")
    message_id = dispatcher.submit(
        {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": "log me"}}
    )
    assert wait_for_state(dispatcher, message_id).state == "delivered"
    worker.stop()
    text = worker.log()
    lines = [json.loads(line) for line in text.splitlines() if line.startswith("{")]
    assert lines, text[-2000:]
    assert all({"time", "level", "logger", "message"} <= set(line) for line in lines)
    about = [line for line in lines if message_id in line["message"]]
    assert about and all(line.get("getMessageId") == message_id for line in about)
    assert any("delivered" in line["message"] for line in about)
    assert EASEMOB_CLIENT_SECRET not in text
