"""What both HTTP clients share (:mod:`dispatcher.client`, :mod:`dispatcher.client_async`):
request signing, the requests each method builds, and the mapping of answers to errors."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from dispatcher.api import paths
from dispatcher.api.signing import Algorithm, compute_legacy_sign, compute_sign
from dispatcher.errors import (
    ApiError,
    Busy,
    Conflict,
    DispatcherError,
    FieldError,
    InvalidMessage,
    MessageTooLarge,
    NotFound,
    RateLimited,
    RecallRefused,
    Unauthorized,
    Unavailable,
)
from dispatcher.store.recipients import RecipientOutcome, RecipientState

Payload = Mapping[str, Any] | bytes
Results = list[str | DispatcherError]
"""Per message of a batch, in order: its getMessageId, or the error it was refused with."""


class _Signer:
    """Query parameters and body bytes of a signed request (shared by both clients)."""

    def __init__(
        self,
        client_id: str,
        secret: str,
        *,
        channel: str,
        api_version: str | None,
        version: str | None,
        algorithm: Algorithm,
        legacy_signing: bool,
    ) -> None:
        self.client_id = client_id
        self._secret = secret.encode()
        self.algorithm = algorithm
        self.legacy_signing = legacy_signing
        self._fixed = {"client": client_id, "channel": channel}
        if api_version is not None:
            self._fixed["apiVersion"] = api_version
        if version is not None:
            self._fixed["version"] = version

    def __repr__(self) -> str:
        return f"<signer client={self.client_id!r} algorithm={self.algorithm}>"

    def sign(
        self, method: str, path: str, body: bytes, extra: dict[str, str] | None = None
    ) -> dict[str, str]:
        """The query parameters of one request (``extra`` among them), ``sign`` included."""
        params = {**self._fixed, **(extra or {})}
        params["timestamp"] = str(int(time.time()))
        params["nonce"] = uuid.uuid4().hex
        if self.legacy_signing:
            params["sign"] = compute_legacy_sign(self._secret, params, body, self.algorithm)
        else:
            params["sign"] = compute_sign(self._secret, method, path, params, body, self.algorithm)
        return params


def encode_payload(payload: Payload) -> bytes:
    """Bytes as given, or compact UTF-8 JSON (not ASCII-escaped)."""
    if isinstance(payload, bytes):
        return payload
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode()


def raise_for_envelope(response: httpx.Response, client_id: str = "") -> Any:
    """The envelope's ``data`` of a 200, else the matching error."""
    try:
        envelope = response.json()
        code = int(envelope["code"])
        message = str(envelope.get("message", ""))
        data = envelope.get("data")
    except (ValueError, KeyError, TypeError):
        raise ApiError(
            response.status_code, response.text[:200] or response.reason_phrase
        ) from None
    if code == 200:
        return data
    raise error_for(code, message, data, response.headers.get("Retry-After"), client_id)


def error_for(
    code: int, message: str, data: Any, retry_after: str | None, client_id: str = ""
) -> DispatcherError:
    """The error an answer other than 200 stands for (a whole request's or a batch entry's)."""
    if code in (400, 413):
        errors = [
            FieldError(str(e.get("field", "")), str(e.get("error", "")))
            for e in (data or {}).get("errors", [])
            if isinstance(e, dict)
        ] or [FieldError("body", message)]
        return (MessageTooLarge if code == 413 else InvalidMessage)(errors)
    if code == 401:
        return Unauthorized(message)
    if code == 404:
        return NotFound(message)
    if code == 409 and isinstance(data, dict) and "reason" in data:
        return RecallRefused(str(data.pop("reason")), message, **data)
    if code == 409:
        return Conflict(str((data or {}).get("getMessageId", "")) or message)
    if code == 429:
        wait = retry_after or (data or {}).get("retryAfter") or 1
        return RateLimited(client_id, float(wait), message)
    if code == 503:
        if retry_after is not None:  # "service busy": come back after that many seconds
            return Busy(message, float(retry_after))
        return Unavailable(message)
    return ApiError(code, message, data)


def batch_results(data: Any, payloads: Sequence[Mapping[str, Any]], client_id: str) -> Results:
    """A batch answer's ``results``: each message's getMessageId, or its error."""
    found: Results = []
    for entry, payload in zip(data["results"], payloads, strict=True):
        if "getMessageId" in entry:
            found.append(str(entry["getMessageId"]))
            continue
        detail = {**entry, "getMessageId": payload.get("getMessageId")}
        code, message = int(entry["code"]), str(entry["message"])
        found.append(error_for(code, message, detail, None, client_id))
    return found


class Base:
    """Settings and request building of both clients."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        *,
        channel: str,
        api_version: str | None = "01",
        version: str | None = "2.0",
        algorithm: Algorithm = "sha256",
        legacy_signing: bool = False,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.signer = _Signer(
            client_id,
            secret,
            channel=channel,
            api_version=api_version,
            version=version,
            algorithm=algorithm,
            legacy_signing=legacy_signing,
        )

    def _submit_request(self, payload: Payload) -> tuple[str, dict[str, str], bytes]:
        body = encode_payload(payload)
        return paths.SUBMIT, self.signer.sign("POST", paths.SUBMIT, body), body

    def _batch_request(
        self, payloads: Sequence[Mapping[str, Any]]
    ) -> tuple[str, dict[str, str], bytes]:
        body = encode_payload({"messages": list(payloads)})
        return paths.SUBMIT_BATCH, self.signer.sign("POST", paths.SUBMIT_BATCH, body), body

    def _status_request(self, message_id: str, owner: str | None) -> tuple[str, dict[str, str]]:
        path = paths.STATUS.format(getMessageId=quote(message_id, safe=""))
        return path, self.signer.sign("GET", path, b"", owner_param(owner))

    def _action_request(
        self, template: str, message_id: str, owner: str | None
    ) -> tuple[str, dict[str, str]]:
        path = template.format(getMessageId=quote(message_id, safe=""))
        return path, self.signer.sign("POST", path, b"", owner_param(owner))

    def _status_many_request(
        self, ids: Sequence[str], owner: str | None
    ) -> tuple[str, dict[str, str], bytes]:
        body = encode_payload({"getMessageIds": list(ids)})
        params = self.signer.sign("POST", paths.STATUS_MANY, body, owner_param(owner))
        return paths.STATUS_MANY, params, body

    def _recipients_request(
        self,
        message_id: str,
        owner: str | None,
        state: str | None,
        cursor: int,
        page_size: int | None,
    ) -> tuple[str, dict[str, str]]:
        path = paths.RECIPIENTS.format(getMessageId=quote(message_id, safe=""))
        query = recipients_query(owner, state, cursor, page_size)
        return path, self.signer.sign("GET", path, b"", query)


def owner_param(owner: str | None) -> dict[str, str] | None:
    """An admin client's ``owner`` parameter: the client whose messages it reads."""
    return None if owner is None else {"owner": owner}


def recipients_query(
    owner: str | None, state: str | None, cursor: int, page_size: int | None
) -> dict[str, str]:
    """The query of one recipients page (docs/api.md, "Fan-out")."""
    query = owner_param(owner) or {}
    if state is not None:
        query["state"] = RecipientState(state).value  # ValueError before any request
    if cursor:
        query["cursor"] = str(cursor)
    if page_size is not None:
        query["limit"] = str(page_size)
    return query


def recipient_page(data: Any) -> tuple[list[RecipientOutcome], int | None]:
    """A recipients page's outcomes, typed, and where the next page starts (None: done)."""
    outcomes = [
        RecipientOutcome(
            str(entry["to"]),
            RecipientState(entry["state"]),
            entry.get("providerMessageId"),
            entry.get("error"),
        )
        for entry in data["recipients"]
    ]
    cursor = data.get("nextCursor")
    return outcomes, None if cursor is None else int(cursor)


HEADERS = {"Content-Type": "application/json"}


def unreachable(base_url: str, exc: Exception) -> Unavailable:
    """The error of a request that never reached the API."""
    return Unavailable(f"dispatcher API unreachable at {base_url}: {exc}")
