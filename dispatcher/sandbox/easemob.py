"""A local Easemob REST API (providers.md A2-A4, A7, A8, A10).

It checks the same credentials, issues tokens that expire, answers with the
usergrid error bodies and enforces the 2022+ limits, so the channel code meets
offline the answers it will meet in production. Traffic is recorded and faults
are injected by :func:`dispatcher.sandbox.control.install_control`.
"""

from __future__ import annotations

import hmac
import itertools
import json
import math
import re
import secrets
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox.control import install_control

Clock = Callable[[], float]

DEFAULT_TOKEN_TTL = 5_184_000  # 60 days, the 2022+ console default
TARGET_TYPES = ("users", "chatgroups", "chatrooms")
MESSAGE_KINDS = ("txt", "img", "audio", "video", "file", "loc", "cmd", "custom")
GROUPS_PER_CALL = 3
ROOMS_PER_CALL = 10
MAX_CUSTOM_EXTS = 16
CUSTOM_EVENT = re.compile(r"[a-zA-Z0-9_/.\-]{1,32}")

# Java classes named in the real bodies; nobody branches on them, but clients log them.
_ILLEGAL_ARGUMENT = "java.lang.IllegalArgumentException"
_SECURITY = "org.apache.usergrid.rest.exceptions.SecurityException"
_JSON_PARSE = "org.codehaus.jackson.JsonParseException"
_WEB_APPLICATION = "javax.ws.rs.WebApplicationException"
_APP_NOT_FOUND = "org.apache.usergrid.rest.exceptions.OrganizationApplicationNotFoundException"
_NOT_FOUND = "org.apache.usergrid.services.exceptions.ServiceResourceNotFoundException"
_REACH_LIMIT = "com.easemob.ratelimit.exception.ReachLimitException"
_FORBIDDEN_OP = "com.easemob.message.exception.ForbiddenOpException"
_MANAGEMENT = "org.apache.usergrid.management.exceptions.ManagementException"

INVALID_REQUEST_BODY = "Request body is invalid. Please check body is correct."


class EasemobError(Exception):
    """An answer in Easemob's usergrid error shape; raise it anywhere in a handler."""

    def __init__(self, status: int, error: str, description: str, exception: str) -> None:
        super().__init__(f"{status} {error}: {description}")
        self.status = status
        self.error = error
        self.description = description
        self.exception = exception

    def body(self, duration_ms: int = 0) -> dict[str, Any]:
        return {
            "error": self.error,
            "exception": self.exception,
            "timestamp": _now_ms(),
            "duration": duration_ms,
            "error_description": self.description,
        }


def _illegal(description: str) -> EasemobError:
    return EasemobError(400, "illegal_argument", description, _ILLEGAL_ARGUMENT)


def _send_error(description: str) -> EasemobError:
    return EasemobError(400, "message_send_error", description, _ILLEGAL_ARGUMENT)


def _bad_body() -> EasemobError:
    return EasemobError(400, "invalid_request_body", INVALID_REQUEST_BODY, _ILLEGAL_ARGUMENT)


def _now_ms() -> int:
    return int(time.time() * 1000)


class SlidingWindow:
    """Admits at most ``limit`` units in any ``window`` seconds; a refusal uses nothing.

    A log of admissions rather than a token bucket: the simulator must refuse
    exactly what the provider's documented "N per second" refuses, with no burst.
    """

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = threading.Lock()

    def try_acquire(self, units: int = 1) -> bool:
        with self._lock:
            now = self._clock()
            horizon = now - self.window
            while self._admitted and self._admitted[0][0] <= horizon:
                self._used -= self._admitted.popleft()[1]
            if self._used + units > self.limit:
                return False
            self._admitted.append((now, units))
            self._used += units
            return True


# ---------------------------------------------------------------------------
# Message validation: pure functions, one error style per endpoint family.

Check = tuple[Callable[[Any], bool], str]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _is_coordinate(value: Any) -> bool:
    # Send examples use strings ("39.966"), history records numbers: accept both.
    if isinstance(value, bool):
        return False
    if isinstance(value, int | float):
        return math.isfinite(value)
    if isinstance(value, str):
        try:
            return math.isfinite(float(value))
        except ValueError:
            return False
    return False


def _is_size(value: Any) -> bool:
    return (
        isinstance(value, dict) and _is_count(value.get("width")) and _is_count(value.get("height"))
    )


def _is_custom_event(value: Any) -> bool:
    return isinstance(value, str) and CUSTOM_EVENT.fullmatch(value) is not None


def _is_custom_exts(value: Any) -> bool:
    return (
        isinstance(value, dict)
        and len(value) <= MAX_CUSTOM_EXTS
        and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())
    )


_TEXT: Check = (_is_text, "a non-empty string")
_STRING: Check = (_is_str, "a string")
_COUNT: Check = (_is_count, "a non-negative integer")
_COORDINATE: Check = (_is_coordinate, "a number or a numeric string")

REQUIRED_FIELDS: dict[str, dict[str, Check]] = {
    "txt": {"msg": _STRING},
    "img": {"url": _TEXT, "filename": _STRING},
    "audio": {"url": _TEXT, "filename": _STRING, "length": _COUNT},
    "video": {"url": _TEXT, "thumb": _TEXT, "length": _COUNT, "file_length": _COUNT},
    "file": {"url": _TEXT, "filename": _STRING},
    "loc": {"lat": _COORDINATE, "lng": _COORDINATE, "addr": _STRING},
    "cmd": {"action": _STRING},
    "custom": {"customEvent": (_is_custom_event, "matching [a-zA-Z0-9-_/\\.]{1,32}")},
}
OPTIONAL_FIELDS: dict[str, dict[str, Check]] = {
    "img": {"size": (_is_size, "an object with integer width and height"), "secret": _STRING},
    "audio": {"secret": _STRING},
    "video": {"filename": _STRING, "secret": _STRING, "thumb_secret": _STRING},
    "file": {"secret": _STRING},
    "custom": {
        "customExts": (_is_custom_exts, f"a map of strings to strings, at most {MAX_CUSTOM_EXTS}")
    },
}


def kind_problem(kind: str, fields: Mapping[str, Any]) -> str | None:
    """Why ``fields`` are not a valid payload of message kind ``kind``, or None."""
    for name, (valid, expected) in REQUIRED_FIELDS[kind].items():
        if fields.get(name) is None:
            return f"{kind} message must provide {name}"
        if not valid(fields[name]):
            return f"{kind} message field {name} must be {expected}"
    for name, (valid, expected) in OPTIONAL_FIELDS.get(kind, {}).items():
        if fields.get(name) is not None and not valid(fields[name]):
            return f"{kind} message field {name} must be {expected}"
    return None


def _is_target_list(value: Any) -> bool:
    return isinstance(value, list) and all(_is_text(item) for item in value)


def check_classic_send(
    payload: Mapping[str, Any], caps: Mapping[str, int]
) -> tuple[str, list[str]]:
    """Validate a classic ``/messages`` body; returns (target_type, targets)."""
    target_type = payload.get("target_type")
    if target_type is None:
        raise _illegal("target_type must be provided")
    if target_type not in TARGET_TYPES:
        raise _illegal("target_type can only be 'users' or 'chatgroups' or 'chatrooms'")
    targets = payload.get("target")
    if targets is None:
        raise _illegal("target must be provided")
    if not _is_target_list(targets):
        raise _illegal("target must be an array of non-empty strings")
    if not targets:
        raise _illegal("target can't be empty")
    if len(targets) > caps[target_type]:
        raise _illegal("params to's size can't exceed limit")
    sender = payload.get("from")  # null reads as absent, as Jackson does
    if sender == "":
        raise _illegal("from can't be empty")
    if sender is not None and not isinstance(sender, str):
        raise _illegal("from must be a string")
    if "ext" in payload:
        if payload["ext"] is None:
            raise _illegal("ext can't be null")
        if not isinstance(payload["ext"], dict):
            raise _illegal("ext must be JSONObject")
    msg = payload.get("msg")
    if msg is None:
        raise _illegal("msg must be provided")
    if not isinstance(msg, dict):
        raise _illegal("msg must be JSONObject")
    kind = msg.get("type")
    if kind not in MESSAGE_KINDS:
        raise _illegal(f"msg type can only be one of {', '.join(MESSAGE_KINDS)}")
    problem = kind_problem(kind, msg)
    if problem:
        raise _illegal(problem)
    return target_type, targets


def check_new_send(payload: Mapping[str, Any], cap: int) -> list[str]:
    """Validate a ``/messages/{users|chatgroups|chatrooms}`` body; returns the targets."""
    sender = payload.get("from")
    if sender == "":
        raise _send_error("param from can't be empty")
    if sender is not None and not isinstance(sender, str):
        raise _bad_body()
    targets = payload.get("to")
    if targets is None or targets == []:
        raise _send_error("param to can't be empty")
    if not _is_target_list(targets):
        raise _bad_body()
    if len(targets) > cap:
        raise _send_error(f"params to's size can't exceed limit {cap}")
    kind = payload.get("type")
    if kind is None or kind == "":
        raise _send_error("param type can't be empty")
    body = payload.get("body")
    if body is None or body == {}:
        raise _send_error("param body can't be empty")
    if "ext" in payload and not isinstance(payload["ext"], dict):
        raise _send_error("param ext must be JSONObject")
    if kind not in MESSAGE_KINDS or not isinstance(body, dict) or kind_problem(kind, body):
        raise _bad_body()
    return targets


# ---------------------------------------------------------------------------
# The simulated app: credentials, tokens, limits, counters.


class EasemobSimulator:
    """State of one simulated Easemob app. Safe to use from any thread."""

    def __init__(
        self,
        *,
        org: str,
        app: str,
        client_id: str,
        client_secret: str,
        token_ttl: int = DEFAULT_TOKEN_TTL,
        calls_per_second: int = 100,
        messages_per_minute: int = 6000,
        token_calls_per_second: int = 300,
        max_body_bytes: int = 5120,
        max_users_per_call: int = 600,
        clock: Clock = time.monotonic,
    ) -> None:
        self.org = org
        self.app = app
        self.client_id = client_id
        self.client_secret = client_secret
        self.token_ttl = token_ttl
        self.messages_per_minute = messages_per_minute
        self.max_body_bytes = max_body_bytes
        self.caps = {
            "users": max_users_per_call,
            "chatgroups": GROUPS_PER_CALL,
            "chatrooms": ROOMS_PER_CALL,
        }
        # Stable across restarts so recorded envelopes stay comparable.
        self.application = str(uuid.uuid5(uuid.NAMESPACE_URL, f"easemob:{org}#{app}"))
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float | None] = {}  # token -> expiry on the clock, None = never
        self.call_window = SlidingWindow(calls_per_second, 1.0, clock)
        self.token_window = SlidingWindow(token_calls_per_second, 1.0, clock)
        self.message_window = SlidingWindow(messages_per_minute, 60.0, clock)
        # Snowflake-like: milliseconds shifted left, then a counter: 19 digits, increasing.
        self._ids = itertools.count(int(time.time() * 1000) << 22)
        self._stats = dict.fromkeys(
            (
                "token_calls",
                "tokens_issued",
                "message_calls",
                "messages_accepted",
                "rate_limited_429",
                "quota_exceeded_403",
            ),
            0,
        )

    # -- tokens --------------------------------------------------------------

    def issue_token(self, ttl: int) -> str:
        token = "YWMt" + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = None if ttl == 0 else self._clock() + ttl
            self._stats["tokens_issued"] += 1
        return token

    def authenticate(self, authorization: str | None) -> None:
        """Raise the 401 Easemob gives for a missing, expired or unknown bearer token."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise EasemobError(
                401,
                "unauthorized",
                "Unable to authenticate due to expired access token",
                _SECURITY,
            )
        with self._lock:
            known = token in self._tokens
            expiry = self._tokens.get(token)
        if not known:
            raise EasemobError(
                401,
                "auth_bad_access_token",
                "Unable to authenticate due to corrupt access token",
                _SECURITY,
            )
        if expiry is not None and self._clock() >= expiry:
            raise EasemobError(
                401,
                "unauthorized",
                "Unable to authenticate due to expired access token",
                _SECURITY,
            )

    def expire_tokens(self) -> int:
        """Expire every issued token now, even those issued with ttl 0; returns how many."""
        with self._lock:
            past = self._clock() - 1.0
            for token in self._tokens:
                self._tokens[token] = past
            return len(self._tokens)

    # -- messages ------------------------------------------------------------

    def next_message_id(self) -> str:
        with self._lock:
            return str(next(self._ids))

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    # -- request checks shared by the handlers ---------------------------------

    def check_app(self, org: str, app: str, path: str) -> None:
        if org != self.org or app != self.app:
            raise EasemobError(
                404,
                "organization_application_not_found",
                f"Could not find application for {org}/{app} from URI: {path}",
                _APP_NOT_FOUND,
            )

    def check_size(self, body: bytes) -> None:
        if len(body) > self.max_body_bytes:
            raise EasemobError(
                413, "Request Entity Too Large", "Request Entity Too Large", _WEB_APPLICATION
            )

    def admit_call(self, window: SlidingWindow) -> None:
        if not window.try_acquire():
            self.count("rate_limited_429")
            raise EasemobError(
                429, "reach_limit", "This request has reached api limit", _REACH_LIMIT
            )


def _json_object(request: Request, body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or the 415/400 Easemob answers instead."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise EasemobError(415, "web_application", "Unsupported Media Type", _WEB_APPLICATION)
    if not body.strip():
        raise EasemobError(
            400,
            "json_parse",
            "No content to map due to end-of-input\n at [Source: java.io.ByteArrayInputStream; "
            "line: 1, column: 1]",
            _JSON_PARSE,
        )
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise EasemobError(
            400, "json_parse", "Invalid UTF-8 middle byte in request body", _JSON_PARSE
        ) from None
    except json.JSONDecodeError as exc:
        raise EasemobError(
            400,
            "json_parse",
            f"Unexpected character: {exc.msg}\n at [Source: java.io.ByteArrayInputStream; "
            f"line: {exc.lineno}, column: {exc.colno}]",
            _JSON_PARSE,
        ) from None
    if not isinstance(payload, dict):
        raise EasemobError(
            400,
            "json_parse",
            "Can not deserialize instance of java.util.LinkedHashMap out of "
            f"{'START_ARRAY' if isinstance(payload, list) else 'VALUE'} token",
            _JSON_PARSE,
        )
    return payload


def _uri(request: Request) -> str:
    return f"{str(request.base_url).rstrip('/')}{request.url.path}"


def _duration_ms(request: Request) -> int:
    started = getattr(request.state, "started", None)
    return 0 if started is None else int((time.monotonic() - started) * 1000)


def create_easemob_app(
    *,
    org: str,
    app: str,
    client_id: str,
    client_secret: str,
    token_ttl: int = DEFAULT_TOKEN_TTL,
    calls_per_second: int = 100,
    messages_per_minute: int = 6000,
    token_calls_per_second: int = 300,
    max_body_bytes: int = 5120,
    max_users_per_call: int = 600,
    clock: Clock = time.monotonic,
) -> FastAPI:
    """The Easemob simulator as an ASGI app; ``app.state.easemob`` is its :class:`EasemobSimulator`.

    ``clock`` drives token expiry and the rate windows; tests pass a fake one.
    """
    sim = EasemobSimulator(
        org=org,
        app=app,
        client_id=client_id,
        client_secret=client_secret,
        token_ttl=token_ttl,
        calls_per_second=calls_per_second,
        messages_per_minute=messages_per_minute,
        token_calls_per_second=token_calls_per_second,
        max_body_bytes=max_body_bytes,
        max_users_per_call=max_users_per_call,
        clock=clock,
    )
    # Docs live under /_sandbox/ so browsing them leaves the ledger alone.
    api = FastAPI(
        title="Easemob simulator",
        version="2022",
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    api.state.easemob = sim

    @api.exception_handler(EasemobError)
    async def easemob_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, EasemobError)
        return JSONResponse(exc.body(_duration_ms(request)), status_code=exc.status)

    @api.exception_handler(StarletteHTTPException)
    async def routing_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        if exc.status_code == 404:
            error = EasemobError(
                404, "service_resource_not_found", "Service resource not found", _NOT_FOUND
            )
        else:
            error = EasemobError(
                exc.status_code, "web_application", str(exc.detail), _WEB_APPLICATION
            )
        return JSONResponse(error.body(), status_code=error.status, headers=exc.headers)

    def envelope(request: Request, path: str, data: dict[str, str]) -> dict[str, Any]:
        return {
            "action": "post",
            "application": sim.application,
            "path": path,
            "uri": _uri(request),
            "entities": [],
            "data": data,
            "timestamp": _now_ms(),
            "duration": _duration_ms(request),
            "organization": sim.org,
            "applicationName": sim.app,
        }

    def accept(
        request: Request, target_type: str, targets: list[str], *, classic: bool, reply_ids: bool
    ) -> dict[str, str]:
        if target_type == "users" and not sim.message_window.try_acquire(len(targets)):
            sim.count("quota_exceeded_403")
            # Both texts say "reach limit", the phrase a client can key its retry on.
            if classic:
                raise EasemobError(
                    403,
                    "forbidden_op",
                    f"Forbidden for url: [{_uri(request)}], message send reach limit: "
                    f"{sim.messages_per_minute} messages per minute to users",
                    _FORBIDDEN_OP,
                )
            raise EasemobError(403, "message_send_error", "message send reach limit", _FORBIDDEN_OP)
        sim.count("messages_accepted", len(targets))
        # One id per recipient; a repeated target keeps the last one, as a map does.
        return {target: sim.next_message_id() if reply_ids else "success" for target in targets}

    async def authorised_body(request: Request, org: str, app_name: str) -> dict[str, Any]:
        request.state.started = time.monotonic()
        sim.count("message_calls")
        body = await request.body()
        # The front proxy refuses oversized bodies before the app sees anything.
        sim.check_size(body)
        sim.check_app(org, app_name, request.url.path)
        sim.authenticate(request.headers.get("authorization"))
        sim.admit_call(sim.call_window)
        return _json_object(request, body)

    @api.post("/{org}/{app_name}/token", tags=["easemob"])
    async def token(org: str, app_name: str, request: Request) -> dict[str, Any]:
        request.state.started = time.monotonic()
        sim.count("token_calls")
        body = await request.body()
        sim.check_size(body)
        sim.check_app(org, app_name, request.url.path)
        sim.admit_call(sim.token_window)
        payload = _json_object(request, body)
        grant_type = payload.get("grant_type")
        if grant_type != "client_credentials":
            raise EasemobError(
                400,
                "unsupported_grant_type",
                f"unsupported grant type: {grant_type}",
                _MANAGEMENT,
            )
        if not _same(payload.get("client_id"), sim.client_id):
            raise EasemobError(400, "invalid_grant", "client_id does not match", _MANAGEMENT)
        if not _same(payload.get("client_secret"), sim.client_secret):
            raise EasemobError(400, "invalid_grant", "client_secret does not match", _MANAGEMENT)
        ttl = payload.get("ttl", sim.token_ttl)
        if not _is_count(ttl):
            raise _illegal("ttl must be a non-negative integer")
        return {
            "access_token": sim.issue_token(ttl),
            "expires_in": ttl,
            "application": sim.application,
        }

    @api.post("/{org}/{app_name}/messages", tags=["easemob"])
    async def send_classic(org: str, app_name: str, request: Request) -> dict[str, Any]:
        payload = await authorised_body(request, org, app_name)
        target_type, targets = check_classic_send(payload, sim.caps)
        reply_ids = request.query_params.get("useMsgId", "").lower() == "true"
        data = accept(request, target_type, targets, classic=True, reply_ids=reply_ids)
        return envelope(request, "/messages", data)

    @api.post("/{org}/{app_name}/messages/{target_type}", tags=["easemob"])
    async def send_new(
        org: str, app_name: str, target_type: str, request: Request
    ) -> dict[str, Any]:
        if target_type not in TARGET_TYPES:
            raise EasemobError(
                404, "service_resource_not_found", "Service resource not found", _NOT_FOUND
            )
        payload = await authorised_body(request, org, app_name)
        targets = check_new_send(payload, sim.caps[target_type])
        data = accept(request, target_type, targets, classic=False, reply_ids=True)
        return envelope(request, f"/messages/{target_type}", data)

    @api.post("/_sandbox/easemob/expire-tokens", tags=["sandbox"])
    async def expire_tokens() -> dict[str, int]:
        return {"expired": sim.expire_tokens()}

    @api.get("/_sandbox/easemob/stats", tags=["sandbox"])
    async def stats() -> dict[str, int]:
        return sim.stats()

    # Last, so the ledger and fault middleware wraps everything above.
    api.state.sandbox = install_control(api)
    return api


def _same(given: Any, expected: str) -> bool:
    return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())


def create_easemob_app_from_settings(settings: Settings, **overrides: Any) -> FastAPI:
    """The simulator for the app ``settings`` points at, limits from ``settings`` too."""
    missing = [
        f"DISPATCHER_EASEMOB_{name.upper()}"
        for name in ("org", "app", "client_id", "client_secret")
        if getattr(settings, f"easemob_{name}") is None and name not in overrides
    ]
    if missing:
        raise ConfigurationError(f"the Easemob simulator needs {', '.join(missing)}")
    secret = settings.easemob_client_secret
    options: dict[str, Any] = {
        "org": settings.easemob_org,
        "app": settings.easemob_app,
        "client_id": settings.easemob_client_id,
        "client_secret": secret.get_secret_value() if secret is not None else None,
        "calls_per_second": settings.easemob_calls_per_second,
        "messages_per_minute": settings.easemob_messages_per_minute,
        "max_body_bytes": settings.easemob_max_body_bytes,
    }
    options.update(overrides)
    return create_easemob_app(**options)
