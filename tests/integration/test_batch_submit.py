"""A batch over real HTTP (uvicorn on loopback) -> real Redis -> real worker processes ->
the Easemob simulator: the good messages of a batch are delivered, each once; the bad ones
are refused with their field errors and leave no key in Redis. The same through
``dispatcher send --file``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.api.app import create_app
from dispatcher.api.paths import SUBMIT_BATCH
from dispatcher.client import Client, encode_payload
from dispatcher.config import Settings
from dispatcher.ids import MessageRef
from dispatcher.sandbox.server import ServerThread
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, settings_from_env, wait_for_state

pytestmark = pytest.mark.integration

CLIENT, SECRET, CHANNEL = "shop", "s3cret-shop", "web"
MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"


def api_settings(worker_env: dict[str, str]) -> Any:
    clients = {CLIENT: {"secret": SECRET, "channels": [CHANNEL]}}
    return settings_from_env(worker_env).model_copy(
        update={"clients": Settings(clients=clients).clients}
    )


def text(message_id: str, body: str, **changes: Any) -> dict[str, Any]:
    return {
        "messageType": 1,
        "from": "u_sender",
        "to": "u_receiver",
        "messageInfo": {"textMessage": body},
        "getMessageId": message_id,
        **changes,
    }


BAD = {
    3: ({"to": ""}, "to"),
    50: ({"messageType": 42}, "messageType"),
    99: ({"messageInfo": {}}, "messageInfo.textMessage"),
    150: ({"getMessageId": "has spaces"}, "getMessageId"),
    260: ({"targetType": "planets"}, "targetType"),
    377: ({"ext": {"dispatcher": 1}}, "ext"),
    499: ({"sendAt": "not-a-time"}, "sendAt"),
}


def wait_all_terminal(api: Client, ids: list[str], timeout: float) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    records: list[Any] = []
    while time.monotonic() < deadline:
        records = []
        for start in range(0, len(ids), 100):
            records += api.status_many(ids[start : start + 100])
        if all(r and r["state"] in ("delivered", "failed", "dead") for r in records):
            return records
        time.sleep(0.2)
    pending = [r and r["state"] for r in records if not r or r["state"] != "delivered"]
    raise AssertionError(f"not all terminal in {timeout}s: {pending[:10]}")


def test_a_batch_of_500_with_7_bad_delivers_493_and_leaves_no_trace_of_the_7(
    worker_env: dict[str, str], easemob: Any, start_worker: Any, dispatcher: Any
) -> None:
    start_worker()
    start_worker()
    run = uuid.uuid4().hex[:10]
    ids = [f"b{run}x{i}" for i in range(500)]
    messages = []
    for index, message_id in enumerate(ids):
        message = text(message_id, f"batch {run} #{index}")
        if index in BAD:
            message.update(BAD[index][0])
        messages.append(message)
    good = [i for i in range(500) if i not in BAD]

    app = create_app(api_settings(worker_env))
    with ServerThread(app) as server, Client(server.url, CLIENT, SECRET, channel=CHANNEL) as api:
        body = encode_payload({"messages": messages})
        params = api.signer.sign("POST", SUBMIT_BATCH, body)
        response = httpx.post(
            f"{server.url}{SUBMIT_BATCH}",
            params=params,
            content=body,
            headers={"Content-Type": "application/json"},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        results = response.json()["data"]["results"]
        assert len(results) == 500
        for index in good:
            assert results[index] == {"getMessageId": ids[index]}
        for index, (_, field) in BAD.items():
            assert results[index]["code"] == 400, results[index]
            assert field in {e["field"] for e in results[index]["errors"]}, results[index]

        records = wait_all_terminal(api, [ids[i] for i in good], timeout=180)
        assert {r["state"] for r in records} == {"delivered"}

    sent = Counter(
        (e["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId")
        for e in easemob.requests(MESSAGES_PATH)
        if e["path"] == MESSAGES_PATH
    )
    delivered = {message_id: n for message_id, n in sent.items() if f"b{run}x" in str(message_id)}
    assert set(delivered) == {ids[i] for i in good}
    # Once each, unless an attempt timed out after the provider took it (then retried, and
    # counted in the record's attempts).
    attempts = {r["getMessageId"]: r["attempts"] for r in records}
    assert all(n <= attempts[message_id] for message_id, n in delivered.items()), delivered
    # No key of any kind names a refused message; every accepted one has its record.
    remaining = {k.decode() for k in dispatcher.redis.scan_iter(match=f"*b{run}x*", count=1000)}
    for index in BAD:
        assert not [k for k in remaining if f"b{run}x{index}}}" in k], index
    assert len([k for k in remaining if k.endswith(":rec")]) == len(good)


def test_send_file_reports_each_bad_line_and_sends_the_rest(
    worker_env: dict[str, str], easemob: Any, start_worker: Any, tmp_path: Path, dispatcher: Any
) -> None:
    start_worker()
    run = uuid.uuid4().hex[:10]
    lines = [json.dumps(text(f"f{run}x{i}", f"file {run} #{i}")) for i in range(230)]
    lines[10] = "{not json"
    lines[120] = json.dumps([1, 2])
    lines[200] = json.dumps(text(f"f{run}x200", "x", to=""))
    lines.insert(50, "")  # blank lines are skipped (the numbers below count them)
    source = tmp_path / "messages.jsonl"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")

    with ServerThread(create_app(api_settings(worker_env))) as server:
        remote = ["--api", server.url, "--client", CLIENT, "--secret", SECRET]
        result = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", "send", "--file", str(source), *remote,
             "--channel", CHANNEL, "--batch-size", "100"],
            env={**os.environ, **worker_env}, capture_output=True, text=True, timeout=120,
        )  # fmt: skip
    assert result.returncode == 1, result.stderr
    accepted = [line.split("\t") for line in result.stdout.splitlines()]
    assert len(accepted) == 227
    assert ["1", f"f{run}x0"] in accepted and ["52", f"f{run}x50"] in accepted
    assert "line 11: body: is not valid JSON" in result.stderr
    assert "line 122: body: must be a JSON object" in result.stderr
    assert "line 202: to:" in result.stderr
    assert "227 accepted, 3 refused" in result.stderr
    assert "sending" in result.stderr  # the progress bar
    last = accepted[-1][1]
    assert dispatcher.status(last) is None  # the messages are the client's, not the default's
    assert wait_for_state(dispatcher, MessageRef(CLIENT, last)).state == "delivered"
