"""Several Easemob apps (docs/operations.md, "Priorities, weights and Easemob apps"): one
app that fails for good (503 to every call, or credentials Easemob refuses) holds back
no other app's messages. Real Redis, real worker processes, real HTTP to a simulator
serving both apps."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from dispatcher import Dispatcher
from dispatcher.channels.easemob_apps import DEFAULT_APP
from dispatcher.config import Settings
from dispatcher.sandbox.easemob import create_easemob_app
from dispatcher.sandbox.easemob_state import EasemobApp
from dispatcher.sandbox.server import ServerThread
from tests.conftest import (
    EASEMOB_APP,
    EASEMOB_CLIENT_ID,
    EASEMOB_CLIENT_SECRET,
    EASEMOB_ORG,
    settings_from_env,
)

pytestmark = pytest.mark.integration

APP2_LIMIT = 20
"""App 2's calls a second in dispatcher's configuration: low enough to see its pace."""
APP2 = EasemobApp(
    org="org-two",
    app="app-two",
    client_id="YXA6two",
    client_secret="two-secret",
    # The simulator admits more than the configured limit: on a loaded machine a late call
    # bunches with the next ones, and the 429 and the pause after it would measure that,
    # not the isolation of the apps (the limiter's accuracy is benchmark P3's subject).
    calls_per_second=APP2_LIMIT * 3 // 2,
    messages_per_minute=100_000,
)
APPS = {
    "two": {
        "org": APP2.org,
        "app": APP2.app,
        "client_id": APP2.client_id,
        "client_secret": APP2.client_secret,
        "calls_per_second": APP2_LIMIT,
        "messages_per_minute": 100_000,
    }
}
CLIENTS = {
    "one": {"secret": "secret-one", "channels": ["c"]},
    "two": {"secret": "secret-two", "channels": ["c"], "easemob_app": "two"},
}


@pytest.fixture()
def two_apps() -> Iterator[tuple[str, Any]]:
    """A simulator serving the default app (fast: its own limits stay out of the way) and
    app 2."""
    app = create_easemob_app(
        org=EASEMOB_ORG,
        app=EASEMOB_APP,
        client_id=EASEMOB_CLIENT_ID,
        client_secret=EASEMOB_CLIENT_SECRET,
        calls_per_second=1000,
        messages_per_minute=1_000_000,
        more_apps=[APP2],
    )
    with ServerThread(app) as server:
        yield server.url, app


def batch(prefix: str, count: int) -> list[dict[str, Any]]:
    return [
        {
            "messageType": 1,
            "from": "u1",
            "to": f"u{i}",
            "messageInfo": {"textMessage": "hi"},
            "getMessageId": f"{prefix}{i}",
        }
        for i in range(count)
    ]


def wait_until_final(d: Dispatcher, ids: list[str], timeout: float) -> list[Any]:
    """The records once every one is delivered, failed or dead (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        records = d.status_many(ids)
        if all(r is not None and r.state.terminal for r in records):
            return records
        if time.monotonic() > deadline:
            states = sorted({str(r.state) if r else "missing" for r in records})
            raise AssertionError(f"not final in {timeout}s: states {states}")
        time.sleep(0.2)


def delivered_pace(d: Dispatcher, ids: list[Any]) -> float:
    """Deliveries a second of ``ids``, once all are delivered, through app 2."""
    records = wait_until_final(d, [str(i) for i in ids], timeout=90)
    assert {r.state for r in records} == {"delivered"}
    assert {r.app for r in records} == {"two"}
    delivered = sorted(r.deliveredAt.timestamp() for r in records)
    return (len(delivered) - 1) / (delivered[-1] - delivered[0])


@pytest.mark.parametrize("failure", ["503 for every call", "credentials refused"])
def test_a_failing_app_delays_no_other_apps_messages(
    failure: str, two_apps: tuple[str, Any], start_worker: Any
) -> None:
    url, sim = two_apps
    overrides: dict[str, str] = {
        "easemob_base_url": url,
        "easemob_apps": json.dumps(APPS),
        "clients": json.dumps(CLIENTS),
        # The default backoff: app 1's messages keep being tried all along.
        "backoff_base": "1.0",
        "backoff_cap": "300",
    }
    if failure == "credentials refused":
        overrides["easemob_client_secret"] = "not-the-secret"
    workers = [start_worker(**overrides) for _ in range(2)]
    plain = {k: v for k, v in workers[0].env.items() if k.startswith("DISPATCHER_")}
    for name in ("DISPATCHER_CLIENTS", "DISPATCHER_EASEMOB_APPS"):
        plain.pop(name)
    values = {**settings_from_env(plain).model_dump(), "clients": CLIENTS, "easemob_apps": APPS}
    settings = Settings(**values)
    run = uuid.uuid4().hex[:8]
    one = Dispatcher(settings, namespace="one")
    two = Dispatcher(settings, namespace="two")
    app2 = sim.state.easemob_apps[f"{APP2.org}#{APP2.app}"]
    try:
        # App 2's pace alone on this machine now (a loaded machine runs below the limit).
        alone = delivered_pace(two, two.submit_many(batch(f"c{run}x", 120), client="two"))
        assert alone >= 0.6 * APP2_LIMIT, f"app 2 alone: {alone:.1f}/s of {APP2_LIMIT}"

        if failure == "503 for every call":
            fault = {"path": f"^/{EASEMOB_ORG}/{EASEMOB_APP}/", "status": 503}
            httpx.post(f"{url}/_sandbox/faults", json=fault, timeout=10).raise_for_status()
        ids_one = one.submit_many(batch(f"a{run}x", 300), client="one")
        ids_two = two.submit_many(batch(f"b{run}x", 200), client="two")
        refused = [i for i in ids_one + ids_two if not isinstance(i, str)]
        assert not refused, refused[:3]
        behind = delivered_pace(two, ids_two)
        assert behind >= 0.85 * alone, f"app 2: {behind:.1f}/s behind app 1, {alone:.1f}/s alone"
        assert app2.stats()["rate_limited_429"] == 0
        assert app2.stats()["messages_accepted"] == 120 + len(ids_two)

        # App 1 failed all along: none of its messages went out, and it was tried meanwhile.
        stats_one = sim.state.easemob.stats()
        assert stats_one["messages_accepted"] == 0
        ledger = httpx.get(f"{url}/_sandbox/requests", timeout=10).json()
        assert any(e["path"].startswith(f"/{EASEMOB_ORG}/{EASEMOB_APP}/") for e in ledger)
        left = one.status_many([str(i) for i in ids_one])
        assert all(r is not None and r.app == DEFAULT_APP for r in left)
        assert not any(r is not None and r.state == "delivered" for r in left)
    finally:
        for d in (one, two):
            d.redis.delete(settings.queue)
            d.close()
