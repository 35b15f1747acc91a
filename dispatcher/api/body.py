"""Reading a request body: size limit, strict UTF-8, strict JSON.

Strict JSON here means: no NaN/Infinity, no lone surrogates, and no object
with the same key twice (``{"to":"u2","to":"u3"}`` would otherwise mean
whichever the parser keeps; docs/security.md).
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.config import Settings
from dispatcher.errors import FieldError, InvalidMessage, MessageTooLarge
from dispatcher.limits import batch_request_bytes, fanout_request_bytes

# A \uD800-\uDFFF escape may leave a lone surrogate that no UTF-8 writer accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge([FieldError("body", f"is larger than the limit of {limit} bytes")])


def body_limit(settings: Settings, path: str) -> int:
    """The largest body a request to ``path`` may have: a batch submit's is larger, and a
    single submit's has room for a full ``to`` list."""
    if path == SUBMIT_BATCH:
        return batch_request_bytes(settings.max_request_bytes, settings.max_batch_request_bytes)
    if path == SUBMIT:
        return fanout_request_bytes(settings.max_request_bytes)
    return settings.max_request_bytes


def decode_submit(body: bytes, limit: int) -> Any:
    """A single submit's JSON, its size held to ``limit`` with its ``to`` list aside (the
    list has its own bound, :data:`dispatcher.limits.MAX_USER_RECIPIENTS`); a body over
    the limit is answered 413 whatever else is wrong with it."""
    try:
        payload = decode_json(body)
    except InvalidMessage:
        if len(body) > limit:
            raise too_large(limit) from None
        raise
    to = payload.get("to") if isinstance(payload, dict) else None
    listed = len(json.dumps(to, ensure_ascii=False).encode()) if isinstance(to, list) else 0
    if len(body) - listed > limit:
        raise too_large(limit)
    return payload


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


class _DuplicateKeys:
    """``object_pairs_hook`` that builds dicts and remembers which ones had a key twice."""

    def __init__(self) -> None:
        # Keyed by id(); the dict is kept alive with its keys so no id is reused meanwhile.
        self.found: dict[int, tuple[dict[str, Any], list[str]]] = {}

    def __call__(self, pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        value = dict(pairs)
        if len(value) != len(pairs):
            seen: set[str] = set()
            repeated: list[str] = []
            for key, _ in pairs:
                if key in seen:
                    repeated.append(key)
                seen.add(key)
            self.found[id(value)] = (value, repeated)
        return value

    def errors(self, root: Any) -> list[FieldError]:
        """One error per repeated key, named by its path from the body's root."""
        errors: list[FieldError] = []
        pending: list[tuple[str, Any]] = [("", root)]
        while pending:
            path, value = pending.pop()
            children: Any = ()
            if isinstance(value, dict):
                _, repeated = self.found.get(id(value), (value, []))
                for key in dict.fromkeys(repeated):
                    errors.append(FieldError(_join(path, key), "is given more than once"))
                children = value.items()
            elif isinstance(value, list):
                children = enumerate(value)
            pending.extend((_join(path, str(k)), v) for k, v in children)
        return sorted(errors, key=lambda e: e.field)


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def decode_json(body: bytes) -> Any:
    """Strict UTF-8, strict JSON (no NaN/Infinity, no repeated keys), no lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            [FieldError("body", f"is not valid UTF-8 (byte {exc.start}: {exc.reason})")]
        ) from None
    duplicates = _DuplicateKeys()
    try:
        value = json.loads(text, parse_constant=_reject_constant, object_pairs_hook=duplicates)
    except RecursionError:
        raise InvalidMessage([FieldError("body", "is nested too deeply")]) from None
    except ValueError as exc:
        raise InvalidMessage([FieldError("body", f"is not valid JSON ({exc})")]) from None
    if duplicates.found:
        raise InvalidMessage(duplicates.errors(value))
    if "\\u" in text and _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidMessage(
                [
                    FieldError(
                        "body", "contains an unpaired UTF-16 surrogate escape (\\uD800-\\uDFFF)"
                    )
                ]
            ) from None
    return value
