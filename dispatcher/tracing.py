"""OpenTelemetry traces: one trace per message, from the submit to its last attempt.

Off unless the standard ``OTEL_*`` variables name an exporter (docs/operations.md,
"Tracing"): an OTLP endpoint, or ``OTEL_TRACES_EXPORTER``; ``OTEL_SDK_DISABLED=true``
wins over both. Off, dispatcher imports nothing of OpenTelemetry and every helper here is
a constant no-op, so the submit and delivery paths pay one flag test.

The trace context of a message is its W3C ``traceparent``: the submit stores it in
the status record and in the delivery task's headers, so every attempt, however
late (a retry, a re-publish by recovery), continues the submit's trace.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from contextlib import AbstractContextManager, nullcontext
from functools import cache
from typing import TYPE_CHECKING, Any, Final, ParamSpec, TypeVar

if TYPE_CHECKING:
    from fastapi import FastAPI
    from opentelemetry.trace import Span, Tracer

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

TRACEPARENT: Final = "traceparent"
"""The W3C header name: the delivery task's header and the status record's field."""

MESSAGE_ID: Final = "getMessageId"
CLIENT: Final = "dispatcher.client"
CHANNEL: Final = "dispatcher.channel"
ATTEMPT: Final = "dispatcher.attempt"
OUTCOME: Final = "dispatcher.outcome"
ERROR_CODE: Final = "dispatcher.error_code"
WEBHOOK_ID: Final = "dispatcher.webhook_id"
ENDPOINT: Final = "dispatcher.webhook_endpoint"
HTTP_METHOD: Final = "http.request.method"
HTTP_STATUS: Final = "http.response.status_code"
URL_FULL: Final = "url.full"
SERVER_ADDRESS: Final = "server.address"

SPAN_SUBMIT: Final = "dispatcher.submit"
SPAN_ENQUEUE: Final = "dispatcher.enqueue"
SPAN_ATTEMPT: Final = "dispatcher.attempt"
SPAN_LEASE: Final = "dispatcher.lease"
SPAN_MEDIA: Final = "dispatcher.media"
SPAN_PROVIDER: Final = "dispatcher.provider_call"
SPAN_WEBHOOK: Final = "dispatcher.webhook"

EXPORTERS: Final = ("otlp", "console")
"""The exporters shipped: OTLP over HTTP (protobuf), and spans printed on stdout."""

API_EXCLUDED_URLS: Final = "/metrics,/healthz,/readyz,/docs,/openapi.json,/console"
"""Paths whose requests make no server span: probes and pages, not messages."""

_NO_SPAN: AbstractContextManager[None] = nullcontext()


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() == "true"


def exporter_name(environ: Mapping[str, str] = os.environ) -> str | None:
    """The span exporter the ``OTEL_*`` variables ask for; None: tracing is off."""
    if _truthy(environ.get("OTEL_SDK_DISABLED")):
        return None
    # The SDK's own default exporter is OTLP; a service must not start exporting
    # just because it was upgraded, so an unset variable here means off.
    chosen = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if chosen:
        first = chosen.split(",")[0].strip()
        return None if first == "none" else first
    if environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get(
        "OTEL_EXPORTER_OTLP_ENDPOINT"
    ):
        return "otlp"
    return None


@cache
def enabled() -> bool:
    """Whether this process traces (read once from the environment)."""
    name = exporter_name()
    if name is not None and name not in EXPORTERS:
        log.warning("tracing off: OTEL_TRACES_EXPORTER=%s is not one of %s", name, EXPORTERS)
        return False
    return name is not None


@cache
def _tracer() -> Tracer | None:
    """The tracer, with its provider and exporter installed once per process."""
    if not enabled():
        return None
    from dispatcher.tracing_sdk import install

    return install(exporter_name() or "otlp")


def start() -> bool:
    """Install tracing in this process when the environment asks for it; True if on."""
    return _tracer() is not None


def instrument_api(app: FastAPI) -> None:
    """Server spans for the API's requests, continuing a caller's ``traceparent``."""
    if not start():
        return
    from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

    from dispatcher.tracing_sdk import redact_span

    FastAPIInstrumentor.instrument_app(
        app, excluded_urls=API_EXCLUDED_URLS, server_request_hook=redact_span
    )


def span(
    name: str, attributes: Mapping[str, str | int] | None = None
) -> AbstractContextManager[Any]:
    """A child span of the current one named ``name``; a no-op when tracing is off."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    return tracer.start_as_current_span(name, attributes=attributes)


def spanned(name: str) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Decorate a function to run inside a span ``name`` (when tracing is on)."""

    def decorate(function: Callable[P, R]) -> Callable[P, R]:
        @functools.wraps(function)
        def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer() is None:
                return function(*args, **kwargs)
            with span(name):
                return function(*args, **kwargs)

        return run

    return decorate


def spanned_async(
    name: str,
) -> Callable[[Callable[P, Awaitable[R]]], Callable[P, Coroutine[Any, Any, R]]]:
    """:func:`spanned` for a coroutine function."""

    def decorate(function: Callable[P, Awaitable[R]]) -> Callable[P, Coroutine[Any, Any, R]]:
        @functools.wraps(function)
        async def run(*args: P.args, **kwargs: P.kwargs) -> R:
            if _tracer() is None:
                return await function(*args, **kwargs)
            with span(name):
                return await function(*args, **kwargs)

        return run

    return decorate


def annotate(attributes: Mapping[str, str | int | None]) -> None:
    """Set attributes on the current span (None values are left out); no-op when off."""
    if _tracer() is None:
        return
    from opentelemetry import trace

    current: Span = trace.get_current_span()
    for key, value in attributes.items():
        if value is not None:
            current.set_attribute(key, value)


def submitting(message_id: str, client: str | None, channel: str) -> str | None:
    """Name the message on the current (submit) span; returns the ``traceparent`` every
    attempt of it continues (None when off)."""
    if _tracer() is None:
        return None
    annotate({MESSAGE_ID: message_id, CLIENT: client, CHANNEL: channel})
    return current_traceparent()


def current_traceparent() -> str | None:
    """The current span's W3C ``traceparent``; None when off or outside any span."""
    if _tracer() is None:
        return None
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT)


def task_headers(traceparent: str | None) -> dict[str, str]:
    """Celery ``headers=`` that carry ``traceparent`` to the next attempt."""
    return {TRACEPARENT: traceparent} if traceparent else {}


def continuing(
    traceparent: str | None,
    name: str,
    attributes: Mapping[str, str | int | None],
    *,
    client: bool = False,
) -> AbstractContextManager[Any]:
    """A span ``name`` in the trace ``traceparent`` names (a new trace without one);
    ``client``: a client span (an outgoing request). None values are left out."""
    tracer = _tracer()
    if tracer is None:
        return _NO_SPAN
    from opentelemetry.trace import SpanKind
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    parent = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent or ""})
    return tracer.start_as_current_span(
        name,
        context=parent,
        kind=SpanKind.CLIENT if client else SpanKind.INTERNAL,
        attributes={k: v for k, v in attributes.items() if v is not None},
    )


def log_fields() -> dict[str, str]:
    """``trace_id`` and ``span_id`` of the current span, for a log line ({} when none)."""
    if _tracer() is None:
        return {}
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}
