"""Safe defaults for running it (docs/security.md): /metrics behind an optional bearer token,
/docs and /openapi.json switchable off, dev mode never open in front of real providers."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher.config import Settings, unsafe_dev_mode
from tests.unit.test_api_support import TEXT, Harness, make_harness


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url, qiniu_domain="http://media.example.com")
    yield harness
    harness.close()


# ---------------------------------------------------------------------------
# Safe defaults: /metrics, /docs, dev mode


def test_metrics_need_the_bearer_token_when_one_is_configured(redis_url: str) -> None:
    api = make_harness(redis_url, metrics_token="scrape-me")
    try:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "scrape-me"}):
            refused = api.http.get("/metrics", headers=headers)
            assert refused.status_code == 401, headers
            assert refused.headers["www-authenticate"] == "Bearer"
            assert b"dispatcher_" not in refused.content
        allowed = api.http.get("/metrics", headers={"Authorization": "Bearer scrape-me"})
        assert allowed.status_code == 200
        assert b"dispatcher_submitted_total" in allowed.content
    finally:
        api.close()


def test_metrics_are_open_without_a_token(api: Harness) -> None:
    assert api.http.get("/metrics").status_code == 200


def test_docs_and_openapi_can_be_switched_off(redis_url: str) -> None:
    api = make_harness(redis_url, api_docs=False)
    try:
        assert api.http.get("/docs").status_code == 404
        assert api.http.get("/openapi.json").status_code == 404
        assert api.submit(TEXT).status_code == 200
    finally:
        api.close()


def test_docs_are_on_by_default(api: Harness) -> None:
    assert api.http.get("/openapi.json").status_code == 200


REAL_EASEMOB = {
    "easemob_org": "acme",
    "easemob_app": "chat",
    "easemob_client_id": "YXA6real",
    "easemob_client_secret": "real-secret",
}


def test_dev_mode_refuses_auth_off_with_real_provider_credentials() -> None:
    refusal = unsafe_dev_mode(Settings(**REAL_EASEMOB), auth=False)
    assert refusal is not None
    assert (
        "Easemob" in refusal and "--auth" in refusal and "DISPATCHER_DEV_ALLOW_NO_AUTH" in refusal
    )
    assert "real-secret" not in refusal


@pytest.mark.parametrize(
    ("settings", "auth"),
    [
        ({}, False),
        (REAL_EASEMOB, True),
        ({**REAL_EASEMOB, "dev_allow_no_auth": True}, False),
        ({k: v for k, v in REAL_EASEMOB.items() if k != "easemob_client_secret"}, False),
    ],
    ids=["simulators", "auth on", "explicit override", "incomplete credentials"],
)
def test_dev_mode_may_start(settings: dict[str, Any], auth: bool) -> None:
    assert unsafe_dev_mode(Settings(**settings), auth=auth) is None


def test_dev_mode_refuses_auth_off_with_named_easemob_apps() -> None:
    apps = {"shop": {"org": "o", "app": "a", "client_id": "YXA6c", "client_secret": "app-secret"}}
    refusal = unsafe_dev_mode(Settings(easemob_apps=apps), auth=False)
    assert refusal is not None and "Easemob" in refusal and "app-secret" not in refusal
