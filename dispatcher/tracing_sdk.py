"""The OpenTelemetry SDK side of dispatcher/tracing.py: imported only when tracing is on.

Installs the tracer provider, its exporter, the client instrumentations and the
processor that keeps secrets out of span attributes.
"""

from __future__ import annotations

import os
import threading
from typing import Final
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
from opentelemetry.instrumentation.redis import RedisInstrumentor
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter, SpanExporter

REDACTED: Final = "REDACTED"
_URL_ATTRIBUTES: Final = ("http.url", "url.full", "http.target")
_QUERY_ATTRIBUTES: Final = ("url.query",)
_SECRET_HEADERS: Final = ("authorization", "cookie", "x-dispatcher-sign", "sign", "token")

_INSTALLING = threading.Lock()


def install(exporter_name: str) -> trace.Tracer:
    """Install the global tracer provider exporting through ``exporter_name``, one of
    ``tracing.EXPORTERS`` (once: the
    worker's threads may all start their first delivery at the same moment)."""
    with _INSTALLING:
        if not isinstance(trace.get_tracer_provider(), TracerProvider):
            _install(exporter_name)
    return trace.get_tracer("dispatcher")


def _install(exporter_name: str) -> None:
    # OTLP/HTTP: endpoint, headers and timeout from OTEL_EXPORTER_OTLP_*.
    exporter: SpanExporter = (
        OTLPSpanExporter() if exporter_name == "otlp" else ConsoleSpanExporter()
    )
    service = {} if os.environ.get("OTEL_SERVICE_NAME") else {SERVICE_NAME: "dispatcher"}
    provider = TracerProvider(resource=Resource.create(service))  # sampler: OTEL_TRACES_SAMPLER
    provider.add_span_processor(RedactingProcessor())
    # Batched export on its own thread; the SDK starts a new one after a fork.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    # Spans for every httpx request (provider calls, media) and Redis command; the
    # Redis instrumentation records commands with their arguments as "?".
    HTTPXClientInstrumentor().instrument()
    RedisInstrumentor().instrument()


class RedactingProcessor(SpanProcessor):
    """Rewrites, as each span starts, the attributes instrumentations fill from a URL or a
    header: query values (signs, nonces, access tokens) and credentials never leave."""

    def on_start(self, span: Span, parent_context: otel_context.Context | None = None) -> None:
        redact_span(span)

    def on_end(self, span: ReadableSpan) -> None:
        pass


def redact_span(span: Span | trace.Span, *_: object) -> None:
    """Replace the secrets in ``span``'s URL and header attributes. Also the API's server
    request hook: the ASGI instrumentation sets its attributes after the span starts."""
    attributes = getattr(span, "attributes", None) or {}
    for key in _URL_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, redact_url(value))
    for key in _QUERY_ATTRIBUTES:
        value = attributes.get(key)
        if isinstance(value, str):
            span.set_attribute(key, redact_query(value))
    for key in list(attributes):
        if key.startswith("http.request.header.") and any(
            secret in key for secret in _SECRET_HEADERS
        ):
            span.set_attribute(key, REDACTED)


def redact_url(url: str) -> str:
    """``url`` with its query values and any user:password replaced."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return REDACTED
    netloc = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=netloc, query=redact_query(parts.query)))


def redact_query(query: str) -> str:
    """A query string with every value replaced (the names stay, for reading)."""
    if not query:
        return query
    return urlencode([(name, REDACTED) for name, _ in parse_qsl(query, keep_blank_values=True)])
