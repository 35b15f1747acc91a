"""The console over HTTP on a real Redis: nothing without a session, sign-in and its
refusals, the session cookie, CSRF on every action, one-time links, and that mounting it
leaves the API's submit path as it was."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import SecretStr
from starlette.routing import Match, Mount, Route
from starlette.testclient import TestClient

from dispatcher import keys
from dispatcher.api.app import create_app
from dispatcher.api.overload import SubmitBound
from dispatcher.api.paths import SUBMIT
from dispatcher.config import ClientConfig, Settings
from dispatcher.console import issue_login_link
from dispatcher.console.signin import MAX_FAILURES
from dispatcher.errors import ProviderError
from dispatcher.ids import MessageRef
from tests.conftest import ref, settings_from_env

pytestmark = pytest.mark.integration

ADMIN, ADMIN_SECRET = "ops", "ops-secret-7f3a"
PLAIN, PLAIN_SECRET = "shop", "shop-secret-91b2"
PASSWORD = "console-password-5d1e"


@pytest.fixture()
def settings_model(worker_env: dict[str, str]) -> Settings:
    return settings_from_env(worker_env).model_copy(
        update={
            "clients": {
                ADMIN: ClientConfig(secret=SecretStr(ADMIN_SECRET), channels=["c"], admin=True),
                PLAIN: ClientConfig(secret=SecretStr(PLAIN_SECRET), channels=["c"]),
            },
            "console_password": SecretStr(PASSWORD),
        }
    )


@pytest.fixture()
def app(settings_model: Settings, redis_client: Any) -> FastAPI:
    for key in redis_client.scan_iter(match=keys.console_login_failures("*")):
        redis_client.delete(key)
    return create_app(settings_model)


@pytest.fixture()
def browser(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app, base_url="http://127.0.0.1:8087") as client:
        yield client


TEXT_MESSAGE: dict[str, Any] = {
    "messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hello"},
}  # fmt: skip


def plain(message_id: str) -> MessageRef:
    return MessageRef(PLAIN, message_id)


def dead_message(app: FastAPI, text: str = "doomed", message_id: str | None = None) -> str:
    """A message of client PLAIN (in its namespace) that died on its first attempt."""
    dispatcher = app.state.runtime.dispatcher
    payload = {**TEXT_MESSAGE, "messageInfo": {"textMessage": text}}
    if message_id:
        payload["getMessageId"] = message_id
    message = dispatcher.validate(payload, client=PLAIN)
    message_id = dispatcher.submit_message(message, client=PLAIN, namespace=PLAIN).message_id
    lease = dispatcher.store.lease.begin(plain(message_id), "w", 10)
    error = ProviderError("service_unavailable", "Easemob answered 503", retryable=True, status=503)
    dispatcher.store.lease.mark_dead(lease, error, "test")
    return message_id


def next_millisecond(app: FastAPI) -> None:
    """Return once Redis's clock has moved on to a later millisecond (bounded)."""
    client = app.state.runtime.dispatcher.store.redis

    def now_ms() -> int:
        seconds, micros = client.time()
        return int(seconds) * 1000 + int(micros) // 1000

    start, deadline = now_ms(), time.monotonic() + 5
    while now_ms() == start and time.monotonic() < deadline:
        time.sleep(0.001)


def login_token(page: str) -> str:
    match = re.search(r'name="login_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def csrf_of(page: str) -> str:
    match = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert match, page
    return match.group(1)


def sign_in(browser: TestClient, client: str = ADMIN, secret: str = ADMIN_SECRET) -> Any:
    form = browser.get("/console/login")
    return browser.post(
        "/console/login",
        data={"login_token": login_token(form.text), "client": client, "secret": secret},
        follow_redirects=False,
    )


def console_routes(app: FastAPI) -> list[tuple[str, str]]:
    mount = next(r for r in app.routes if isinstance(r, Mount) and r.path == "/console")
    found = []
    for route in mount.routes:
        assert isinstance(route, Route)
        for method in sorted(route.methods or ()):
            if method != "HEAD":
                found.append((method, route.path))
    return found


def test_nothing_of_the_console_answers_without_a_session(
    app: FastAPI, browser: TestClient
) -> None:
    message_id = dead_message(app, "a secret text 4711")
    public = {("GET", "/login"), ("POST", "/login"), ("GET", "/login/once")}
    routes = console_routes(app)
    assert len(routes) >= 13
    for method, path in routes:
        url = "/console" + path.replace("{message_id}", message_id).replace("{name}", "console.css")
        response = browser.request(
            method, url, data={"id": message_id, "action": "replay", "confirmed": "yes"},
            follow_redirects=False,
        )  # fmt: skip
        assert message_id not in response.text and "4711" not in response.text, url
        if (method, path) in public:
            continue
        if method == "GET" and not path.startswith(("/static", "/live/data")):
            assert response.status_code == 303, (url, response.status_code)
            assert response.headers["location"].startswith("/console/login?next=/console")
        else:
            assert response.status_code == 401, (url, response.status_code)
    # Nothing was done by the refused actions.
    assert app.state.runtime.dispatcher.status(plain(message_id)).state == "dead"
    # A static file and the live data are refused too, and so is a forged cookie.
    browser.cookies.set("dispatcher_console", "forged.value.sig", path="/console")
    assert browser.get("/console/static/live.js").status_code == 401
    assert browser.get("/console/live/data").status_code == 401


def test_admin_clients_and_the_console_password_sign_in_nobody_else(
    browser: TestClient, settings_model: Settings, redis_client: Any
) -> None:
    for client, secret in [(PLAIN, PLAIN_SECRET), (ADMIN, PLAIN_SECRET), ("", "wrong"), ("x", "")]:
        refused = sign_in(browser, client, secret)
        assert refused.status_code == 401 and "Sign-in failed." in refused.text
        assert "dispatcher_console=" not in refused.headers.get("set-cookie", "")

    accepted = sign_in(browser, ADMIN, ADMIN_SECRET)
    assert accepted.status_code == 303
    cookie = accepted.headers["set-cookie"]
    assert "dispatcher_console=" in cookie and "HttpOnly" in cookie
    assert "SameSite=strict" in cookie and "Path=/console" in cookie
    assert f"Max-Age={settings_model.console_session_seconds}" in cookie
    page = browser.get("/console/messages")
    assert page.status_code == 200 and "Signed in as <strong>client ops</strong>" in page.text
    session_keys = list(redis_client.scan_iter(match=keys.console_session("*")))
    assert session_keys
    assert all(
        0 < redis_client.ttl(k) <= settings_model.console_session_seconds for k in session_keys
    )

    browser.cookies.clear()
    with_password = sign_in(browser, "", PASSWORD)
    assert with_password.status_code == 303
    assert "console password" in browser.get("/console/messages").text


def test_sign_in_needs_its_own_form_and_stops_after_repeated_failures(
    browser: TestClient,
) -> None:
    # A sign-in posted from elsewhere carries no form nonce: refused even with a good secret.
    forged = browser.post(
        "/console/login", data={"client": ADMIN, "secret": ADMIN_SECRET}, follow_redirects=False
    )
    assert forged.status_code == 403 and "dispatcher_console=" not in forged.headers.get(
        "set-cookie", ""
    )
    cross_site = browser.get("/console/login")
    response = browser.post(
        "/console/login",
        data={"login_token": login_token(cross_site.text), "client": ADMIN, "secret": ADMIN_SECRET},
        headers={"Origin": "https://evil.example", "Sec-Fetch-Site": "cross-site"},
        follow_redirects=False,
    )
    assert response.status_code == 403

    for _ in range(MAX_FAILURES):
        assert sign_in(browser, ADMIN, "guess").status_code == 401
    throttled = sign_in(browser, ADMIN, ADMIN_SECRET)
    assert throttled.status_code == 429 and "Too many failed sign-ins" in throttled.text


def test_every_action_needs_the_session_csrf_token(app: FastAPI, browser: TestClient) -> None:
    message_id = dead_message(app)
    assert sign_in(browser).status_code == 303
    page = browser.get(f"/console/messages/{message_id}")
    token = csrf_of(page.text)
    form = {"id": plain(message_id).member, "action": "replay", "confirmed": "yes"}

    for data, headers in [
        (form, {}),
        ({**form, "csrf_token": "not-the-token"}, {}),
        ({**form, "csrf_token": token}, {"Origin": "https://evil.example"}),
        ({**form, "csrf_token": token}, {"Sec-Fetch-Site": "cross-site"}),
    ]:
        refused = browser.post("/console/actions/apply", data=data, headers=headers)
        assert refused.status_code == 403, (data, headers)
        assert app.state.runtime.dispatcher.status(plain(message_id)).state == "dead"
    no_csrf_logout = browser.post("/console/logout", follow_redirects=False)
    assert no_csrf_logout.status_code == 403

    # Unconfirmed: nothing done either.
    unconfirmed = browser.post(
        "/console/actions/apply", data={**form, "confirmed": "", "csrf_token": token}
    )
    assert unconfirmed.status_code == 400
    assert app.state.runtime.dispatcher.status(plain(message_id)).state == "dead"

    done = browser.post(
        "/console/actions/apply",
        data={**form, "csrf_token": token},
        headers={"Origin": "http://127.0.0.1:8087", "Sec-Fetch-Site": "same-origin"},
    )
    assert done.status_code == 200 and f'data-id="{message_id}" data-done="yes"' in done.text
    record = app.state.runtime.dispatcher.status(plain(message_id))
    assert record.state == "queued"
    assert record.history[-1].detail == "replayed from dead letters by client ops (console)"


def test_logout_ends_the_session_everywhere(browser: TestClient) -> None:
    assert sign_in(browser).status_code == 303
    cookie = browser.cookies.get("dispatcher_console")
    token = csrf_of(browser.get("/console/messages").text)
    out = browser.post("/console/logout", data={"csrf_token": token}, follow_redirects=False)
    assert out.status_code == 303 and out.headers["location"] == "/console/login"
    # The old cookie, replayed after logout, opens nothing.
    browser.cookies.set("dispatcher_console", cookie, path="/console")
    again = browser.get("/console/messages", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"].startswith("/console/login")


def test_a_one_time_link_signs_in_once(browser: TestClient, redis_client: Any) -> None:
    link = issue_login_link(redis_client, "http://127.0.0.1:8087", user="dev (link)")
    path = link.removeprefix("http://127.0.0.1:8087")
    first = browser.get(path, follow_redirects=False)
    assert first.status_code == 303 and first.headers["location"] == "/console/live"
    assert "dev (link)" in browser.get("/console/messages").text
    browser.cookies.clear()
    second = browser.get(path, follow_redirects=False)
    assert second.status_code == 403 and "dispatcher_console=" not in second.headers.get(
        "set-cookie", ""
    )


def test_dead_letter_page_filters_and_discards_with_confirmation(
    app: FastAPI, browser: TestClient
) -> None:
    first, second = dead_message(app, "one"), dead_message(app, "two")
    assert sign_in(browser).status_code == 303
    listed = browser.get("/console/dead-letters", params={"client": PLAIN})
    assert first in listed.text and second in listed.text
    assert (
        browser.get("/console/dead-letters", params={"client": "other"}).text.count('name="id"')
        == 0
    )
    assert (
        first in browser.get("/console/dead-letters", params={"code": "service_unavailable"}).text
    )
    bad_time = browser.get("/console/dead-letters", params={"since": "yesterday"})
    assert "is not a date and time" in bad_time.text

    token = csrf_of(listed.text)
    confirm = browser.post(
        "/console/actions/confirm",
        data={"csrf_token": token, "action": "discard", "id": [plain(first).member, "neverSeen"]},
    )
    assert confirm.status_code == 200 and "Discard 2 messages?" in confirm.text
    assert app.state.runtime.dispatcher.status(plain(first)).state == "dead"  # nothing done yet
    outcome = browser.post(
        "/console/actions/apply",
        data={"csrf_token": token, "action": "discard", "confirmed": "yes", "id": [plain(first).member, "neverSeen"]},
    )  # fmt: skip
    assert "Discarded 1 of 2" in outcome.text
    assert f'data-id="{first}" data-done="yes"' in outcome.text
    assert (
        'data-id="neverSeen" data-done="no"' in outcome.text and "no such message" in outcome.text
    )
    after = browser.get("/console/dead-letters", params={"client": PLAIN})
    assert first not in after.text and second in after.text


def test_message_page_shows_the_timeline_and_the_masked_provider_request(
    app: FastAPI, browser: TestClient
) -> None:
    dispatcher = app.state.runtime.dispatcher
    message_id = dispatcher.submit(
        {
            "messageType": 1,
            "from": "u1",
            "to": "u2",
            "messageInfo": {"textMessage": "hello"},
            "ext": {"accessToken": "tok-123456", "note": "keep me"},
        }
    )
    store = dispatcher.store
    lease = store.lease.begin(ref(message_id), "w1", 10)
    store.lease.mark_retrying(
        lease, ProviderError("reach_limit", "429 from Easemob", retryable=True, status=429),
        0.01, "throttled; next attempt in 0.01s",
    )  # fmt: skip
    time.sleep(0.05)
    lease = store.lease.begin(ref(message_id), "w2", 10)
    store.lease.mark_delivered(lease, "easemob-id-1", "delivered via easemob")
    assert sign_in(browser).status_code == 303

    page = browser.get("/console/messages", params={"id": message_id})
    assert page.status_code == 200 and str(page.url).endswith(f"/console/messages/{message_id}")
    text = page.text
    states = re.findall(r'<li class="step state-\w+" data-state="(\w+)"', text)
    assert states == ["queued", "processing", "retrying", "processing", "delivered"]
    assert text.count('<span class="gap">+') == 4  # a duration between every two steps
    assert "easemob-id-1" in text and "reach_limit" in text
    assert "tok-123456" not in text and "keep me" in text and "••••••" in text
    assert "csp" not in page.headers.get("content-security-policy", "csp").lower()
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # None of the sections for data this message does not have.
    assert "Webhook" not in text and "Recipients" not in text

    missing = browser.get("/console/messages/neverSeen1")
    assert missing.status_code == 404 and "no such message" in missing.text
    other_client = browser.get(f"/console/messages/{message_id}", params={"client": PLAIN})
    assert other_client.status_code == 404


def test_live_data_reads_the_counters_and_the_queue(app: FastAPI, browser: TestClient) -> None:
    assert sign_in(browser).status_code == 303
    data = browser.get("/console/live/data").json()
    assert set(data["counters"]) == {"delivered", "retries", "throttled", "dead", "failed"}
    assert [q["name"] for q in data["queues"]] == [app.state.runtime.settings.queue]
    assert isinstance(data["workers"], list) and data["at"] > 0


def test_mounting_the_console_adds_nothing_to_the_submit_path(settings_model: Settings) -> None:
    with_console = create_app(settings_model)
    without = create_app(settings_model.model_copy(update={"console_enabled": False}))
    # The console adds no middleware: the submit path has only its in-flight bound.
    middleware = [[m.cls for m in app.user_middleware] for app in (with_console, without)]
    assert middleware == [[SubmitBound], [SubmitBound]]
    scope = {"type": "http", "method": "POST", "path": SUBMIT, "root_path": "", "headers": []}
    matches = [route.matches(scope)[0] for route in with_console.routes]
    # Routes are tried in order: the submit route matches first, and the mount never does.
    first = matches.index(Match.FULL)
    mount = next(r for r in with_console.routes if isinstance(r, Mount))
    assert with_console.routes.index(mount) > first
    assert mount.matches(scope)[0] is Match.NONE
    assert "/console" not in [getattr(route, "path", "") for route in without.routes]
    assert not any(p.startswith("/console") for p in with_console.openapi()["paths"])


def test_older_dead_letters_page_on_without_shifting_when_more_die(
    app: FastAPI, browser: TestClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("dispatcher.console.app.DEAD_LETTERS_PER_PAGE", 1)
    older = dead_message(app, "older")
    # Dead letters are ordered by the millisecond they died: make the two deaths distinct.
    next_millisecond(app)
    newer = dead_message(app, "newer")
    next_millisecond(app)
    assert sign_in(browser).status_code == 303
    first = browser.get("/console/dead-letters", params={"client": PLAIN})
    assert newer in first.text and older not in first.text
    link = re.search(r'<a href="([^"]+)">Older dead letters', first.text)
    assert link, first.text
    dead_message(app, "died meanwhile")
    second = browser.get(link.group(1).replace("&amp;", "&"))
    assert older in second.text and newer not in second.text


def test_workers_are_listed_from_inspect_and_stay_with_their_last_seen_time(
    browser: TestClient, start_worker: Any
) -> None:
    worker = start_worker()
    args = list(worker.process.args)
    node = str(args[args.index("-n") + 1]).split("@")[0]
    assert sign_in(browser).status_code == 303

    def listed() -> dict[str, Any] | None:
        workers = browser.get("/console/live/data").json()["workers"]
        return next((w for w in workers if w["name"].startswith(f"{node}@")), None)

    deadline = time.monotonic() + 30
    while (seen := listed()) is None and time.monotonic() < deadline:
        time.sleep(0.5)
    assert seen is not None and seen["pid"] == worker.pid and seen["concurrency"] == 32
    worker.stop()
    deadline = time.monotonic() + 30
    while (seen := listed()) is not None and seen["seenAgo"] < 8 and time.monotonic() < deadline:
        time.sleep(0.5)
    # Gone quiet, still listed, with how long ago it last answered.
    assert seen is not None and seen["seenAgo"] >= 8


def test_the_message_page_looks_an_id_up_within_a_client(app: FastAPI, browser: TestClient) -> None:
    shared = "shared" + str(time.time_ns())
    dead_message(app, "plain's", shared)
    dispatcher = app.state.runtime.dispatcher
    dispatcher.submit({**TEXT_MESSAGE, "getMessageId": shared})  # the Python producer's
    assert sign_in(browser).status_code == 303

    both = browser.get(f"/console/messages/{shared}")
    assert both.status_code == 404 and "found for several clients" in both.text
    page = browser.get(f"/console/messages/{shared}", params={"client": PLAIN})
    assert page.status_code == 200
    assert re.search(rf'id="message-client">{PLAIN}\b', page.text)
    assert f'name="id" value="{PLAIN}:{shared}"' in page.text  # its actions name the client
    listed = browser.get("/console/dead-letters", params={"client": PLAIN}).text
    assert f'value="{PLAIN}:{shared}"' in listed
    assert f"/console/messages/{shared}?client={PLAIN}" in listed
