"""What the Easemob simulator refuses, and how: the usergrid error answers and the
checks of a send request's body (docs/providers.md, "Easemob"). Pure functions."""

from __future__ import annotations

import json
import math
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import Request

TARGET_TYPES = ("users", "chatgroups", "chatrooms")
MESSAGE_KINDS = ("txt", "img", "audio", "video", "file", "loc", "cmd", "custom")
GROUPS_PER_CALL = 3
ROOMS_PER_CALL = 10
MAX_CUSTOM_EXTS = 16
CUSTOM_EVENT = re.compile(r"[a-zA-Z0-9_/.\-]{1,32}")

# Java classes named in the real bodies; nobody branches on them, but clients log them.
ILLEGAL_ARGUMENT = "java.lang.IllegalArgumentException"
SECURITY = "org.apache.usergrid.rest.exceptions.SecurityException"
JSON_PARSE = "org.codehaus.jackson.JsonParseException"
WEB_APPLICATION = "javax.ws.rs.WebApplicationException"
APP_NOT_FOUND = "org.apache.usergrid.rest.exceptions.OrganizationApplicationNotFoundException"
NOT_FOUND = "org.apache.usergrid.services.exceptions.ServiceResourceNotFoundException"
REACH_LIMIT = "com.easemob.ratelimit.exception.ReachLimitException"
FORBIDDEN_OP = "com.easemob.message.exception.ForbiddenOpException"
MANAGEMENT = "org.apache.usergrid.management.exceptions.ManagementException"


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
            "timestamp": now_ms(),
            "duration": duration_ms,
            "error_description": self.description,
        }


def illegal(description: str) -> EasemobError:
    return EasemobError(400, "illegal_argument", description, ILLEGAL_ARGUMENT)


def send_error(description: str) -> EasemobError:
    return EasemobError(400, "message_send_error", description, ILLEGAL_ARGUMENT)


def bad_body() -> EasemobError:
    return EasemobError(400, "invalid_request_body", INVALID_REQUEST_BODY, ILLEGAL_ARGUMENT)


def now_ms() -> int:
    return int(time.time() * 1000)


# ---------------------------------------------------------------------------
# Message validation: pure functions, one error style per endpoint family.

Check = tuple[Callable[[Any], bool], str]


def _is_str(value: Any) -> bool:
    return isinstance(value, str)


def _is_text(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def is_count(value: Any) -> bool:
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
        isinstance(value, dict) and is_count(value.get("width")) and is_count(value.get("height"))
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
_COUNT: Check = (is_count, "a non-negative integer")
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
        raise illegal("target_type must be provided")
    if target_type not in TARGET_TYPES:
        raise illegal("target_type can only be 'users' or 'chatgroups' or 'chatrooms'")
    targets = payload.get("target")
    if targets is None:
        raise illegal("target must be provided")
    if not _is_target_list(targets):
        raise illegal("target must be an array of non-empty strings")
    if not targets:
        raise illegal("target can't be empty")
    if len(targets) > caps[target_type]:
        raise illegal("params to's size can't exceed limit")
    sender = payload.get("from")  # null reads as absent, as Jackson does
    if sender == "":
        raise illegal("from can't be empty")
    if sender is not None and not isinstance(sender, str):
        raise illegal("from must be a string")
    if "ext" in payload:
        if payload["ext"] is None:
            raise illegal("ext can't be null")
        if not isinstance(payload["ext"], dict):
            raise illegal("ext must be JSONObject")
    msg = payload.get("msg")
    if msg is None:
        raise illegal("msg must be provided")
    if not isinstance(msg, dict):
        raise illegal("msg must be JSONObject")
    kind = msg.get("type")
    if kind not in MESSAGE_KINDS:
        raise illegal(f"msg type can only be one of {', '.join(MESSAGE_KINDS)}")
    problem = kind_problem(kind, msg)
    if problem:
        raise illegal(problem)
    return target_type, targets


def check_new_send(payload: Mapping[str, Any], cap: int) -> list[str]:
    """Validate a ``/messages/{users|chatgroups|chatrooms}`` body; returns the targets."""
    sender = payload.get("from")
    if sender == "":
        raise send_error("param from can't be empty")
    if sender is not None and not isinstance(sender, str):
        raise bad_body()
    targets = payload.get("to")
    if targets is None or targets == []:
        raise send_error("param to can't be empty")
    if not _is_target_list(targets):
        raise bad_body()
    if len(targets) > cap:
        raise send_error(f"params to's size can't exceed limit {cap}")
    kind = payload.get("type")
    if kind is None or kind == "":
        raise send_error("param type can't be empty")
    body = payload.get("body")
    if body is None or body == {}:
        raise send_error("param body can't be empty")
    if "ext" in payload and not isinstance(payload["ext"], dict):
        raise send_error("param ext must be JSONObject")
    if kind not in MESSAGE_KINDS or not isinstance(body, dict) or kind_problem(kind, body):
        raise bad_body()
    return list(targets)


def json_object(request: Request, body: bytes) -> dict[str, Any]:
    """The request body as a JSON object, or the 415/400 Easemob answers instead."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise EasemobError(415, "web_application", "Unsupported Media Type", WEB_APPLICATION)
    if not body.strip():
        raise EasemobError(
            400,
            "json_parse",
            "No content to map due to end-of-input\n at [Source: java.io.ByteArrayInputStream; "
            "line: 1, column: 1]",
            JSON_PARSE,
        )
    try:
        payload = json.loads(body)
    except UnicodeDecodeError:
        raise EasemobError(
            400, "json_parse", "Invalid UTF-8 middle byte in request body", JSON_PARSE
        ) from None
    except json.JSONDecodeError as exc:
        raise EasemobError(
            400,
            "json_parse",
            f"Unexpected character: {exc.msg}\n at [Source: java.io.ByteArrayInputStream; "
            f"line: {exc.lineno}, column: {exc.colno}]",
            JSON_PARSE,
        ) from None
    if not isinstance(payload, dict):
        raise EasemobError(
            400,
            "json_parse",
            "Can not deserialize instance of java.util.LinkedHashMap out of "
            f"{'START_ARRAY' if isinstance(payload, list) else 'VALUE'} token",
            JSON_PARSE,
        )
    return payload
