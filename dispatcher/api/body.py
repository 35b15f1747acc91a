"""Reading a request body: size limit, strict UTF-8, strict JSON."""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request

from dispatcher.errors import FieldError, InvalidMessage, MessageTooLarge

# A \uD800-\uDFFF escape may leave a lone surrogate that no UTF-8 writer accepts.
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


async def read_body(request: Request, limit: int) -> bytes:
    """The raw body, refused with 413 as soon as it is known to exceed ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large(limit: int) -> MessageTooLarge:
    return MessageTooLarge([FieldError("body", f"is larger than the limit of {limit} bytes")])


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def decode_json(body: bytes) -> Any:
    """Strict UTF-8, strict JSON (no NaN/Infinity), no lone surrogates."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidMessage(
            [FieldError("body", f"is not valid UTF-8 (byte {exc.start}: {exc.reason})")]
        ) from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except RecursionError:
        raise InvalidMessage([FieldError("body", "is nested too deeply")]) from None
    except ValueError as exc:
        raise InvalidMessage([FieldError("body", f"is not valid JSON ({exc})")]) from None
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
