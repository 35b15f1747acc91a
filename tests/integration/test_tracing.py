"""One message, one trace (docs/operations.md, "Tracing"): the API and a worker run as real
processes exporting OTLP/HTTP to a receiver on loopback; the caller's ``traceparent``, the
submit, the enqueue, a failed attempt, its retry and both provider calls share its trace
id, carry the getMessageId, and no span attribute holds a secret."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from dispatcher.client import Client
from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.webhook_receiver import create_webhook_receiver
from tests.conftest import EASEMOB_APP, EASEMOB_CLIENT_SECRET, EASEMOB_ORG, ApiProcess

pytestmark = pytest.mark.integration

MESSAGES_PATH = f"/{EASEMOB_ORG}/{EASEMOB_APP}/messages"
CLIENT_ID = "traced-client"
CLIENT_SECRET = "traced-client-secret"
CHANNEL = "app"


@dataclass
class ReceivedSpan:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    service: str


@dataclass
class Receiver:
    """What an OTLP/HTTP collector would have stored, decoded from the protobuf bodies."""

    spans: list[ReceivedSpan] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, body: bytes) -> None:
        request = ExportTraceServiceRequest.FromString(body)
        with self.lock:
            for resource_spans in request.resource_spans:
                resource = _attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        self.spans.append(
                            ReceivedSpan(
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                span.name,
                                span.kind,
                                _attributes(span.attributes),
                                str(resource.get("service.name")),
                            )
                        )

    def in_trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def _attributes(pairs: Any) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        found[pair.key] = getattr(pair.value, kind) if kind else None
    return found


@pytest.fixture()
def receiver() -> Iterator[tuple[str, Receiver]]:
    store = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            if self.path == "/v1/traces":
                store.add(body)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
            else:
                reply = b""
                self.send_response(404)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", store
    server.shutdown()
    server.server_close()


@pytest.fixture()
def clients() -> dict[str, Any]:
    """``DISPATCHER_CLIENTS`` of the API (and of a worker that sends webhooks)."""
    return {CLIENT_ID: {"secret": CLIENT_SECRET, "channels": [CHANNEL]}}


@pytest.fixture()
def api_process(
    worker_env: dict[str, str],
    receiver: tuple[str, Receiver],
    clients: dict[str, Any],
    tmp_path: Path,
) -> Iterator[str]:
    """``dispatcher api`` as its own process, tracing to the receiver."""
    env = {
        **worker_env,
        **tracing_env(receiver[0], "dispatcher-api"),
        "DISPATCHER_CLIENTS": json.dumps(clients),
    }
    server = ApiProcess.start(env, tmp_path / "api.log")
    yield server.url
    server.stop()


def tracing_env(endpoint: str, service: str) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        "OTEL_SERVICE_NAME": service,
        "OTEL_BSP_SCHEDULE_DELAY": "100",  # export within 0.1 s, not the default 5 s
    }


class WithTraceparent(httpx.HTTPTransport):
    """The caller's own trace: every request carries ``traceparent``."""

    def __init__(self, traceparent: str) -> None:
        super().__init__()
        self.traceparent = traceparent

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        request.headers["traceparent"] = self.traceparent
        return super().handle_request(request)


def wait_for_spans(
    receiver: Receiver, trace_id: str, wanted: dict[str, int], timeout: float = 30.0
) -> list[ReceivedSpan]:
    """The trace's spans once it holds at least ``wanted[name]`` spans of each name."""
    deadline = time.monotonic() + timeout
    while True:
        spans = receiver.in_trace(trace_id)
        counts = {name: sum(s.name == name for s in spans) for name in wanted}
        if all(counts[name] >= n for name, n in wanted.items()):
            return spans
        if time.monotonic() > deadline:
            names = sorted(s.name for s in spans)
            raise AssertionError(f"trace {trace_id}: wanted {wanted}, got {names}")
        time.sleep(0.1)


def test_one_message_one_trace_across_the_api_and_a_retrying_worker(
    worker_env: dict[str, str],
    easemob: Any,
    start_worker: Any,
    receiver: tuple[str, Receiver],
    api_process: str,
    redis_url: str,
) -> None:
    endpoint, store = receiver
    worker_env.update(tracing_env(endpoint, "dispatcher-worker"))
    worker = start_worker()
    message_id = "tr" + uuid.uuid4().hex
    easemob.fault(
        path=MESSAGES_PATH,
        body_contains=message_id,
        status=503,
        body={"error": "service_unavailable", "error_description": "try later"},
        times=1,
    )
    trace_id = uuid.uuid4().hex
    caller_span = uuid.uuid4().hex[:16]
    transport = WithTraceparent(f"00-{trace_id}-{caller_span}-01")
    with Client(api_process, CLIENT_ID, CLIENT_SECRET, channel=CHANNEL, transport=transport) as api:
        submitted = api.submit(
            {
                "messageType": 1,
                "from": "u1",
                "to": "u2",
                "messageInfo": {"textMessage": "trace me"},
                "getMessageId": message_id,
            }
        )
        assert submitted == message_id
        deadline = time.monotonic() + 30
        record = api.status(message_id)
        while (record or {}).get("state") != "delivered" and time.monotonic() < deadline:
            time.sleep(0.05)
            record = api.status(message_id)
    assert record is not None and record["state"] == "delivered" and record["attempts"] == 2

    spans = wait_for_spans(
        store,
        trace_id,
        {
            "dispatcher.submit": 1,
            "dispatcher.enqueue": 1,
            "dispatcher.attempt": 2,
            "dispatcher.lease": 2,
            "dispatcher.provider_call": 2,
        },
    )
    by_name: dict[str, list[ReceivedSpan]] = {}
    for span in spans:
        by_name.setdefault(span.name, []).append(span)

    # The HTTP submit: the API's server span continues the caller's span.
    server = [s for s in spans if s.kind == 2 and s.service == "dispatcher-api"]
    submit_server = [s for s in server if s.parent_span_id == caller_span]
    assert submit_server, [(s.name, s.parent_span_id) for s in server]
    (submit,) = by_name["dispatcher.submit"]
    assert submit.attributes["getMessageId"] == message_id
    assert submit.attributes["dispatcher.client"] == CLIENT_ID
    assert submit.attributes["dispatcher.channel"] == "easemob"
    (enqueue,) = by_name["dispatcher.enqueue"]
    assert enqueue.parent_span_id == submit.span_id

    # Both attempts (the 503, then its retry) continue the submit's span, in the worker.
    attempts = sorted(
        by_name["dispatcher.attempt"], key=lambda s: s.attributes["dispatcher.attempt"]
    )
    assert [a.attributes["dispatcher.attempt"] for a in attempts] == [1, 2]
    assert [a.attributes["dispatcher.outcome"] for a in attempts] == ["retrying", "delivered"]
    assert attempts[0].attributes["dispatcher.error_code"]
    for attempt in attempts:
        assert attempt.service == "dispatcher-worker"
        assert attempt.parent_span_id == submit.span_id
        assert attempt.attributes["getMessageId"] == message_id
        assert attempt.attributes["dispatcher.client"] == CLIENT_ID
        assert attempt.attributes["dispatcher.channel"] == "easemob"
    calls = by_name["dispatcher.provider_call"]
    assert {c.parent_span_id for c in calls} == {a.span_id for a in attempts}
    # Under each provider call, httpx's client span of the POST to Easemob.
    call_ids = {c.span_id for c in calls}
    http_posts = [s for s in spans if s.kind == 3 and s.parent_span_id in call_ids]
    assert len(http_posts) >= 2, [(s.name, s.kind) for s in spans]

    # The status record keeps the trace for attempts no task header announces.
    client = redis.Redis.from_url(redis_url)
    stored = [
        client.hget(key, "traceparent")
        for key in client.scan_iter(match=f"*{message_id}*")
        if client.type(key) == b"hash"
    ]
    client.close()
    assert [s.decode().split("-")[1:3] for s in stored if s] == [[trace_id, submit.span_id]]

    # The worker's lines about the message name the trace and the span they were written in.
    about = [line for line in worker.log().splitlines() if f"getMessageId={message_id}" in line]
    assert about and all(f"trace_id={trace_id} span_id=" in line for line in about), about

    # No secret in any attribute: query values redacted, no credentials, no tokens.
    every_value = json.dumps([s.attributes for s in store.spans])
    assert CLIENT_SECRET not in every_value
    assert EASEMOB_CLIENT_SECRET not in every_value
    assert "Bearer" not in every_value
    assert "sign=" in every_value  # the submit's query names its sign ...
    leaks = [
        (s.name, k, v)
        for s in store.spans
        for k, v in s.attributes.items()
        if re.search(r"sign=(?!REDACTED)", str(v))
    ]
    assert not leaks  # ... and never its value


WEBHOOK_SECRET = "whsec_" + base64.b64encode(b"t" * 32).decode()
WEBHOOK_QUERY_SECRET = "hook-query-token"


@pytest.fixture()
def webhook_receiver() -> Iterator[tuple[str, Any]]:
    """The sandbox's webhook receiver (it verifies every request's signature)."""
    app = create_webhook_receiver([WEBHOOK_SECRET])
    with ServerThread(app) as server:
        yield server.url, app.state.received


def test_a_webhook_attempt_is_a_client_span_in_its_messages_trace(
    worker_env: dict[str, str],
    start_worker: Any,
    receiver: tuple[str, Receiver],
    webhook_receiver: tuple[str, Any],
    clients: dict[str, Any],
    api_process: str,
) -> None:
    endpoint, store = receiver
    hook_url, received = webhook_receiver
    url = f"{hook_url}/webhooks/traced?token={WEBHOOK_QUERY_SECRET}"
    # The same clients as the API's, with a webhook endpoint (the fixture's dict is the
    # one api_process already started with: only the worker learns of the endpoint).
    hooks = {
        CLIENT_ID: {**clients[CLIENT_ID], "webhooks": [{"url": url, "secret": WEBHOOK_SECRET}]}
    }
    worker_env.update(
        {
            **tracing_env(endpoint, "dispatcher-worker"),
            "DISPATCHER_CLIENTS": json.dumps(hooks),
            "DISPATCHER_WEBHOOK_QUEUE": f"hooks-{uuid.uuid4().hex[:12]}",
            "DISPATCHER_WEBHOOK_ALLOW_LOOPBACK": "true",
            "DISPATCHER_WEBHOOK_POLL_INTERVAL": "0.1",
        }
    )
    start_worker("-Q", f"{worker_env['DISPATCHER_QUEUE']},{worker_env['DISPATCHER_WEBHOOK_QUEUE']}")
    message_id = "tw" + uuid.uuid4().hex
    trace_id = uuid.uuid4().hex
    transport = WithTraceparent(f"00-{trace_id}-{uuid.uuid4().hex[:16]}-01")
    with Client(api_process, CLIENT_ID, CLIENT_SECRET, channel=CHANNEL, transport=transport) as api:
        body = {"messageType": 1, "from": "u1", "to": "u2",
                "messageInfo": {"textMessage": "trace my webhook"}, "getMessageId": message_id}  # fmt: skip
        assert api.submit(body) == message_id

    deadline = time.monotonic() + 30
    while not received.snapshot()["verified"] and time.monotonic() < deadline:
        time.sleep(0.05)
    [event] = received.snapshot()["verified"]
    assert event["payload"]["data"]["getMessageId"] == message_id
    assert "traceparent" not in json.dumps(event["payload"])  # the body is the record's fields

    spans = wait_for_spans(store, trace_id, {"dispatcher.submit": 1, "dispatcher.webhook": 1})
    (submit,) = [s for s in spans if s.name == "dispatcher.submit"]
    (webhook,) = [s for s in spans if s.name == "dispatcher.webhook"]
    assert webhook.service == "dispatcher-worker"
    assert webhook.kind == 3  # client: an outgoing request
    assert webhook.parent_span_id == submit.span_id  # beside the message's attempts
    attributes = webhook.attributes
    assert attributes["getMessageId"] == message_id
    assert attributes["dispatcher.webhook_id"] == event["webhookId"]
    assert attributes["dispatcher.attempt"] == 1
    assert attributes["http.request.method"] == "POST"
    assert attributes["http.response.status_code"] == 204
    assert attributes["dispatcher.outcome"] == "delivered"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["url.full"].endswith("/webhooks/traced?token=REDACTED")

    every_value = json.dumps([s.attributes for s in store.spans])
    assert WEBHOOK_SECRET not in every_value
    assert WEBHOOK_SECRET.removeprefix("whsec_") not in every_value
    assert WEBHOOK_QUERY_SECRET not in every_value
