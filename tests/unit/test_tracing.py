"""Tracing's switch, its cost when off, the trace carried in the task message, the redaction
of secrets from span attributes, and log lines naming their span (dispatcher/tracing.py)."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from kombu import Connection
from kombu.transport.virtual import Message as KombuMessage

from dispatcher.broker import make_celery
from dispatcher.config import Settings
from dispatcher.enqueue import DELIVER_TASK, TaskMessageTemplate
from dispatcher.logs import JsonFormatter, TextFormatter
from dispatcher.tracing import exporter_name
from dispatcher.tracing_sdk import REDACTED, redact_query, redact_url
from tests.conftest import ROOT, ref

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, None),
        ({"OTEL_SERVICE_NAME": "x"}, None),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, "otlp"),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, "otlp"),
        ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, None),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
        ({"OTEL_SDK_DISABLED": "false", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c"}, "otlp"),
    ],
)
def test_tracing_is_on_only_when_otel_variables_name_an_exporter(
    environ: dict[str, str], expected: str | None
) -> None:
    assert exporter_name(environ) == expected


OFF_PROBE = textwrap.dedent(
    """
    import json, sys
    import fakeredis
    from dispatcher import Dispatcher, tracing
    from dispatcher.api.app import create_app
    from dispatcher.config import Settings
    from dispatcher.logs import configure_logging
    import dispatcher.worker, dispatcher.delivery

    configure_logging("INFO")
    settings = Settings(redis_url="redis://127.0.0.1:1/0", queue="off-probe")
    producer = Dispatcher(settings, client=fakeredis.FakeRedis())
    message_id = producer.submit(
        {"messageType": 1, "from": "a", "to": "b", "messageInfo": {"textMessage": "hi"}}
    )
    raw = producer.redis.lindex("off-probe", 0).decode()
    with tracing.span("x"), tracing.continuing(None, "y", {}):
        tracing.annotate({"k": "v"})
    assert tracing.current_traceparent() is None and tracing.log_fields() == {}
    create_app(settings)
    loaded = sorted(m for m in sys.modules if m.startswith(("opentelemetry", "dispatcher.")))
    print(json.dumps({"loaded": loaded, "traceparent_in_task": "traceparent" in raw}))
    """
)


NOT_WHEN_OFF = (
    "opentelemetry.sdk.trace",
    "opentelemetry.exporter",
    "opentelemetry.instrumentation",
    "dispatcher.tracing_sdk",
)


@pytest.mark.parametrize(
    "otel",
    [
        {},
        {"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"},
        {"OTEL_TRACES_EXPORTER": "jaeger"},  # not shipped: off, with a warning
    ],
)
def test_with_tracing_off_no_tracer_exporter_or_instrumentation_is_imported(
    otel: dict[str, str],
) -> None:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")} | otel
    done = subprocess.run(
        [sys.executable, "-c", OFF_PROBE],
        env=environ,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    found = json.loads(done.stdout.strip().splitlines()[-1])
    # redis-py imports the SDK's metrics package itself when installed (inert until
    # configured); the trace SDK, exporters and instrumentations are ours to keep out.
    sdk = [m for m in found["loaded"] if m.startswith(NOT_WHEN_OFF)]
    assert sdk == []
    assert found["traceparent_in_task"] is False


def traced_template() -> TaskMessageTemplate:
    settings = Settings(redis_url="redis://127.0.0.1:1/0", queue="traced")
    return TaskMessageTemplate.capture(make_celery(settings), DELIVER_TASK, "traced", traced=True)


def test_a_traced_task_message_carries_the_traceparent_to_celerys_request() -> None:
    from celery.worker.request import Request

    from dispatcher.worker import app

    raw = traced_template().build(ref("m0trace"), TRACEPARENT)
    with Connection("memory://") as connection:
        message = KombuMessage(json.loads(raw), channel=connection.default_channel)
        request = Request(message, app=app, task=app.tasks[DELIVER_TASK])
    assert message.headers["traceparent"] == TRACEPARENT
    assert request.request_dict["traceparent"] == TRACEPARENT
    assert request.args == [ref("m0trace").member]


def test_a_traced_template_without_a_trace_sends_an_empty_header() -> None:
    raw = traced_template().build(ref("m0plain"))
    assert json.loads(raw)["headers"]["traceparent"] == ""


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token=SECRET",
            f"https://api.weixin.qq.com/cgi-bin/message/custom/send?access_token={REDACTED}",
        ),
        (
            "http://user:pass@h:1/p?client=c&sign=abc&nonce=n",
            f"http://h:1/p?client={REDACTED}&sign={REDACTED}&nonce={REDACTED}",
        ),
        ("http://h/p", "http://h/p"),
        ("/v1/send?sign=s", f"/v1/send?sign={REDACTED}"),
    ],
)
def test_urls_in_spans_lose_query_values_and_credentials(url: str, expected: str) -> None:
    assert redact_url(url) == expected
    assert "SECRET" not in redact_query("token=SECRET&e=")


def test_log_lines_name_their_trace_and_span_when_they_have_one() -> None:
    record = logging.LogRecord("x", logging.INFO, "f", 1, "getMessageId=m1 delivered", None, None)
    plain_text = TextFormatter().format(record)
    plain_json = json.loads(JsonFormatter().format(record))
    assert "trace_id" not in plain_text and "trace_id" not in plain_json
    record.trace_id = "0af7651916cd43dd8448eb211c80319c"
    record.span_id = "b7ad6b7169203331"
    assert (
        TextFormatter()
        .format(record)
        .endswith(
            "getMessageId=m1 delivered trace_id=0af7651916cd43dd8448eb211c80319c "
            "span_id=b7ad6b7169203331"
        )
    )
    line = json.loads(JsonFormatter().format(record))
    assert line["getMessageId"] == "m1"
    assert (line["trace_id"], line["span_id"]) == (record.trace_id, record.span_id)
