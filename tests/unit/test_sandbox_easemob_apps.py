"""The Easemob simulator serving several org/apps on one port: each app with its own
credentials, tokens, limits, counters and faults (docs/operations.md)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from dispatcher.config import Settings
from dispatcher.sandbox.easemob import create_easemob_app, create_easemob_app_from_settings
from dispatcher.sandbox.easemob_state import EasemobApp
from dispatcher.sandbox.server import ServerThread

ONE = {"org": "org1", "app": "app1", "client_id": "YXA6one", "client_secret": "one-secret"}
TWO = EasemobApp(
    org="org2",
    app="app2",
    client_id="YXA6two",
    client_secret="two-secret",
    calls_per_second=3,
    messages_per_minute=1000,
)


@pytest.fixture()
def http() -> Iterator[httpx.Client]:
    app = create_easemob_app(**ONE, calls_per_second=1000, more_apps=[TWO])
    with ServerThread(app) as server, httpx.Client(base_url=server.url, timeout=5) as client:
        yield client


def token(http: httpx.Client, org: str, app: str, client_id: str, secret: str) -> httpx.Response:
    body = {"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret}
    return http.post(f"/{org}/{app}/token", json=body)


def send(http: httpx.Client, org: str, app: str, bearer: str) -> httpx.Response:
    body = {"target_type": "users", "target": ["u1"], "msg": {"type": "txt", "msg": "hi"}}
    return http.post(
        f"/{org}/{app}/messages", json=body, headers={"Authorization": f"Bearer {bearer}"}
    )


def test_each_app_takes_only_its_own_credentials_and_tokens(http: httpx.Client) -> None:
    one = token(http, "org1", "app1", "YXA6one", "one-secret")
    two = token(http, "org2", "app2", "YXA6two", "two-secret")
    assert one.status_code == two.status_code == 200
    assert token(http, "org2", "app2", "YXA6one", "one-secret").status_code == 400
    assert send(http, "org1", "app1", one.json()["access_token"]).status_code == 200
    assert send(http, "org2", "app2", two.json()["access_token"]).status_code == 200
    # A token of one app is unknown to the other.
    assert send(http, "org2", "app2", one.json()["access_token"]).status_code == 401
    assert http.get("/_sandbox/easemob/stats").json()["messages_accepted"] == 1
    stats_two = http.get("/_sandbox/easemob/stats", params={"appkey": "org2#app2"}).json()
    assert stats_two["messages_accepted"] == 1 and stats_two["tokens_issued"] == 1


def test_each_app_has_its_own_limits(http: httpx.Client) -> None:
    one = token(http, "org1", "app1", "YXA6one", "one-secret").json()["access_token"]
    two = token(http, "org2", "app2", "YXA6two", "two-secret").json()["access_token"]
    codes_two = [send(http, "org2", "app2", two).status_code for _ in range(6)]
    assert 429 in codes_two  # app 2 admits 3 calls a second
    assert all(send(http, "org1", "app1", one).status_code == 200 for _ in range(6))


def test_a_fault_for_one_app_leaves_the_other_alone(http: httpx.Client) -> None:
    one = token(http, "org1", "app1", "YXA6one", "one-secret").json()["access_token"]
    two = token(http, "org2", "app2", "YXA6two", "two-secret").json()["access_token"]
    http.post("/_sandbox/faults", json={"path": "^/org1/app1/", "status": 503}).raise_for_status()
    assert send(http, "org1", "app1", one).status_code == 503
    assert send(http, "org2", "app2", two).status_code == 200


def test_an_app_not_served_is_easemobs_404(http: httpx.Client) -> None:
    response = token(http, "org3", "app3", "x", "y")
    assert response.status_code == 404
    assert response.json()["error"] == "organization_application_not_found"
    assert http.get("/_sandbox/easemob/stats", params={"appkey": "org3#app3"}).status_code == 404


def test_the_settings_apps_are_served_too() -> None:
    settings = Settings(
        easemob_org="org1",
        easemob_app="app1",
        easemob_client_id="YXA6one",
        easemob_client_secret="one-secret",
        easemob_apps={
            "shop": {"org": "org2", "app": "app2", "client_id": "c", "client_secret": "s"}
        },
    )
    app = create_easemob_app_from_settings(settings)
    assert set(app.state.easemob_apps) == {"org1#app1", "org2#app2"}
    assert app.state.easemob_apps["org2#app2"].config.client_secret == "s"
