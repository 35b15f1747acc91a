"""A local Easemob REST API (docs/providers.md, "Easemob").

It checks the same credentials, issues tokens that expire, answers with the
usergrid error bodies and enforces the 2022+ limits, so the channel code meets
offline the answers it will meet in production. Traffic is recorded and faults
are injected by :func:`dispatcher.sandbox.control.install_control`.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config import Settings
from dispatcher.sandbox.easemob_callbacks import (
    CallbackRule,
    CallbackSender,
    install_callback_control,
)
from dispatcher.sandbox.easemob_checks import (
    FORBIDDEN_OP,
    MANAGEMENT,
    NOT_FOUND,
    TARGET_TYPES,
    WEB_APPLICATION,
    EasemobError,
    check_classic_send,
    check_new_send,
    illegal,
    is_count,
    json_object,
    now_ms,
)
from dispatcher.sandbox.easemob_state import (
    Clock,
    EasemobApp,
    EasemobSimulator,
    app_not_found,
)
from dispatcher.sandbox.skeleton import Simulator, record_traffic, require, simulator_app

_CHAT_TYPES = {"users": "chat", "chatgroups": "groupchat", "chatrooms": "chatroom"}


def _uri(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}{request.url.path}"


def _duration_ms(request: Request) -> int:
    started = getattr(request.state, "started", None)
    return 0 if started is None else int((time.monotonic() - started) * 1000)


def create_easemob_app(
    *,
    clock: Clock = time.monotonic,
    callbacks: CallbackRule | None = None,
    more_apps: Sequence[EasemobApp] = (),
    **options: Any,
) -> FastAPI:
    """The Easemob simulator as an ASGI app; ``app.state.easemob`` is its :class:`EasemobSimulator`.

    ``options`` are :class:`EasemobApp`'s fields; ``clock`` drives token expiry and the
    rate windows (tests pass a fake one); ``callbacks``: where and how it calls back.
    ``more_apps``: other org/apps served on the same port, each with its own credentials,
    tokens, limits and counters (``app.state.easemob_apps`` by ``org#app``; faults
    injected for one match its path, ``/<org>/<app>/``). Callbacks come from the first
    app only.
    """
    first = EasemobSimulator(EasemobApp(**options), clock)
    sims = {first.appkey: first}
    for config in more_apps:
        sims[f"{config.org}#{config.app}"] = EasemobSimulator(config, clock)
    sender = CallbackSender(first.appkey, callbacks)
    api = simulator_app(
        "Easemob simulator",
        version="2022",
        errors={EasemobError: _easemob_error},
        routing_error=_routing_error,
    )
    api.state.easemob = first
    api.state.easemob_apps = sims

    def envelope(
        sim: EasemobSimulator, request: Request, path: str, data: dict[str, str]
    ) -> dict[str, Any]:
        return {
            "action": "post",
            "application": sim.application,
            "path": path,
            "uri": _uri(request),
            "entities": [],
            "data": data,
            "timestamp": now_ms(),
            "duration": _duration_ms(request),
            "organization": sim.config.org,
            "applicationName": sim.config.app,
        }

    def accept(
        sim: EasemobSimulator,
        request: Request,
        target_type: str,
        targets: list[str],
        *,
        classic: bool,
        reply_ids: bool,
    ) -> dict[str, str]:
        if target_type == "users" and not sim.message_window.try_acquire(len(targets)):
            sim.count("quota_exceeded_403")
            # Both texts say "reach limit", the phrase a client can key its retry on.
            if classic:
                raise EasemobError(
                    403,
                    "forbidden_op",
                    f"Forbidden for url: [{_uri(request)}], message send reach limit: "
                    f"{sim.config.messages_per_minute} messages per minute to users",
                    FORBIDDEN_OP,
                )
            raise EasemobError(403, "message_send_error", "message send reach limit", FORBIDDEN_OP)
        sim.count("messages_accepted", len(targets))
        # One id per recipient; a repeated target keeps the last one, as a map does.
        data = sim.outcomes(targets, reply_ids)
        for target, message_id in data.items():
            if target not in sim.failing:
                sim.recalls.sent(message_id, target_type, target)
        return data

    async def checked_body(
        request: Request, org: str, app_name: str, *, token_call: bool = False
    ) -> tuple[EasemobSimulator, dict[str, Any]]:
        """The app and a call's JSON body once the app, the token (sends only) and the
        rate admit it."""
        request.state.started = time.monotonic()
        named = sims.get(f"{org}#{app_name}")
        sim = named or first  # an unknown app's calls count as the first app's
        sim.count("token_calls" if token_call else "message_calls")
        body = await request.body()
        # The front proxy refuses oversized bodies before the app sees anything.
        sim.check_size(body, targets=0 if token_call else sim.config.max_users_per_call)
        if named is None:
            raise app_not_found(org, app_name, request.url.path)
        if not token_call:
            sim.authenticate(request.headers.get("authorization"))
        sim.admit_call(sim.token_window if token_call else sim.call_window)
        payload = json_object(request, body)
        if not token_call:
            sim.check_content_size(payload)
        return sim, payload

    @api.post("/{org}/{app_name}/token", tags=["easemob"])
    async def token(org: str, app_name: str, request: Request) -> dict[str, Any]:
        sim, payload = await checked_body(request, org, app_name, token_call=True)
        grant_type = payload.get("grant_type")
        if grant_type != "client_credentials":
            raise EasemobError(
                400,
                "unsupported_grant_type",
                f"unsupported grant type: {grant_type}",
                MANAGEMENT,
            )
        if not _same(payload.get("client_id"), sim.config.client_id):
            raise EasemobError(400, "invalid_grant", "client_id does not match", MANAGEMENT)
        if not _same(payload.get("client_secret"), sim.config.client_secret):
            raise EasemobError(400, "invalid_grant", "client_secret does not match", MANAGEMENT)
        ttl = payload.get("ttl", sim.config.token_ttl)
        if not is_count(ttl):
            raise illegal("ttl must be a non-negative integer")
        return {
            "access_token": sim.issue_token(ttl),
            "expires_in": ttl,
            "application": sim.application,
        }

    @api.post("/{org}/{app_name}/messages", tags=["easemob"])
    async def send_classic(org: str, app_name: str, request: Request) -> dict[str, Any]:
        sim, payload = await checked_body(request, org, app_name)
        target_type, targets = check_classic_send(payload, sim.caps)
        reply_ids = request.query_params.get("useMsgId", "").lower() == "true"
        data = accept(sim, request, target_type, targets, classic=True, reply_ids=reply_ids)
        if reply_ids and sim is first:
            sender.message_sent(str(payload.get("from")), _CHAT_TYPES[target_type], data)
        return envelope(sim, request, "/messages", data)

    # Before the send route below, whose {target_type} would take "msg_recall".
    @api.post("/{org}/{app_name}/messages/msg_recall", tags=["easemob"])
    async def recall(org: str, app_name: str, request: Request) -> dict[str, Any]:
        sim, payload = await checked_body(request, org, app_name)
        verdict = sim.recalls.recall(payload)
        if verdict != "yes":
            return {"msgs": [{"msg_id": payload["msg_id"], "recalled": verdict}]}
        chat_type = payload["chat_type"]
        data = {"recalled": "yes", "chattype": chat_type, "from": payload.get("from") or "admin"}
        data |= {"to": payload["to"], "msg_id": payload["msg_id"]}
        return envelope(sim, request, "/messages/msg_recall", data)

    @api.post("/{org}/{app_name}/messages/{target_type}", tags=["easemob"])
    async def send_new(
        org: str, app_name: str, target_type: str, request: Request
    ) -> dict[str, Any]:
        if target_type not in TARGET_TYPES:
            raise EasemobError(
                404, "service_resource_not_found", "Service resource not found", NOT_FOUND
            )
        sim, payload = await checked_body(request, org, app_name)
        targets = check_new_send(payload, sim.caps[target_type])
        data = accept(sim, request, target_type, targets, classic=False, reply_ids=True)
        if sim is first:
            sender.message_sent(str(payload.get("from")), _CHAT_TYPES[target_type], data)
        return envelope(sim, request, f"/messages/{target_type}", data)

    def served(appkey: str | None) -> EasemobSimulator:
        """The app ``org#app`` names (None: the first); 404 for one not served."""
        found = first if appkey is None else sims.get(appkey)
        if found is None:
            raise StarletteHTTPException(404, f"no app {appkey!r}: {sorted(sims)}")
        return found

    @api.post("/_sandbox/easemob/expire-tokens", tags=["sandbox"])
    async def expire_tokens(appkey: str | None = None) -> dict[str, int]:
        """Expire the tokens of ``appkey`` (``org#app``; unset: the first app)."""
        return {"expired": served(appkey).expire_tokens()}

    @api.post("/_sandbox/easemob/failing-targets", tags=["sandbox"])
    async def failing_targets(request: Request) -> dict[str, int]:
        """``{"targets": {"<target>": "<error text>"}}``: from now on a send answers these
        targets with the text instead of a message id (a refusal of that recipient);
        ``{}`` clears them."""
        wanted = json_object(request, await request.body()).get("targets") or {}
        if not isinstance(wanted, dict):
            raise illegal("targets must map each target to an error text")
        return {"failing": first.set_failing({str(k): str(v) for k, v in wanted.items()})}

    @api.get("/_sandbox/easemob/deliveries", tags=["sandbox"])
    async def deliveries() -> dict[str, int]:
        """How many message ids each target was given (a 200 answer naming it)."""
        return first.delivered_counts()

    @api.delete("/_sandbox/easemob/deliveries", tags=["sandbox"])
    async def clear_deliveries() -> dict[str, bool]:
        first.delivered_counts(clear=True)
        return {"ok": True}

    @api.get("/_sandbox/easemob/stats", tags=["sandbox"])
    async def stats(appkey: str | None = None) -> dict[str, int]:
        """The counters of ``appkey`` (``org#app``; unset: the first app)."""
        return served(appkey).stats()

    install_callback_control(api, sender)
    record_traffic(api)
    return api


def _easemob_error(request: Request, exc: EasemobError) -> JSONResponse:
    return JSONResponse(exc.body(_duration_ms(request)), status_code=exc.status)


def _routing_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
    if exc.status_code == 404:
        error = EasemobError(
            404, "service_resource_not_found", "Service resource not found", NOT_FOUND
        )
    else:
        error = EasemobError(exc.status_code, "web_application", str(exc.detail), WEB_APPLICATION)
    return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)


def _same(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def create_easemob_app_from_settings(settings: Settings, **overrides: Any) -> FastAPI:
    """The simulator for the app ``settings`` points at, limits from ``settings`` too."""
    require(settings, "easemob", ("org", "app", "client_id", "client_secret"), overrides)
    secret = settings.easemob_client_secret
    options: dict[str, Any] = {
        "org": settings.easemob_org,
        "app": settings.easemob_app,
        "client_id": settings.easemob_client_id,
        "client_secret": secret.get_secret_value() if secret is not None else None,
        "calls_per_second": settings.easemob_calls_per_second,
        "messages_per_minute": settings.easemob_messages_per_minute,
        "max_body_bytes": settings.easemob_max_body_bytes,
        "recall_window": settings.easemob_recall_window,
    }
    options.update(overrides)
    options.setdefault("more_apps", apps_from_settings(settings))
    return create_easemob_app(**options)


def apps_from_settings(settings: Settings) -> list[EasemobApp]:
    """The ``DISPATCHER_EASEMOB_APPS`` apps, served beside the main one."""
    return [
        EasemobApp(
            org=app.org,
            app=app.app,
            client_id=app.client_id,
            client_secret=app.client_secret.get_secret_value(),
            calls_per_second=app.calls_per_second or settings.easemob_calls_per_second,
            messages_per_minute=app.messages_per_minute or settings.easemob_messages_per_minute,
            max_body_bytes=settings.easemob_max_body_bytes,
            recall_window=settings.easemob_recall_window,
        )
        for app in settings.easemob_apps.values()
    ]


SIMULATOR = Simulator("Easemob", 9101, create_easemob_app_from_settings)
