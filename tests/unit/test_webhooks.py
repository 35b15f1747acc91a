"""Webhook pieces on their own: secrets, the destination guard, bodies, signatures, answers,
and the operators' HTTP endpoints (docs/webhooks.md)."""

from __future__ import annotations

import base64
import contextlib
import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from pydantic import ValidationError
from standardwebhooks.webhooks import Webhook

from dispatcher import keys
from dispatcher.api.webhooks import DEAD_LETTERS, ENDPOINTS, REPLAY
from dispatcher.config import ClientConfig
from dispatcher.webhooks.config import WebhookEndpoint
from dispatcher.webhooks.guard import RefusedDestination, check_destination
from dispatcher.webhooks.outbox import Event, Outcome, Result, WebhookStore, delivery_member
from dispatcher.webhooks.send import (
    MAX_ANSWER_BYTES,
    MAX_BODY_BYTES,
    Verdict,
    WebhookHttp,
    build_body,
    post,
    retry_after_seconds,
    signed_headers,
)
from tests.conftest import outbox_keys
from tests.unit.test_api_support import CLIENTS, Harness, envelope_ok, make_harness

SECRET = "whsec_" + base64.b64encode(b"s" * 32).decode()
OLD_SECRET = "whsec_" + base64.b64encode(b"o" * 24).decode()


def endpoint(**fields: Any) -> WebhookEndpoint:
    return WebhookEndpoint.model_validate(
        {"url": "https://hooks.example/x", "secret": SECRET, **fields}
    )


@pytest.mark.parametrize(
    "secret",
    ["s3cr3t", "whsec_not base64!", "whsec_" + base64.b64encode(b"x" * 16).decode(),
     "whsec_" + base64.b64encode(b"x" * 65).decode()],
)  # fmt: skip
def test_a_secret_that_is_not_whsec_and_24_to_64_bytes_is_refused(secret: str) -> None:
    with pytest.raises(ValidationError):
        endpoint(secret=secret)


def test_a_misspelt_endpoint_field_or_unknown_event_is_refused() -> None:
    with pytest.raises(ValidationError):
        endpoint(event=["message.delivered"])
    with pytest.raises(ValidationError):
        endpoint(events=["message.sent"])
    config = ClientConfig.model_validate(
        {"secret": "x", "webhooks": [{"url": "https://a.example", "secret": SECRET}]}
    )
    assert [e.value for e in config.webhooks[0].events] == [
        "message.delivered", "message.partially_delivered", "message.failed", "message.dead"
    ]  # fmt: skip


@pytest.mark.parametrize(
    "url", ["http://10.0.0.8/h", "http://192.168.1.2/h", "http://169.254.169.254/latest",
            "http://100.100.100.200/", "http://[::ffff:10.1.2.3]/", "http://[fe80::1]/",
            "http://0.0.0.0/", "ftp://hooks.example/"],
)  # fmt: skip
def test_private_link_local_and_metadata_destinations_are_always_refused(url: str) -> None:
    with pytest.raises(RefusedDestination):
        check_destination(url, allow_loopback=True)


def test_loopback_is_refused_unless_allowed() -> None:
    for url in ("http://127.0.0.1:9/h", "http://localhost:9/h", "http://[::1]:9/h"):
        with pytest.raises(RefusedDestination, match="loopback"):
            check_destination(url, allow_loopback=False)
        check_destination(url, allow_loopback=True)


def test_a_public_address_passes() -> None:
    check_destination("https://93.184.215.14/hooks", allow_loopback=False)


def event(**snapshot: Any) -> Event:
    fields = {
        "type": "message.failed",
        "member": "shop:m0abc",
        "client": "shop",
        "at": 1764422400123,
    }
    return Event.parse(json.dumps({**fields, **snapshot}))


def test_the_body_is_the_records_public_fields_and_the_id_is_stable() -> None:
    error = json.dumps({"code": "bad_to", "message": "no such user", "retryable": False})
    first = event(state="failed", attempts="2", lastError=error, providerMessageId=None)
    body = json.loads(build_body(first, "m0abc"))
    assert body == {
        "type": "message.failed",
        "timestamp": "2025-11-29T13:20:00.123Z",
        "data": {"getMessageId": "m0abc", "state": "failed", "attempts": 2, "channel": None,
                 "providerMessageId": None, "deliveredAt": None, "readAt": None,
                 "lastError": {"code": "bad_to", "message": "no such user", "retryable": False}},
    }  # fmt: skip
    assert first.id == Event.parse(first.raw).id and first.id.startswith("msg_")
    assert first.id != event(state="failed", attempts="3").id


def test_a_huge_error_text_still_makes_a_body_under_20_kb() -> None:
    error = json.dumps({"code": "x", "message": "é" * 50_000, "retryable": True})
    assert len(build_body(event(state="dead", lastError=error), "m0abc").encode()) < MAX_BODY_BYTES


def test_signatures_verify_with_standardwebhooks_and_with_each_secret_while_rotating() -> None:
    body = build_body(event(state="delivered"), "m0abc")
    rotating = endpoint(previous_secret=OLD_SECRET)
    headers = signed_headers(rotating, "msg_1", body)
    assert len(headers["webhook-signature"].split(" ")) == 2
    for secret in (SECRET, OLD_SECRET):
        assert Webhook(secret).verify(body, headers)["data"]["getMessageId"] == "m0abc"
    tampered = body.replace("m0abc", "m0abd")
    with pytest.raises(Exception, match="signature"):
        Webhook(SECRET).verify(tampered, headers)


@contextmanager
def answering(status: int, body: bytes = b"", **headers: str) -> Iterator[tuple[WebhookHttp, str]]:
    """Connections allowed to loopback, and the URL of a receiver on 127.0.0.1 answering
    every request with ``status``, ``headers`` and ``body``."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers["content-length"]))
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            with contextlib.suppress(OSError):  # the client may stop reading
                self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    http = WebhookHttp(timeout=5, allow_loopback=True)
    try:
        yield http, f"http://127.0.0.1:{server.server_address[1]}/h"
    finally:
        http.close()
        server.shutdown()
        server.server_close()


def answer(status: int, **headers: str) -> Any:
    with answering(status, **headers) as (http, url):
        return post(http, endpoint(url=url), "msg_1", "{}")


def test_what_an_answer_means() -> None:
    assert answer(204).verdict is Verdict.DELIVERED
    assert answer(410).verdict is Verdict.GONE
    moved = answer(302, location="https://elsewhere.example/")
    assert moved.verdict is Verdict.FAILED and "redirect" in moved.error
    assert answer(503, **{"retry-after": "120"}).retry_after == 120
    assert answer(500, **{"retry-after": "120"}).retry_after is None  # only when throttled


def test_a_long_answer_is_read_only_so_far_and_its_connection_not_reused() -> None:
    """Read in part, the rest of the answer is left unread: were its connection reused,
    the next answer would be read from the middle of this one's body."""
    with answering(200, b"x" * (3 * MAX_ANSWER_BYTES)) as (http, url):
        for _ in range(3):
            assert post(http, endpoint(url=url), "msg_1", "{}").verdict is Verdict.DELIVERED


def test_retry_after_as_seconds_or_date_capped_at_a_day() -> None:
    assert retry_after_seconds("7") == 7
    later = format_datetime(datetime.now(tz=UTC) + timedelta(seconds=90), usegmt=True)
    assert 80 <= (retry_after_seconds(later) or 0) <= 91
    assert retry_after_seconds("9999999") == 86400
    assert retry_after_seconds("soon") is None


# -- operators over HTTP


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    clients = {
        **CLIENTS,
        "c1": {**CLIENTS["c1"], "webhooks": [{"url": "https://a.example/h", "secret": SECRET}]},
    }
    harness = make_harness(redis_url, clients=clients)
    yield harness
    harness.close()


def dead_delivery(api: Harness) -> str:
    store = WebhookStore(api.redis)
    endpoint_id = api.settings.clients["c1"].webhooks[0].endpoint_id("c1")
    raw = event(state="dead", client="c1")
    api.redis.rpush(keys.shard_of(raw.member).outbox, raw.raw)
    member = delivery_member(endpoint_id, raw.id)
    assert store.fan_out([(raw, "m0abc", {member: build_body(raw, "m0abc")})]) == 1
    assert store.fan_out([(raw, "m0abc", {member: "again"})]) == 0  # taken already: nothing twice
    [(claimed, claim)] = [c for c in store.claim_due(100, 60) if c[0] == member]
    delivery = store.delivery(claimed)
    assert delivery is not None and delivery.claim == claim
    store.record(delivery, Outcome.DEAD, attempted=True, status=500, error="HTTP 500")
    return member


def get(api: Harness, path: str, client: str = "ops") -> httpx.Response:
    return api.http.get(path, params=api.params(b"", method="GET", path=path, client=client))


def test_operators_see_endpoints_health_and_dead_letters_and_replay_them(api: Harness) -> None:
    member = dead_delivery(api)
    [view] = envelope_ok(get(api, ENDPOINTS))["data"]
    assert view["client"] == "c1" and view["failures"] >= 1 and view["lastError"] == "HTTP 500"
    assert SECRET not in json.dumps(view)
    letters = envelope_ok(get(api, DEAD_LETTERS))["data"]
    assert any(f"{d['endpoint']}:{d['webhookId']}" == member for d in letters)
    params = api.params(b"", method="POST", path=REPLAY, client="ops", delivery=member)
    replayed = envelope_ok(api.http.post(REPLAY, params=params))["data"]
    assert replayed == {"replayed": [member], "skipped": []}
    assert api.redis.zscore(keys.WEBHOOK_DUE, member) is not None
    assert get(api, ENDPOINTS, client="c1").status_code == 403


def test_an_endpoint_failing_for_the_disable_period_is_disabled_and_says_so(
    redis_url: str,
) -> None:
    import redis as redis_lib

    from dispatcher.config import Settings
    from dispatcher.webhooks.task import Senders, run_webhook_task

    client = redis_lib.Redis.from_url(redis_url)
    with answering(500) as (http, url):
        hooks = [{"url": url, "secret": SECRET}]
        settings = Settings(clients={"c1": {"secret": "x", "webhooks": hooks}})
        endpoint_id = settings.clients["c1"].webhooks[0].endpoint_id("c1")
        store = WebhookStore(client)
        raw = event(state="delivered", client="c1", at=int(datetime.now(tz=UTC).timestamp() * 1000))
        member = delivery_member(endpoint_id, raw.id)
        client.rpush(keys.shard_of(raw.member).outbox, raw.raw)
        store.fan_out([(raw, "m0abc", {member: build_body(raw, "m0abc")})])
        six_days_ago = int((datetime.now(tz=UTC) - timedelta(days=6)).timestamp() * 1000)
        client.hset(keys.webhook_endpoint(endpoint_id), "failingSince", six_days_ago)
        [(_, claim)] = [c for c in store.claim_due(1000, 60) if c[0] == member]
        task = SimpleNamespace(
            settings=settings,
            subscriptions=settings.webhook_subscriptions(),
            store=store,
            http=http,
            senders=Senders(),
        )
        [outcome] = run_webhook_task(task, [[member, claim]], time.time())  # type: ignore[arg-type]
        assert outcome == "dead"
        assert "failing for 5 day(s)" in (store.disabled(endpoint_id) or "")
    client.close()


def test_the_easemob_simulator_signs_its_callbacks_and_sends_a_failed_one_once_more() -> None:
    from dispatcher.channels.easemob.callbacks import security
    from dispatcher.sandbox.easemob_callbacks import CallbackRule, CallbackSender
    from dispatcher.sandbox.server import ServerThread

    got: list[dict[str, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        message = await receive()
        got.append(json.loads(message["body"]))
        status = 500 if len(got) == 1 else 200
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    with ServerThread(app) as server:
        sender = CallbackSender("org#app", CallbackRule(url=server.url, secret="s"))
        sender.message_sent("u1", "chat", {"u2": "123"})
        deadline = time.monotonic() + 10
        while len(sender.log) < 1 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert len(got) == 2 and got[0] == got[1]  # Easemob's retry: the same call again
    body = got[0]
    assert body["security"] == security(body["callId"], "s", body["timestamp"])
    assert body["msg_id"] == "123" and body["eventType"] == "chat"
    assert sender.log[0]["status"] == 200


def test_a_batch_is_recorded_in_one_call_and_a_stale_claim_changes_nothing(
    redis_url: str,
) -> None:
    import redis as redis_lib

    client = redis_lib.Redis.from_url(redis_url)
    store = WebhookStore(client)
    endpoint_id = "ep_batch"
    events = [event(state="delivered", attempts=str(i)) for i in range(3)]
    members = [delivery_member(endpoint_id, e.id) for e in events]
    for e, member in zip(events, members, strict=True):
        client.rpush(keys.shard_of(e.member).outbox, e.raw)
        store.fan_out([(e, "m0abc", {member: build_body(e, "m0abc")})])
    claims = dict(c for c in store.claim_due(1000, 60) if c[0] in members)
    # Another worker claims the third again: this batch's claim of it is stale.
    client.hincrby(keys.webhook_delivery(members[2]), "claim", 1)
    done, retry, stale = store.deliveries(members)
    assert done and retry and stale and stale.claim == claims[members[2]] + 1
    old_claim = replace(stale, claim=claims[members[2]])
    results = [
        Result(done, Outcome.DELIVERED, True, 204),
        Result(retry, Outcome.RETRYING, True, 503, "HTTP 503", next_in=30),
        Result(old_claim, Outcome.DEAD, True, 500, "HTTP 500"),
    ]
    assert store.record_all(results) == ["ok", "ok", "stale"]
    assert client.exists(keys.webhook_delivery(members[0])) == 0
    due_in_ms = (client.zscore(keys.WEBHOOK_DUE, members[1]) or 0) - time.time() * 1000
    assert due_in_ms > 29_000
    assert not {d.member for d in store.dead_letters()} & set(members)
    health = store.endpoint_health(endpoint_id)
    assert (health["attempts"], health["successes"], health["failures"]) == ("2", "1", "1")
    with pytest.raises(ValueError, match="one endpoint"):
        store.record_all(
            [results[0], replace(results[1], delivery=replace(retry, member="ep_x:m"))]
        )
    client.close()


def test_senders_keep_the_order_and_at_most_per_endpoint_requests_in_flight() -> None:
    from dispatcher.webhooks.task import PER_ENDPOINT, Senders

    together = threading.Barrier(PER_ENDPOINT, timeout=30)  # breaks unless that many at once
    in_flight, most = [0], [0]
    lock = threading.Lock()

    def send(item: int) -> int:
        with lock:
            in_flight[0] += 1
            most[0] = max(most[0], in_flight[0])
        together.wait()
        with lock:
            in_flight[0] -= 1
        return item * 2

    items = list(range(3 * PER_ENDPOINT))
    assert Senders().map("ep_a", send, items) == [i * 2 for i in items]
    assert most[0] == PER_ENDPOINT


def test_one_pump_of_several_works_and_another_takes_over_when_it_stops(
    redis_url: str,
) -> None:
    import redis as redis_lib

    from dispatcher.webhooks.config import Subscriptions
    from dispatcher.webhooks.pump import WebhookPump

    client = redis_lib.Redis.from_url(redis_url)
    client.delete(*outbox_keys(), keys.WEBHOOK_DUE, keys.WEBHOOK_PUMP)
    subscriptions = Subscriptions({"shop": [endpoint()]})
    published: dict[str, list[str]] = {"a": [], "b": []}

    def pump(name: str) -> WebhookPump:
        def publish(batch: list[tuple[str, int]]) -> None:
            published[name] += [member for member, _ in batch]

        store = WebhookStore(client)
        return WebhookPump(store, subscriptions, publish, interval=0.05, claim_seconds=60)

    def record(count: int, first: int) -> set[str]:
        events = [event(state="failed", attempts=str(first + i)) for i in range(count)]
        for e in events:
            client.rpush(keys.shard_of(e.member).outbox, e.raw)
        return {delivery_member(endpoint().endpoint_id("shop"), e.id) for e in events}

    def wait_for(members: set[str]) -> None:
        deadline = time.monotonic() + 10
        while not members <= set(published["a"] + published["b"]):
            assert time.monotonic() < deadline, published
            time.sleep(0.02)

    pumps = {"a": pump("a").start(), "b": pump("b").start()}
    try:
        first = record(30, 0)
        wait_for(first)
        time.sleep(0.3)  # several rounds of both pumps
        holder = client.get(keys.WEBHOOK_PUMP)
        [working] = [name for name, p in pumps.items() if p.owner.encode() == holder]
        other = "b" if working == "a" else "a"
        assert sorted(published[working]) == sorted(first) and published[other] == []
        assert client.pttl(keys.WEBHOOK_PUMP) > 1000  # renewed every round

        pumps[working].stop()  # gives the lease up: the other pump takes over at once
        second = record(5, 100)
        wait_for(second)
        assert sorted(published[other]) == sorted(second)
        assert client.get(keys.WEBHOOK_PUMP) == pumps[other].owner.encode()
    finally:
        for p in pumps.values():
            p.stop()
    assert client.exists(keys.WEBHOOK_PUMP) == 0
    client.close()
