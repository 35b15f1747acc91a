"""Request signatures (docs/security.md), pure functions shared by the server and the client.

Signature v2, every client's default, covers the whole request::

    {METHOD}\\n{path}\\n{query}\\n{body}

the upper-case method, the URL path exactly as sent, the query parameters
except ``sign`` sorted by name (then by value, for a name given twice) and
joined as ``k=v`` with ``&``, then the raw body bytes (empty for a GET). Names
and values are taken as they are *after* URL decoding, so the same parameters
sign the same however a client percent-encodes them. ``sign`` is the lowercase
hex HMAC-SHA256 of that string keyed by the client's secret.

The seed's scheme (v1: ``{query}\\n{body}``) is kept for clients configured
``legacy_signing``, and HMAC-MD5 (32 hex characters) for clients configured
``md5``.

>>> compute_sign("s3cret", "POST", "/p", {"client": "c1", "channel": "ch1"}, b'{"a":1}')[:16]
'830d4d1bd592c228'
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Literal

SIGN_PARAM = "sign"
TIMESTAMP_PARAM = "timestamp"
NONCE_PARAM = "nonce"

Algorithm = Literal["sha256", "md5"]
DIGESTS: dict[str, Callable[..., Any]] = {"sha256": hashlib.sha256, "md5": hashlib.md5}
ALGORITHM_BY_LENGTH: dict[int, Algorithm] = {64: "sha256", 32: "md5"}

Params = Mapping[str, str] | Iterable[tuple[str, str]]


def _items(params: Params) -> list[tuple[str, str]]:
    if isinstance(params, Mapping):
        return [(str(k), str(v)) for k, v in params.items()]
    return [(str(k), str(v)) for k, v in params]


def canonical_query(params: Params) -> str:
    """``k=v`` pairs except ``sign``, sorted, joined with ``&``."""
    return "&".join(f"{k}={v}" for k, v in sorted(p for p in _items(params) if p[0] != SIGN_PARAM))


def canonical_request(method: str, path: str, params: Params, body: bytes) -> bytes:
    """What v2 signs: method, path, canonical query and raw body, one per line."""
    head = f"{method.upper()}\n{path}\n{canonical_query(params)}\n"
    return head.encode() + body


def canonical_string(params: Params, body: bytes) -> bytes:
    """What v1 (the seed's scheme, legacy clients only) signs: the canonical query, a
    newline, the raw body."""
    return canonical_query(params).encode() + b"\n" + body


def hmac_hex(secret: str | bytes, message: bytes, algorithm: Algorithm = "sha256") -> str:
    key = secret.encode() if isinstance(secret, str) else secret
    return hmac.new(key, message, DIGESTS[algorithm]).hexdigest()


def compute_sign(
    secret: str | bytes,
    method: str,
    path: str,
    params: Params,
    body: bytes = b"",
    algorithm: Algorithm = "sha256",
) -> str:
    """The v2 ``sign`` of a request."""
    return hmac_hex(secret, canonical_request(method, path, params, body), algorithm)


def compute_legacy_sign(
    secret: str | bytes, params: Params, body: bytes = b"", algorithm: Algorithm = "sha256"
) -> str:
    """The v1 ``sign`` (the seed's scheme, accepted only from ``legacy_signing`` clients)."""
    return hmac_hex(secret, canonical_string(params, body), algorithm)


def sign_matches(secret: bytes, canonical: bytes, sign: str) -> bool:
    """Constant-time check of ``sign`` against either algorithm, chosen by its length."""
    algorithm = ALGORITHM_BY_LENGTH.get(len(sign))
    if algorithm is None:
        return False
    expected = hmac_hex(secret, canonical, algorithm)
    return hmac.compare_digest(expected.encode(), sign.encode())


def unsignable(name: str, value: str) -> str | None:
    """Why a parameter cannot be part of an unambiguous canonical string, or None.

    ``a=1&b=2`` could be two parameters or one whose value holds ``&``: such
    characters are refused so one canonical string means one set of parameters.
    """
    if not name or any(c in name for c in "=&\n"):
        return f"query parameter name {name!r} is empty or contains '=', '&' or a newline"
    if any(c in value for c in "&\n"):
        return f"query parameter {name!r} has a value containing '&' or a newline"
    return None
