"""Two clients, one getMessageId, over real HTTP to a real worker and the Easemob simulator:
both messages are delivered, each client reads its own, an admin reads either by naming
its client; and the command line addresses a client's messages with ``--client``."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from pydantic import SecretStr

from dispatcher.api.app import create_app
from dispatcher.client import Client
from dispatcher.config import ClientConfig
from dispatcher.errors import ProviderError
from dispatcher.ids import MessageRef
from dispatcher.sandbox.server import ServerThread
from tests.conftest import EASEMOB_APP, EASEMOB_ORG, settings_from_env, wait_for_state
from tests.integration.test_api_end_to_end import wait_delivered
from tests.integration.test_cli import run

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"
CLIENTS = {
    "alice": ClientConfig(secret=SecretStr("alice-secret"), channels=["web"]),
    "bob": ClientConfig(secret=SecretStr("bob-secret"), channels=["web"]),
    "ops": ClientConfig(secret=SecretStr("ops-secret"), channels=["web"], admin=True),
}


def text(message_id: str, words: str) -> dict[str, Any]:
    return {
        "getMessageId": message_id,
        "messageType": 1,
        "from": "u_sender",
        "to": "u_receiver",
        "messageInfo": {"textMessage": words},
    }


def test_the_same_id_from_two_clients_is_delivered_twice(
    worker_env: dict[str, str], easemob: Any, start_worker: Any
) -> None:
    settings = settings_from_env(worker_env).model_copy(update={"clients": CLIENTS})
    message_id = "otp" + uuid.uuid4().hex
    start_worker()
    with ServerThread(create_app(settings)) as server:
        alice = Client(server.url, "alice", "alice-secret", channel="web")
        bob = Client(server.url, "bob", "bob-secret", channel="web")
        ops = Client(server.url, "ops", "ops-secret", channel="web")
        with alice, bob, ops:
            assert alice.submit(text(message_id, "Your code is 4711")) == message_id
            assert bob.submit(text(message_id, "Your code is 0815")) == message_id
            records = {
                "alice": wait_delivered(alice, message_id),
                "bob": wait_delivered(bob, message_id),
            }
            assert ops.status(message_id) is None  # the admin's own namespace
            for client, record in records.items():
                assert record["state"] == "delivered" and record["client"] == client
                assert ops.status(message_id, owner=client) == record
            assert ops.status_many([message_id], owner="bob") == [records["bob"]]

    sent = sorted(
        e["json"]["msg"]["msg"]
        for e in easemob.requests(MESSAGES_PATH)
        if (e["json"] or {}).get("ext", {}).get("dispatcher", {}).get("getMessageId") == message_id
    )
    assert sent == ["Your code is 0815", "Your code is 4711"]


def test_the_command_line_addresses_a_clients_messages_with_client(
    worker_env: dict[str, str], dispatcher: Any
) -> None:
    message_id = "cli" + uuid.uuid4().hex
    for client in ("shop", None):
        words = f"for {client or 'the default namespace'}"
        as_client = ["--client", client] if client else []
        sent = run(worker_env, "send", "--type", "text", "--from", "u1", "--to", "u2",
                   "--text", words, "--id", message_id, *as_client)  # fmt: skip
        assert sent.stdout.strip() == message_id
    shown = json.loads(run(worker_env, "status", message_id, "--client", "shop").stdout)
    assert shown["client"] == "shop"
    assert json.loads(run(worker_env, "status", message_id).stdout)["client"] is None
    assert run(worker_env, "status", message_id, "--client", "nobody", check=False).returncode == 1

    # Kill shop's message; the dead-letter commands find it under --client shop only.
    shop = MessageRef("shop", message_id)
    lease = dispatcher.store.lease.begin(shop, "w", 10)
    dispatcher.store.lease.mark_dead(lease, ProviderError("down", "503", retryable=True), "test")
    listed = run(worker_env, "dlq", "list", "--client", "shop", "--limit", "1000").stdout
    entries = [json.loads(line) for line in listed.splitlines()]
    assert {e["client"] for e in entries} == {"shop"}
    assert message_id in [e["getMessageId"] for e in entries]
    everyone = [json.loads(line) for line in run(worker_env, "dlq", "list").stdout.splitlines()]
    assert {"getMessageId": message_id, "client": "shop"}.items() <= next(
        e for e in everyone if e["getMessageId"] == message_id
    ).items()
    missing = run(worker_env, "dlq", "replay", message_id, check=False)
    assert missing.returncode == 1 and "not replayed (state:queued)" in missing.stderr
    assert (
        "replayed 1 of 1" in run(worker_env, "dlq", "replay", message_id, "--client", "shop").stdout
    )
    assert wait_for_state(dispatcher, shop, {"queued"}, timeout=10).state == "queued"
    assert dispatcher.status(message_id).state == "queued"  # the default one, untouched
