"""``create_app``: the FastAPI app of docs/api.md, and ``run_api``: serve it with uvicorn."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import redis
import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from dispatcher import tracing
from dispatcher.api import batch, message_actions, recipients
from dispatcher.api.admission import Admission
from dispatcher.api.auth import Authenticator
from dispatcher.api.docs_assets import install_docs
from dispatcher.api.envelope import EnvelopeWriter
from dispatcher.api.metrics import MULTIPROCESS_DIR, ApiMetrics, RedisCollector
from dispatcher.api.openapi import build_openapi
from dispatcher.api.overload import SubmitBound
from dispatcher.api.routes import Runtime, render_error, router
from dispatcher.api.webhooks import router as webhooks_router
from dispatcher.broker import BrokerKind, broker_is_store, broker_kind
from dispatcher.broker_probe import AmqpProbe
from dispatcher.channels import registry
from dispatcher.config import Settings
from dispatcher.connections import LoopRedis, probe_client, request_ceiling
from dispatcher.console import mount_console
from dispatcher.errors import DispatcherError, FieldError
from dispatcher.health import warn_redis_configuration
from dispatcher.producer import Dispatcher
from dispatcher.store import StatusStore
from dispatcher.webhooks.metrics import WebhookCollector
from dispatcher.webhooks.outbox import WebhookStore

log = logging.getLogger(__name__)

VERSION = "1"
PROBE_TIMEOUT = 1.0
"""Seconds /readyz and /metrics wait for Redis or the broker before calling it unreachable."""
YOUNG_COLLECTION_THRESHOLD = 10_000
"""Allocations between the garbage collector's young collections in a server process
(Python's default: 700); see :func:`serve_app`."""


def _probe_client(url: str) -> redis.Redis:
    """A client that answers fast when Redis is down: no retries, short timeouts."""
    return probe_client(url, PROBE_TIMEOUT)


def create_app(settings: Settings | None = None, dispatcher: Dispatcher | None = None) -> FastAPI:
    """The HTTP API. With no arguments, settings come from ``DISPATCHER_*`` (uvicorn factory)."""
    if settings is None:
        settings = dispatcher.settings if dispatcher is not None else Settings()
    owns_dispatcher = dispatcher is None
    if dispatcher is None:
        dispatcher = Dispatcher(settings)

    store_probe = _probe_client(settings.redis_url)
    same_broker = broker_is_store(settings)
    broker_probe: redis.Redis | AmqpProbe = store_probe
    if broker_kind(settings.effective_broker_url) is BrokerKind.AMQP:
        broker_probe = AmqpProbe(settings.effective_broker_url, PROBE_TIMEOUT)
    elif not same_broker:
        broker_probe = _probe_client(settings.effective_broker_url)
    auth = Authenticator(settings)
    envelope = EnvelopeWriter(settings)
    runtime = Runtime(
        settings=settings,
        dispatcher=dispatcher,
        auth=auth,
        admission=Admission(
            dispatcher.redis,
            rate_per_second=settings.submit_rate_per_second,
            burst=settings.submit_burst,
        ),
        envelope=envelope,
        async_redis=LoopRedis(settings),
        metrics=ApiMetrics(
            RedisCollector(
                StatusStore.from_settings(store_probe, settings),
                None if same_broker else broker_probe,
                [settings.queue],
                settings.memory_refuse_ratio,
                doorbell=settings.delivery_batch > 0,
            ),
            settings.clients,
        ),
        probes={"redis": store_probe, "broker": broker_probe},
    )
    runtime.metrics.add_collector(
        WebhookCollector(WebhookStore(store_probe), settings.webhook_subscriptions())
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Said once per API process; /readyz lists the same warnings for monitoring.
        await asyncio.to_thread(warn_redis_configuration, store_probe, "api")
        yield
        await runtime.async_redis.aclose()
        for client in {id(c): c for c in runtime.probes.values()}.values():
            client.close()
        if owns_dispatcher:
            dispatcher.close()
        runtime.metrics.process_exits()

    app = FastAPI(
        title="dispatcher",
        version=VERSION,
        lifespan=lifespan,
        docs_url=None,  # install_docs below: Swagger UI without a CDN
        redoc_url=None,
        # DISPATCHER_API_DOCS=false: no /docs and no /openapi.json (docs/security.md).
        openapi_url="/openapi.json" if settings.api_docs else None,
    )
    app.state.runtime = runtime
    app.include_router(router)
    app.include_router(batch.router)
    app.include_router(message_actions.router)
    app.include_router(recipients.router)
    app.include_router(webhooks_router)
    for channel in registry().channels:  # endpoints providers call back (WeChat's receipts)
        if channel.routes is not None and channel.configured(settings):
            app.include_router(channel.routes(settings, dispatcher.store))
    mount_console(app, settings, dispatcher)
    if settings.api_docs:
        install_docs(app)
    _install_error_handlers(app, envelope)
    app.add_middleware(
        SubmitBound,
        limit=settings.api_max_submits_in_flight,
        redis_seconds=request_ceiling(settings),
        single_bytes=settings.max_request_bytes,
        batch_bytes=settings.max_batch_request_bytes,
        envelope=envelope,
        metrics=runtime.metrics,
    )
    app.openapi = lambda: build_openapi(app, settings)  # type: ignore[method-assign]
    tracing.instrument_api(app)  # OTEL_* turns it on (docs/operations.md, "Tracing")
    auth.warn_about_configuration()
    return app


def _install_error_handlers(app: FastAPI, envelope: EnvelopeWriter) -> None:
    """Every answer is the envelope, including FastAPI's and Starlette's own."""

    async def validation_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        errors = [
            FieldError(_location(error.get("loc", ())), str(error.get("msg", "is invalid")))
            for error in exc.errors()
        ]
        return envelope.answer(400, None, {"errors": [e.as_dict() for e in errors]})

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, StarletteHTTPException)
        message = exc.detail if isinstance(exc.detail, str) else None
        return envelope.answer(exc.status_code, message, None, headers=exc.headers)

    async def unexpected_error(request: Request, exc: Exception) -> Response:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return envelope.answer(500)

    app.add_exception_handler(DispatcherError, render_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, unexpected_error)


def _location(loc: Any) -> str:
    parts = [str(part) for part in loc]
    if parts and parts[0] in ("path", "query", "body", "header"):
        parts = parts[1:]
    return ".".join(parts) or "request"


# ---------------------------------------------------------------------------
# Serving


def run_api(settings: Settings, host: str, port: int, workers: int = 1) -> None:
    """Serve the API with uvicorn until interrupted.

    Factory mode, so ``workers > 1`` works: each worker process builds its app
    from ``DISPATCHER_*``, which is why ``settings`` is exported there first.
    """
    os.environ.update(settings_environment(settings))
    with _shared_metrics(workers):
        uvicorn.run(
            "dispatcher.api.app:serve_app",
            factory=True,
            host=host,
            port=port,
            workers=workers,
            access_log=False,  # ~27 % of throughput (docs/architecture.md, "Costs")
            log_level=settings.log_level.lower(),
            server_header=False,
        )


@contextmanager
def _shared_metrics(workers: int) -> Iterator[None]:
    """Several processes answer /metrics: each writes its counters where all can sum them
    (a directory of this run's own, unless the operator named one)."""
    if workers <= 1 or os.environ.get(MULTIPROCESS_DIR):
        yield
        return
    directory = tempfile.mkdtemp(prefix="dispatcher-api-metrics-")
    os.environ[MULTIPROCESS_DIR] = directory
    try:
        yield
    finally:
        del os.environ[MULTIPROCESS_DIR]
        shutil.rmtree(directory, ignore_errors=True)


def serve_app() -> FastAPI:
    """:func:`create_app` for a server process (the uvicorn factory of :func:`run_api`), with
    the garbage collector set for many requests in flight (docs/operations.md, "Load
    bounds"). The objects of start-up (modules, the app) are frozen out of collections,
    and young collections run every 10,000 allocations instead of 700: with hundreds of
    requests in flight, frequent young collections find their objects alive, promote
    them, and older collections then scan them again and again, a cost per request that
    grew with the number of connections (P11)."""
    app = create_app()
    gc.freeze()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, *gc.get_threshold()[1:])
    return app


def settings_environment(settings: Settings) -> dict[str, str]:
    """``DISPATCHER_*`` variables that rebuild ``settings`` in another process."""
    env: dict[str, str] = {}
    for name in type(settings).model_fields:
        value = getattr(settings, name)
        if value is None:
            continue
        plain = _plain(value)
        env[f"DISPATCHER_{name.upper()}"] = plain if isinstance(plain, str) else json.dumps(plain)
    return env


def _plain(value: Any) -> Any:
    if isinstance(value, SecretStr):
        return value.get_secret_value()
    if isinstance(value, BaseModel):
        return {k: _plain(getattr(value, k)) for k in type(value).model_fields}
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
