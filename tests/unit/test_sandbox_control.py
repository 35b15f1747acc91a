"""The sandbox ledger and fault rules, and the server thread, over real HTTP."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from dispatcher.sandbox.control import install_control
from dispatcher.sandbox.easemob import create_easemob_app
from dispatcher.sandbox.server import ServerThread

ORG, APP = "ledger-org", "ledger-app"
CLIENT_ID, CLIENT_SECRET = "YXA6id", "YXA6very-secret"
CREDENTIALS = {
    "grant_type": "client_credentials",
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
}
TOKEN_PATH = f"/{ORG}/{APP}/token"
MESSAGES_PATH = f"/{ORG}/{APP}/messages"


@pytest.fixture(scope="module")
def server() -> Iterator[ServerThread]:
    app = create_easemob_app(
        org=ORG,
        app=APP,
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        calls_per_second=100_000,
        messages_per_minute=10_000_000,
    )
    with ServerThread(app) as running:
        yield running


@pytest.fixture(scope="module")
def shared_client(server: ServerThread) -> Iterator[httpx.Client]:
    # One client per module: building one (its TLS context) costs more than a test.
    with httpx.Client(base_url=server.url, timeout=5) as http:
        yield http


@pytest.fixture
def client(shared_client: httpx.Client) -> httpx.Client:
    """The shared simulator with an empty ledger and no fault rules."""
    shared_client.delete("/_sandbox/faults")
    shared_client.delete("/_sandbox/requests")
    return shared_client


@pytest.fixture
def token(client: httpx.Client) -> str:
    response = client.post(TOKEN_PATH, json=CREDENTIALS)
    client.delete("/_sandbox/requests")
    return str(response.json()["access_token"])


def send(client: httpx.Client, token: str, *targets: str) -> httpx.Response:
    body = {"target_type": "users", "target": list(targets), "msg": {"type": "txt", "msg": "hi"}}
    return client.post(
        MESSAGES_PATH,
        json=body,
        params={"useMsgId": "true"},
        headers={"Authorization": f"Bearer {token}"},
    )


def add_faults(client: httpx.Client, *rules: dict[str, Any]) -> list[dict[str, Any]]:
    payload: Any = rules[0] if len(rules) == 1 else {"rules": list(rules)}
    response = client.post("/_sandbox/faults", json=payload)
    assert response.status_code == 200, response.text
    return list(response.json())


def ledger(client: httpx.Client) -> list[dict[str, Any]]:
    return list(client.get("/_sandbox/requests").json())


# -- fault rules ------------------------------------------------------------------------------


def test_fault_answers_status_body_and_retry_after_once_then_normal(
    client: httpx.Client, token: str
) -> None:
    busy = {"error": "server_busy", "error_description": "try later"}
    add_faults(
        client, {"path": "/messages$", "status": 503, "body": busy, "retry_after": 2, "times": 1}
    )

    faulted = send(client, token, "u1")
    normal = send(client, token, "u1")

    assert faulted.status_code == 503
    assert faulted.json() == busy
    assert faulted.headers["retry-after"] == "2"
    assert normal.status_code == 200
    assert "u1" in normal.json()["data"]


def test_fault_latency_delays_the_real_answer(client: httpx.Client, token: str) -> None:
    add_faults(client, {"latency": 0.3, "times": 1})

    started = time.monotonic()
    response = send(client, token, "u1")
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.3


def test_fault_hang_leaves_the_client_waiting_until_its_timeout(
    client: httpx.Client, token: str
) -> None:
    add_faults(client, {"path": "/messages$", "hang": 1.0, "times": 1})

    started = time.monotonic()
    with pytest.raises(httpx.TimeoutException):
        client.post(
            MESSAGES_PATH,
            json={"target_type": "users", "target": ["u1"], "msg": {"type": "txt", "msg": "x"}},
            headers={"Authorization": f"Bearer {token}"},
            timeout=0.3,
        )

    assert 0.3 <= time.monotonic() - started < 1.0
    assert send(client, token, "u1").status_code == 200


def test_fault_reset_drops_the_connection_without_an_answer(
    client: httpx.Client, token: str
) -> None:
    add_faults(client, {"reset": True, "times": 1})

    with pytest.raises(httpx.TransportError):
        send(client, token, "u1")

    assert send(client, token, "u1").status_code == 200


def test_fault_after_handling_acts_on_the_request_but_loses_the_answer(
    client: httpx.Client, token: str
) -> None:
    before = int(send(client, token, "u1").json()["data"]["u1"])
    add_faults(client, {"path": "/messages$", "after_handling": True, "times": 1})

    with pytest.raises(httpx.TransportError):
        send(client, token, "lost")
    after = int(send(client, token, "u1").json()["data"]["u1"])

    assert after == before + 2  # the lost answer's message took an id
    assert [entry["json"]["target"] for entry in ledger(client)] == [["u1"], ["lost"], ["u1"]]


def test_fault_after_handling_with_status_replaces_the_real_answer(
    client: httpx.Client, token: str
) -> None:
    before = client.get("/_sandbox/easemob/stats").json()["messages_accepted"]
    add_faults(
        client, {"after_handling": True, "status": 502, "body": {"error": "gateway"}, "times": 1}
    )

    response = send(client, token, "u1")

    assert response.status_code == 502
    assert client.get("/_sandbox/easemob/stats").json()["messages_accepted"] == before + 1


def test_fault_body_contains_matches_only_requests_carrying_it(
    client: httpx.Client, token: str
) -> None:
    add_faults(client, {"body_contains": '"vip"', "status": 500, "body": {"error": "boom"}})

    vip = send(client, token, "vip")
    other = send(client, token, "someone")
    vip_again = send(client, token, "vip")

    assert vip.status_code == 500
    assert other.status_code == 200
    assert vip_again.status_code == 500


def test_fault_path_and_method_limit_what_it_matches(client: httpx.Client, token: str) -> None:
    add_faults(client, {"path": "/token$", "method": "POST", "status": 500})

    token_call = client.post(TOKEN_PATH, json=CREDENTIALS)
    message_call = send(client, token, "u1")

    assert token_call.status_code == 500
    assert message_call.status_code == 200


def test_fault_times_is_consumed_then_the_rule_is_gone(client: httpx.Client, token: str) -> None:
    add_faults(client, {"status": 503, "times": 2})

    statuses = [send(client, token, "u1").status_code]
    remaining = client.get("/_sandbox/faults").json()
    statuses += [send(client, token, "u1").status_code, send(client, token, "u1").status_code]

    assert statuses == [503, 503, 200]
    assert [rule["times"] for rule in remaining] == [1]
    assert client.get("/_sandbox/faults").json() == []


def test_first_matching_fault_rule_wins(client: httpx.Client, token: str) -> None:
    add_faults(
        client,
        {"path": "/messages$", "status": 429, "times": 1},
        {"status": 500, "times": 1},
    )

    first = send(client, token, "u1")
    second = send(client, token, "u1")

    assert [first.status_code, second.status_code] == [429, 500]


def test_delete_faults_clears_every_rule(client: httpx.Client, token: str) -> None:
    add_faults(client, {"status": 503}, {"latency": 5})
    assert send(client, token, "u1").status_code == 503

    cleared = client.delete("/_sandbox/faults")

    assert cleared.json() == {"ok": True}
    assert client.get("/_sandbox/faults").json() == []
    assert send(client, token, "u1").status_code == 200


def test_fault_rule_with_invalid_times_is_refused(client: httpx.Client) -> None:
    response = client.post("/_sandbox/faults", json={"status": 503, "times": 0})

    assert response.status_code == 422
    assert client.get("/_sandbox/faults").json() == []


# -- ledger -----------------------------------------------------------------------------------


def test_ledger_masks_authorization_and_client_secret(client: httpx.Client, token: str) -> None:
    client.post(TOKEN_PATH, json=CREDENTIALS)
    send(client, token, "u1")

    token_entry, send_entry = ledger(client)

    assert token_entry["json"] == {**CREDENTIALS, "client_secret": "***"}
    assert send_entry["headers"]["authorization"] == "Bearer ***"
    assert CLIENT_SECRET not in str(token_entry)
    assert token not in str(send_entry)


def test_ledger_lists_requests_oldest_first_without_control_calls(
    client: httpx.Client, token: str
) -> None:
    send(client, token, "first")
    client.get("/_sandbox/faults")
    send(client, token, "second")

    entries = ledger(client)

    assert [entry["json"]["target"] for entry in entries] == [["first"], ["second"]]
    assert set(entries[0]) == {"method", "path", "query", "headers", "json", "receivedAt"}
    assert entries[0]["receivedAt"] <= entries[1]["receivedAt"]


def test_ledger_records_requests_answered_by_a_fault(client: httpx.Client, token: str) -> None:
    add_faults(client, {"status": 503, "times": 1})

    send(client, token, "u1")

    assert [entry["path"] for entry in ledger(client)] == [MESSAGES_PATH]


def test_ledger_json_is_null_for_a_body_that_is_not_json(client: httpx.Client) -> None:
    client.post(TOKEN_PATH, content=b"grant_type=client_credentials")

    (entry,) = ledger(client)

    assert entry["json"] is None


def test_delete_requests_empties_the_ledger(client: httpx.Client, token: str) -> None:
    send(client, token, "u1")

    client.delete("/_sandbox/requests")

    assert ledger(client) == []


# -- server thread -----------------------------------------------------------------------------


def _tiny_app() -> FastAPI:
    app = FastAPI()

    @app.get("/ping")
    async def ping() -> dict[str, bool]:
        return {"pong": True}

    install_control(app)
    return app


def test_server_thread_picks_a_free_port_and_stops_listening_on_stop() -> None:
    server = ServerThread(_tiny_app())

    with server:
        port = server.port
        answer = httpx.get(f"{server.url}/ping")

    assert port > 0
    assert server.url == f"http://127.0.0.1:{port}"
    assert answer.json() == {"pong": True}
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), 1):
        pass


def test_server_thread_refuses_a_port_already_in_use() -> None:
    with ServerThread(_tiny_app()) as first, pytest.raises(OSError):
        ServerThread(_tiny_app(), port=first.port).start()


def test_server_thread_stop_returns_promptly_while_a_request_hangs() -> None:
    server = ServerThread(_tiny_app()).start()
    httpx.post(f"{server.url}/_sandbox/faults", json={"hang": 30})
    with pytest.raises(httpx.TimeoutException):
        httpx.get(f"{server.url}/ping", timeout=0.2)

    started = time.monotonic()
    server.stop()

    assert time.monotonic() - started < 3.0
