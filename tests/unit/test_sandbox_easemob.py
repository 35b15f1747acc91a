"""The Easemob simulator over real HTTP: tokens, sends, the error bodies and the limits."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox.easemob import create_easemob_app, create_easemob_app_from_settings
from dispatcher.sandbox.easemob_state import SlidingWindow
from dispatcher.sandbox.server import ServerThread

ORG, APP = "sandbox-org", "sandbox-app"
CLIENT_ID, CLIENT_SECRET = "YXA6client-id", "YXA6client-secret"
CREDENTIALS = {
    "grant_type": "client_credentials",
    "client_id": CLIENT_ID,
    "client_secret": CLIENT_SECRET,
}
TOKEN_PATH = f"/{ORG}/{APP}/token"
MESSAGES_PATH = f"/{ORG}/{APP}/messages"
ERROR_KEYS = {"error", "exception", "timestamp", "duration", "error_description"}
# Limits far above what a test sends, so only the tests about limits meet them.
GENEROUS: dict[str, Any] = {
    "calls_per_second": 100_000,
    "messages_per_minute": 10_000_000,
    "token_calls_per_second": 100_000,
}


class FakeClock:
    """A monotonic clock the test moves by hand; read from the server thread."""

    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


StartSimulator = Callable[..., httpx.Client]


@pytest.fixture(scope="module")
def shared_server() -> Iterator[ServerThread]:
    app = create_easemob_app(
        org=ORG, app=APP, client_id=CLIENT_ID, client_secret=CLIENT_SECRET, **GENEROUS
    )
    with ServerThread(app) as server:
        yield server


@pytest.fixture(scope="module")
def shared_client(shared_server: ServerThread) -> Iterator[httpx.Client]:
    # One client per module: building one (its TLS context) costs more than a test.
    with httpx.Client(base_url=shared_server.url, timeout=5) as http:
        yield http


@pytest.fixture
def client(shared_client: httpx.Client) -> httpx.Client:
    """The shared simulator with an empty ledger and no fault rules."""
    shared_client.delete("/_sandbox/requests")
    shared_client.delete("/_sandbox/faults")
    return shared_client


@pytest.fixture
def token(client: httpx.Client) -> str:
    return get_token(client)


@pytest.fixture
def start_simulator() -> Iterator[StartSimulator]:
    """Start a simulator of its own (limits or clock under test); stopped after the test."""
    running: list[tuple[ServerThread, httpx.Client]] = []

    def start(**options: Any) -> httpx.Client:
        settings: dict[str, Any] = {
            "org": ORG,
            "app": APP,
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            **GENEROUS,
        }
        settings.update(options)
        server = ServerThread(create_easemob_app(**settings)).start()
        http = httpx.Client(base_url=server.url, timeout=5)
        running.append((server, http))
        return http

    yield start
    for server, http in running:
        http.close()
        server.stop()


def get_token(client: httpx.Client, **extra: Any) -> str:
    response = client.post(TOKEN_PATH, json={**CREDENTIALS, **extra})
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def text_to(*targets: str, target_type: str = "users") -> dict[str, Any]:
    return {
        "target_type": target_type,
        "target": list(targets),
        "msg": {"type": "txt", "msg": "hello"},
        "from": "admin",
    }


def send(client: httpx.Client, token: str, body: Any, *, use_msg_id: bool = True) -> httpx.Response:
    params = {"useMsgId": "true"} if use_msg_id else {}
    return client.post(MESSAGES_PATH, json=body, params=params, headers=bearer(token))


def assert_error(
    response: httpx.Response, status: int, error: str, description: str | None = None
) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] == error
    if description is not None:
        assert body["error_description"] == description
    return dict(body)


# -- token ---------------------------------------------------------------------------------


def test_token_with_right_credentials_returns_token_lifetime_and_application(
    client: httpx.Client,
) -> None:
    first = client.post(TOKEN_PATH, json=CREDENTIALS)
    second = client.post(TOKEN_PATH, json=CREDENTIALS)

    assert first.status_code == 200
    body = first.json()
    assert set(body) == {"access_token", "expires_in", "application"}
    assert body["expires_in"] == 5_184_000
    uuid.UUID(body["application"])
    assert body["access_token"] != second.json()["access_token"]


def test_token_request_ttl_sets_expires_in(client: httpx.Client) -> None:
    response = client.post(TOKEN_PATH, json={**CREDENTIALS, "ttl": 3600})

    assert response.json()["expires_in"] == 3600


def test_wrong_client_id_gets_400_invalid_grant(client: httpx.Client) -> None:
    response = client.post(TOKEN_PATH, json={**CREDENTIALS, "client_id": "someone-else"})

    assert_error(response, 400, "invalid_grant", "client_id does not match")


def test_wrong_client_secret_gets_400_invalid_grant(client: httpx.Client) -> None:
    response = client.post(TOKEN_PATH, json={**CREDENTIALS, "client_secret": "guess"})

    assert_error(response, 400, "invalid_grant", "client_secret does not match")


def test_form_encoded_token_request_gets_415_web_application(client: httpx.Client) -> None:
    response = client.post(TOKEN_PATH, data=CREDENTIALS)

    assert_error(response, 415, "web_application", "Unsupported Media Type")


def test_malformed_json_token_request_gets_400_json_parse(client: httpx.Client) -> None:
    response = client.post(
        TOKEN_PATH, content=b"{grant_type: nope", headers={"Content-Type": "application/json"}
    )

    body = assert_error(response, 400, "json_parse")
    assert body["exception"] == "org.codehaus.jackson.JsonParseException"


@pytest.mark.parametrize("path", ["/other-org/sandbox-app/token", "/sandbox-org/other/messages"])
def test_wrong_org_or_app_gets_404_organization_application_not_found(
    client: httpx.Client, token: str, path: str
) -> None:
    response = client.post(path, json=CREDENTIALS, headers=bearer(token))

    body = assert_error(response, 404, "organization_application_not_found")
    assert path in body["error_description"]


def test_token_calls_beyond_their_own_per_second_limit_get_429(
    start_simulator: StartSimulator,
) -> None:
    clock = FakeClock()
    client = start_simulator(token_calls_per_second=3, clock=clock)

    statuses = [client.post(TOKEN_PATH, json=CREDENTIALS).status_code for _ in range(5)]
    clock.advance(1.0)
    after_a_second = client.post(TOKEN_PATH, json=CREDENTIALS)

    assert statuses == [200, 200, 200, 429, 429]
    assert after_a_second.status_code == 200


# -- bearer token --------------------------------------------------------------------------


def test_send_without_authorization_gets_401_unauthorized(client: httpx.Client) -> None:
    response = client.post(MESSAGES_PATH, json=text_to("u1"))

    assert_error(
        response, 401, "unauthorized", "Unable to authenticate due to expired access token"
    )


def test_send_with_unknown_token_gets_401_auth_bad_access_token(client: httpx.Client) -> None:
    response = send(client, "YWMt-not-issued-here", text_to("u1"))

    body = assert_error(
        response,
        401,
        "auth_bad_access_token",
        "Unable to authenticate due to corrupt access token",
    )
    assert body["exception"] == "org.apache.usergrid.rest.exceptions.SecurityException"


def test_expire_tokens_makes_every_issued_token_get_401_unauthorized(
    start_simulator: StartSimulator,
) -> None:
    client = start_simulator()
    tokens = [get_token(client), get_token(client, ttl=0)]

    expired = client.post("/_sandbox/easemob/expire-tokens")

    assert expired.json() == {"expired": 2}
    for token in tokens:
        assert_error(send(client, token, text_to("u1")), 401, "unauthorized")
    assert send(client, get_token(client), text_to("u1")).status_code == 200


def test_expired_token_gets_401_unauthorized_after_its_ttl(start_simulator: StartSimulator) -> None:
    clock = FakeClock()
    client = start_simulator(token_ttl=60, clock=clock)
    token = get_token(client)

    clock.advance(59)
    still_valid = send(client, token, text_to("u1"))
    clock.advance(2)
    expired = send(client, token, text_to("u1"))

    assert still_valid.status_code == 200
    assert_error(expired, 401, "unauthorized", "Unable to authenticate due to expired access token")


def test_token_with_ttl_zero_never_expires(start_simulator: StartSimulator) -> None:
    clock = FakeClock()
    client = start_simulator(token_ttl=60, clock=clock)
    token = get_token(client, ttl=0)

    clock.advance(10 * 365 * 86_400)

    assert send(client, token, text_to("u1")).status_code == 200


# -- classic send ---------------------------------------------------------------------------


def test_classic_send_with_use_msg_id_returns_numeric_ids_keyed_by_target(
    client: httpx.Client, token: str
) -> None:
    response = send(client, token, text_to("u1", "u2", "u3"))

    assert response.status_code == 200
    data = response.json()["data"]
    assert list(data) == ["u1", "u2", "u3"]
    ids = [int(value) for value in data.values()]
    assert all(value.isdigit() and 18 <= len(value) <= 19 for value in data.values())
    assert ids == sorted(set(ids))


def test_message_ids_keep_increasing_across_calls(client: httpx.Client, token: str) -> None:
    first = send(client, token, text_to("u1")).json()["data"]["u1"]
    second = send(client, token, text_to("u1")).json()["data"]["u1"]

    assert int(second) > int(first)


def test_classic_send_without_use_msg_id_answers_success(client: httpx.Client, token: str) -> None:
    response = send(client, token, text_to("u1", "u2"), use_msg_id=False)

    assert response.json()["data"] == {"u1": "success", "u2": "success"}


def test_send_answer_is_the_common_envelope(
    client: httpx.Client, token: str, shared_server: ServerThread
) -> None:
    application = client.post(TOKEN_PATH, json=CREDENTIALS).json()["application"]

    body = send(client, token, text_to("u1")).json()

    assert body["action"] == "post"
    assert body["path"] == "/messages"
    assert body["uri"] == f"{shared_server.url}{MESSAGES_PATH}"
    assert body["entities"] == []
    assert body["organization"] == ORG
    assert body["applicationName"] == APP
    assert body["application"] == application
    assert abs(body["timestamp"] - time.time() * 1000) < 60_000


def test_ledger_holds_the_exact_json_of_a_send(client: httpx.Client, token: str) -> None:
    body = {
        "target_type": "users",
        "target": ["u1"],
        "from": "u0",
        "msg": {
            "type": "video",
            "url": "http://cdn/v.mp4",
            "filename": "v.mp4",
            "thumb": "http://cdn/t.jpg",
            "length": 12,
            "file_length": 1024,
        },
        "ext": {"getType": 1, "dispatcher": {"getMessageId": "m0abc"}, "名字": "中文"},
    }

    send(client, token, body)
    ledger = client.get("/_sandbox/requests").json()

    sends = [entry for entry in ledger if entry["path"] == MESSAGES_PATH]
    assert len(sends) == 1
    assert sends[0]["json"] == body
    assert sends[0]["query"] == "useMsgId=true"
    assert sends[0]["method"] == "POST"


VALID_KINDS: dict[str, dict[str, Any]] = {
    "txt": {"msg": "hi"},
    "img": {"url": "http://cdn/a.png", "filename": "a.png", "size": {"width": 8, "height": 6}},
    "audio": {"url": "http://cdn/a.amr", "filename": "a.amr", "length": 3},
    "video": {
        "url": "http://cdn/v.mp4",
        "thumb": "http://cdn/t.jpg",
        "length": 5,
        "file_length": 2048,
    },
    "file": {"url": "http://cdn/f.pdf", "filename": "f.pdf"},
    "loc": {"lat": "39.966", "lng": 116.322, "addr": "Beijing"},
    "cmd": {"action": "refresh"},
    "custom": {"customEvent": "news", "customExts": {"title": "t", "url": "http://x"}},
}


@pytest.mark.parametrize("kind", sorted(VALID_KINDS))
def test_each_message_kind_with_its_fields_is_accepted(
    client: httpx.Client, token: str, kind: str
) -> None:
    body = {**text_to("u1"), "msg": {"type": kind, **VALID_KINDS[kind]}}

    assert send(client, token, body).status_code == 200


def _with(**changes: Any) -> dict[str, Any]:
    body = text_to("u1")
    for key, value in changes.items():
        if value is _DROP:
            body.pop(key)
        else:
            body[key] = value
    return body


def _msg(kind: str, drop: str | None = None, **fields: Any) -> dict[str, Any]:
    payload = {"type": kind, **VALID_KINDS[kind], **fields}
    if drop:
        payload.pop(drop)
    return _with(msg=payload)


_DROP = object()
INVALID_SENDS: dict[str, tuple[dict[str, Any], str]] = {
    "missing target_type": (_with(target_type=_DROP), "target_type must be provided"),
    "unknown target_type": (
        _with(target_type="user"),
        "target_type can only be 'users' or 'chatgroups' or 'chatrooms'",
    ),
    "target not an array": (_with(target="u1"), "target must be an array of non-empty strings"),
    "target of numbers": (_with(target=[1, 2]), "target must be an array of non-empty strings"),
    "empty target": (_with(target=[]), "target can't be empty"),
    "missing target": (_with(target=_DROP), "target must be provided"),
    "empty from": (_with(**{"from": ""}), "from can't be empty"),
    "null ext": (_with(ext=None), "ext can't be null"),
    "ext not an object": (_with(ext=["a"]), "ext must be JSONObject"),
    "missing msg": (_with(msg=_DROP), "msg must be provided"),
    "unknown msg type": (
        _with(msg={"type": "text", "msg": "hi"}),
        "msg type can only be one of txt, img, audio, video, file, loc, cmd, custom",
    ),
    "txt without msg": (_msg("txt", drop="msg"), "txt message must provide msg"),
    "img without filename": (_msg("img", drop="filename"), "img message must provide filename"),
    "img size without height": (
        _msg("img", size={"width": 1}),
        "img message field size must be an object with integer width and height",
    ),
    "audio without length": (_msg("audio", drop="length"), "audio message must provide length"),
    "video without thumb": (_msg("video", drop="thumb"), "video message must provide thumb"),
    "video file_length as text": (
        _msg("video", file_length="2048"),
        "video message field file_length must be a non-negative integer",
    ),
    "loc without addr": (_msg("loc", drop="addr"), "loc message must provide addr"),
    "loc lat not a number": (
        _msg("loc", lat="north"),
        "loc message field lat must be a number or a numeric string",
    ),
    "cmd without action": (_msg("cmd", drop="action"), "cmd message must provide action"),
    "custom event with spaces": (
        _msg("custom", customEvent="no spaces allowed"),
        "custom message field customEvent must be matching [a-zA-Z0-9-_/\\.]{1,32}",
    ),
    "custom exts over 16": (
        _msg("custom", customExts={f"k{i}": "v" for i in range(17)}),
        "custom message field customExts must be a map of strings to strings, at most 16",
    ),
    "custom exts not strings": (
        _msg("custom", customExts={"n": 1}),
        "custom message field customExts must be a map of strings to strings, at most 16",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_SENDS))
def test_invalid_send_gets_400_illegal_argument_naming_the_problem(
    client: httpx.Client, token: str, case: str
) -> None:
    body, description = INVALID_SENDS[case]

    response = send(client, token, body)

    assert_error(response, 400, "illegal_argument", description)


def test_send_with_text_plain_content_type_gets_415(client: httpx.Client, token: str) -> None:
    response = client.post(
        MESSAGES_PATH,
        content=b'{"target_type": "users"}',
        headers={**bearer(token), "Content-Type": "text/plain"},
    )

    assert_error(response, 415, "web_application", "Unsupported Media Type")


def test_send_with_malformed_json_gets_400_json_parse(client: httpx.Client, token: str) -> None:
    response = client.post(
        MESSAGES_PATH,
        content=b'{"target_type": "users",',
        headers={**bearer(token), "Content-Type": "application/json; charset=utf-8"},
    )

    assert_error(response, 400, "json_parse")


def test_send_body_over_the_size_limit_gets_413(client: httpx.Client, token: str) -> None:
    body = {**text_to("u1"), "msg": {"type": "txt", "msg": "x" * 5200}}

    response = send(client, token, body)

    assert_error(response, 413, "Request Entity Too Large", "Request Entity Too Large")


def test_send_to_600_users_is_accepted_and_601_refused(client: httpx.Client, token: str) -> None:
    six_hundred = [str(i) for i in range(600)]

    accepted = send(client, token, text_to(*six_hundred))
    refused = send(client, token, text_to(*six_hundred, "600"))

    assert accepted.status_code == 200
    assert len(accepted.json()["data"]) == 600
    assert_error(refused, 400, "illegal_argument", "params to's size can't exceed limit")


def test_send_to_more_than_three_groups_is_refused(client: httpx.Client, token: str) -> None:
    response = send(client, token, text_to("1", "2", "3", "4", target_type="chatgroups"))

    assert_error(response, 400, "illegal_argument", "params to's size can't exceed limit")


def test_unknown_path_gets_404_service_resource_not_found(client: httpx.Client) -> None:
    response = client.get(f"/{ORG}/{APP}/nothing-here")

    assert_error(response, 404, "service_resource_not_found", "Service resource not found")


# -- newer endpoints ----------------------------------------------------------------------


def test_new_users_endpoint_returns_ids_keyed_by_to(client: httpx.Client, token: str) -> None:
    body = {"from": "admin", "to": ["u1", "u2"], "type": "txt", "body": {"msg": "hi"}}

    response = client.post(f"{MESSAGES_PATH}/users", json=body, headers=bearer(token))

    assert response.status_code == 200
    assert response.json()["path"] == "/messages/users"
    assert list(response.json()["data"]) == ["u1", "u2"]
    assert all(value.isdigit() for value in response.json()["data"].values())


@pytest.mark.parametrize(
    ("kind", "changes", "error", "description"),
    [
        ("users", {"from": ""}, "message_send_error", "param from can't be empty"),
        ("users", {"to": []}, "message_send_error", "param to can't be empty"),
        ("users", {"ext": None}, "message_send_error", "param ext must be JSONObject"),
        (
            "chatgroups",
            {"to": ["1", "2", "3", "4"]},
            "message_send_error",
            "params to's size can't exceed limit 3",
        ),
        (
            "chatrooms",
            {"body": {"text": "wrong field"}},
            "invalid_request_body",
            "Request body is invalid. Please check body is correct.",
        ),
    ],
)
def test_new_endpoint_refuses_bad_bodies_with_its_own_errors(
    client: httpx.Client,
    token: str,
    kind: str,
    changes: dict[str, Any],
    error: str,
    description: str,
) -> None:
    body = {"from": "admin", "to": ["1"], "type": "txt", "body": {"msg": "hi"}, **changes}

    response = client.post(f"{MESSAGES_PATH}/{kind}", json=body, headers=bearer(token))

    assert_error(response, 400, error, description)


# -- rate limits ------------------------------------------------------------------------------


def test_calls_beyond_calls_per_second_get_429_reach_limit(
    start_simulator: StartSimulator,
) -> None:
    clock = FakeClock()
    client = start_simulator(calls_per_second=5, clock=clock)
    token = get_token(client)

    responses = [send(client, token, text_to("u1")) for _ in range(8)]
    clock.advance(1.0)
    next_second = send(client, token, text_to("u1"))

    assert [r.status_code for r in responses] == [200] * 5 + [429] * 3
    assert_error(responses[-1], 429, "reach_limit", "This request has reached api limit")
    assert next_second.status_code == 200


def test_150_calls_within_a_second_at_100_per_second_get_50_429s(
    start_simulator: StartSimulator,
) -> None:
    client = start_simulator(calls_per_second=100)
    token = get_token(client)

    started = time.monotonic()
    statuses = [send(client, token, text_to("u1")).status_code for _ in range(150)]
    elapsed = time.monotonic() - started

    if elapsed >= 1.0:
        pytest.skip(f"150 calls took {elapsed:.2f}s on this machine; the window moved")
    assert statuses.count(429) == 50
    assert statuses[:100] == [200] * 100


def test_messages_per_minute_to_users_beyond_quota_get_403(
    start_simulator: StartSimulator,
) -> None:
    clock = FakeClock()
    client = start_simulator(messages_per_minute=5, clock=clock)
    token = get_token(client)

    first = send(client, token, text_to("a", "b", "c"))
    over = send(client, token, text_to("d", "e", "f"))
    fits = send(client, token, text_to("d", "e"))
    groups = send(client, token, text_to("123", target_type="chatgroups"))
    full = send(client, token, text_to("g"))
    clock.advance(60)
    next_minute = send(client, token, text_to("a", "b", "c"))

    assert first.status_code == 200
    body = assert_error(over, 403, "forbidden_op")
    assert body["error_description"].startswith(f"Forbidden for url: [{client.base_url}")
    assert "reach limit" in body["error_description"]
    assert fits.status_code == 200
    assert groups.status_code == 200
    assert full.status_code == 403
    assert next_minute.status_code == 200


def test_new_endpoint_quota_answer_is_message_send_reach_limit(
    start_simulator: StartSimulator,
) -> None:
    client = start_simulator(messages_per_minute=1, clock=FakeClock())
    token = get_token(client)
    body = {"to": ["a", "b"], "type": "txt", "body": {"msg": "hi"}}

    response = client.post(f"{MESSAGES_PATH}/users", json=body, headers=bearer(token))

    assert_error(response, 403, "message_send_error", "message send reach limit")


def test_stats_count_calls_refusals_and_accepted_messages(
    start_simulator: StartSimulator,
) -> None:
    client = start_simulator(calls_per_second=3, messages_per_minute=3, clock=FakeClock())
    token = get_token(client)

    send(client, token, text_to("a", "b"))
    send(client, token, text_to("c", "d"))  # 4 > 3 messages: 403
    send(client, token, text_to("c"))
    send(client, token, text_to("e"))  # fourth call this second: 429

    assert client.get("/_sandbox/easemob/stats").json() == {
        "token_calls": 1,
        "tokens_issued": 1,
        "message_calls": 4,
        "messages_accepted": 3,
        "rate_limited_429": 1,
        "quota_exceeded_403": 1,
    }


def test_sliding_window_frees_units_only_as_they_age_out() -> None:
    clock = FakeClock()
    window = SlidingWindow(limit=10, window=60.0, clock=clock)

    assert window.try_acquire(6)
    clock.advance(30)
    assert window.try_acquire(4)
    assert not window.try_acquire(1)
    clock.advance(30)  # the 6 from t=0 leave the window
    assert window.try_acquire(6)
    assert not window.try_acquire(1)


def test_sliding_window_refusal_uses_nothing() -> None:
    window = SlidingWindow(limit=3, window=1.0, clock=FakeClock())

    assert not window.try_acquire(4)
    assert window.try_acquire(3)


# -- settings ---------------------------------------------------------------------------------


def test_simulator_from_settings_accepts_the_settings_credentials() -> None:
    settings = Settings(
        easemob_org=ORG,
        easemob_app=APP,
        easemob_client_id=CLIENT_ID,
        easemob_client_secret=SecretStr(CLIENT_SECRET),
        easemob_calls_per_second=7,
    )

    app = create_easemob_app_from_settings(settings, max_users_per_call=20)

    with ServerThread(app) as server, httpx.Client(base_url=server.url) as client:
        token = get_token(client)
        refused = send(client, token, text_to(*[str(i) for i in range(21)]))
    assert refused.json()["error_description"] == "params to's size can't exceed limit"
    assert app.state.easemob.call_window.limit == 7


def test_simulator_from_settings_names_missing_credentials() -> None:
    settings = Settings(easemob_org=ORG, easemob_app=APP)

    with pytest.raises(ConfigurationError, match="DISPATCHER_EASEMOB_CLIENT_ID"):
        create_easemob_app_from_settings(settings)
