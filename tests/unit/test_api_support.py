"""Shared helpers of the API unit tests (no tests here).

A :class:`Harness` is the app on the real test Redis (the ``redis_url``
fixture) with a queue of its own, driven in-process with Starlette's
TestClient, plus the two questions every rejection test asks: did anything
reach the queue, and is there a status record?
"""

from __future__ import annotations

import json
import time
import uuid
import warnings
from dataclasses import dataclass
from typing import Any

import httpx
import redis

from dispatcher import keys
from dispatcher.api.app import create_app
from dispatcher.api.paths import STATUS, STATUS_MANY, SUBMIT
from dispatcher.api.signing import Algorithm, compute_legacy_sign, compute_sign
from dispatcher.config import Settings
from dispatcher.enqueue import DELIVER_TASK
from dispatcher.ids import DEFAULT_NAMESPACE, MessageRef
from dispatcher.store import PendingLane

with warnings.catch_warnings():
    # Starlette 1.x prefers httpx2 for its TestClient; httpx works and is what we ship.
    warnings.filterwarnings("ignore", message=".*starlette.testclient.*")
    from fastapi.testclient import TestClient

from tests.seed import SEED_BODY  # noqa: F401  (shared by the API tests)

CLIENTS: dict[str, dict[str, Any]] = {
    "c1": {"secret": "secret-one", "channels": ["ch1"]},
    "c2": {"secret": "secret-two", "channels": ["ch2", "ch2b"]},
    "ops": {"secret": "secret-ops", "channels": ["ops"], "admin": True},
    "old": {"secret": "secret-old", "channels": ["old"], "legacy_signing": True, "md5": True},
}
SECRETS = {name: config["secret"] for name, config in CLIENTS.items()}
CHANNELS = {name: config["channels"][0] for name, config in CLIENTS.items()}

TEXT = {
    "messageType": 1,
    "from": "u_sender",
    "to": "u_receiver",
    "messageInfo": {"textMessage": "hi"},
}


def body_of(payload: Any) -> bytes:
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, ensure_ascii=False).encode()


def unique_id() -> str:
    return "t" + uuid.uuid4().hex


@dataclass
class Harness:
    settings: Settings
    http: TestClient
    redis: redis.Redis

    @property
    def app(self) -> Any:
        return self.http.app

    # -- requests ----------------------------------------------------------

    def params(
        self,
        body: bytes = b"",
        *,
        method: str = "POST",
        path: str = SUBMIT,
        client: str = "c1",
        secret: str | None = None,
        channel: str | None = None,
        algorithm: Algorithm = "sha256",
        timestamp: int | bool | None = True,
        nonce: str | bool | None = True,
        legacy: bool = False,
        **extra: str,
    ) -> dict[str, str]:
        """Signed query parameters: v2 for ``method`` and ``path`` with a fresh timestamp and
        nonce, unless told otherwise (``legacy`` signs the seed's v1 way)."""
        params = {"apiVersion": "01", "client": client, "version": "2.0", **extra}
        params["channel"] = channel if channel is not None else CHANNELS.get(client, "none")
        if timestamp is True:
            params["timestamp"] = str(int(time.time()))
        elif timestamp not in (None, False):
            params["timestamp"] = str(timestamp)
        if nonce is True:
            params["nonce"] = uuid.uuid4().hex
        elif nonce not in (None, False):
            params["nonce"] = str(nonce)
        key = secret if secret is not None else SECRETS.get(client, "unknown")
        if legacy:
            params["sign"] = compute_legacy_sign(key, params, body, algorithm)
        else:
            params["sign"] = compute_sign(key, method, path, params, body, algorithm)
        return params

    def submit(
        self, payload: Any, params: dict[str, str] | None = None, **sign: Any
    ) -> httpx.Response:
        body = body_of(payload)
        return self.http.post(
            SUBMIT,
            params=params if params is not None else self.params(body, **sign),
            content=body,
            headers={"Content-Type": "application/json"},
        )

    def status(self, message_id: str, **sign: Any) -> httpx.Response:
        path = STATUS.format(getMessageId=message_id)
        return self.http.get(path, params=self.params(b"", method="GET", path=path, **sign))

    def status_many(self, ids: list[str], **sign: Any) -> httpx.Response:
        body = body_of({"getMessageIds": ids})
        params = self.params(body, path=STATUS_MANY, **sign)
        return self.http.post(STATUS_MANY, params=params, content=body)

    # -- what was left behind ----------------------------------------------

    def queued(self) -> int:
        """Messages waiting for a worker: on the doorbell's pending list, or as their own
        task on the queue list (a ring is not a message)."""
        tasks = self.redis.lrange(self.settings.queue, 0, -1)
        own = sum(json.loads(t)["headers"]["task"] == DELIVER_TASK for t in tasks)
        return int(self.redis.llen(PendingLane(self.settings.queue).pending)) + own

    def has_record(self, message_id: str) -> bool:
        """Whether any client's namespace (or the default one) holds a record of the id."""
        refs = [MessageRef(n, message_id) for n in (*CLIENTS, DEFAULT_NAMESPACE)]
        return bool(
            self.redis.exists(*(k for r in refs for k in (keys.message(r), keys.history(r))))
        )

    def record_count(self) -> int:
        """Records under this harness's own id prefix, in any namespace: whatever it
        generated, nothing else (the test Redis may be shared with other test sessions)."""
        pattern = keys.message(MessageRef("*", f"{self.settings.id_prefix}*"))
        return sum(1 for _ in self.redis.scan_iter(match=pattern, count=1000))

    def close(self) -> None:
        self.http.__exit__(None, None, None)  # the lifespan closes the app's clients
        self.redis.delete(self.settings.queue)
        self.redis.close()


def make_settings(redis_url: str, /, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "redis_url": redis_url,
        "queue": f"api-test-{uuid.uuid4().hex[:12]}",
        "clients": CLIENTS,
        "status_ttl": 600,
        "id_prefix": "t" + uuid.uuid4().hex[:7],
    }
    values.update(overrides)
    return Settings(**values)


def make_harness(redis_url: str, /, **overrides: Any) -> Harness:
    """The app with ``overrides`` (which may point it at a dead Redis); the checks always
    look at the live test Redis of ``redis_url``."""
    settings = make_settings(redis_url, **overrides)
    live = redis.Redis.from_url(redis_url)
    for key in live.scan_iter(match=keys.rate_limit("submit:*")):
        live.delete(key)  # each test starts with full submit budgets
    # One event loop and the lifespan for the whole harness, as a served app has.
    client = TestClient(create_app(settings), raise_server_exceptions=False).__enter__()
    return Harness(settings, client, live)


def envelope_ok(response: httpx.Response) -> dict[str, Any]:
    """The parsed envelope, after checking the parts every answer must have."""
    assert response.headers["content-type"].startswith("application/json"), response.headers
    envelope = response.json()
    assert list(envelope) == ["code", "message", "data", "page", "foot"], envelope
    assert envelope["code"] == response.status_code
    assert envelope["page"] is None
    assert set(envelope["foot"]) == {"operationTime", "servicePhone", "host"}
    return envelope


def field_errors(response: httpx.Response) -> dict[str, str]:
    envelope = envelope_ok(response)
    return {e["field"]: e["error"] for e in envelope["data"]["errors"]}
