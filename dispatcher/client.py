"""A small signing client of the HTTP API, sync and async.

>>> with Client("http://127.0.0.1:8087", "my-client", "my-secret", channel="my-channel") as api:
...     message_id = api.submit({"messageType": 1, "from": "u1", "to": "u2",
...                              "messageInfo": {"textMessage": "hi"}})
...     api.status(message_id)["state"]

Answers other than 200 raise the same errors as the Python producer API
(:class:`~dispatcher.errors.InvalidMessage` naming every broken field,
:class:`~dispatcher.errors.MessageTooLarge`, :class:`~dispatcher.errors.Conflict`,
:class:`~dispatcher.errors.Unavailable`, and its :class:`~dispatcher.errors.Busy` for a
503 with ``Retry-After``) plus the HTTP ones of
:mod:`dispatcher.errors` (:class:`Unauthorized`, :class:`RateLimited`,
:class:`ApiError` for anything else). A status lookup of an unknown id
returns None.

Each request is signed with signature v2 (method, path, query and body;
docs/security.md) and a fresh ``timestamp`` and ``nonce``, so a retry of the same
message is never mistaken for a replay. ``legacy_signing=True`` signs the
seed's way instead (query and body only), for servers that know the client as
legacy; ``algorithm="md5"`` uses HMAC-MD5, for clients configured for it.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Any, Self
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


class _Base:
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
        return path, self.signer.sign("GET", path, b"", _owner(owner))

    def _action_request(
        self, template: str, message_id: str, owner: str | None
    ) -> tuple[str, dict[str, str]]:
        path = template.format(getMessageId=quote(message_id, safe=""))
        return path, self.signer.sign("POST", path, b"", _owner(owner))

    def _status_many_request(
        self, ids: Sequence[str], owner: str | None
    ) -> tuple[str, dict[str, str], bytes]:
        body = encode_payload({"getMessageIds": list(ids)})
        params = self.signer.sign("POST", paths.STATUS_MANY, body, _owner(owner))
        return paths.STATUS_MANY, params, body


def _owner(owner: str | None) -> dict[str, str] | None:
    """An admin client's ``owner`` parameter: the client whose messages it reads."""
    return None if owner is None else {"owner": owner}


_HEADERS = {"Content-Type": "application/json"}


class Client(_Base):
    """Synchronous client; one connection pool, close it (or use ``with``)."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        *,
        channel: str,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, client_id, secret, channel=channel, **options)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport)

    def submit(self, payload: Payload) -> str:
        """Submit one message; returns its getMessageId."""
        path, params, body = self._submit_request(payload)
        data = self._call("POST", path, params, body)
        return str(data["getMessageId"])

    def submit_many(self, payloads: Sequence[Mapping[str, Any]]) -> Results:
        """Submit 1 to 500 messages in one request (docs/api.md, "Batch submit"): per
        message, in order, its getMessageId or the error a :meth:`submit` would raise."""
        path, params, body = self._batch_request(payloads)
        return batch_results(
            self._call("POST", path, params, body), payloads, self.signer.client_id
        )

    def status(self, message_id: str, *, owner: str | None = None) -> dict[str, Any] | None:
        """The status record of one of this client's messages (an admin client: of
        ``owner``'s), or None when the id is unknown."""
        path, params = self._status_request(message_id, owner)
        try:
            record: dict[str, Any] | None = self._call("GET", path, params, None)
            return record
        except NotFound:
            return None

    def status_many(
        self, message_ids: Sequence[str], *, owner: str | None = None
    ) -> list[dict[str, Any] | None]:
        """Status records in the same order, None for unknown ids."""
        path, params, body = self._status_many_request(message_ids, owner)
        records: list[dict[str, Any] | None] = self._call("POST", path, params, body)
        return records

    def cancel(self, message_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Cancel a message not sent yet: ``{"outcome", "state", ...}`` (docs/api.md);
        ``owner``: an admin client names the client whose message it is."""
        path, params = self._action_request(paths.CANCEL, message_id, owner)
        answer: dict[str, Any] = self._call("POST", path, params, None)
        return answer

    def recall(self, message_id: str, *, owner: str | None = None) -> dict[str, Any]:
        """Recall a delivered message; RecallRefused (``.reason``) when it cannot be."""
        path, params = self._action_request(paths.RECALL, message_id, owner)
        answer: dict[str, Any] = self._call("POST", path, params, None)
        return answer

    def _call(self, method: str, path: str, params: dict[str, str], body: bytes | None) -> Any:
        try:
            response = self._http.request(
                method, path, params=params, content=body, headers=_HEADERS if body else None
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unavailable(f"dispatcher API unreachable at {self.base_url}: {exc}") from None
        return raise_for_envelope(response, self.signer.client_id)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class AsyncClient(_Base):
    """Asynchronous client, same methods as :class:`Client`, awaited."""

    def __init__(
        self,
        base_url: str,
        client_id: str,
        secret: str,
        *,
        channel: str,
        timeout: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
        **options: Any,
    ) -> None:
        super().__init__(base_url, client_id, secret, channel=channel, **options)
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout, transport=transport)

    async def submit(self, payload: Payload) -> str:
        path, params, body = self._submit_request(payload)
        data = await self._call("POST", path, params, body)
        return str(data["getMessageId"])

    async def submit_many(self, payloads: Sequence[Mapping[str, Any]]) -> Results:
        path, params, body = self._batch_request(payloads)
        data = await self._call("POST", path, params, body)
        return batch_results(data, payloads, self.signer.client_id)

    async def status(self, message_id: str, *, owner: str | None = None) -> dict[str, Any] | None:
        path, params = self._status_request(message_id, owner)
        try:
            record: dict[str, Any] | None = await self._call("GET", path, params, None)
            return record
        except NotFound:
            return None

    async def status_many(
        self, message_ids: Sequence[str], *, owner: str | None = None
    ) -> list[dict[str, Any] | None]:
        path, params, body = self._status_many_request(message_ids, owner)
        records: list[dict[str, Any] | None] = await self._call("POST", path, params, body)
        return records

    async def cancel(self, message_id: str, *, owner: str | None = None) -> dict[str, Any]:
        path, params = self._action_request(paths.CANCEL, message_id, owner)
        answer: dict[str, Any] = await self._call("POST", path, params, None)
        return answer

    async def recall(self, message_id: str, *, owner: str | None = None) -> dict[str, Any]:
        path, params = self._action_request(paths.RECALL, message_id, owner)
        answer: dict[str, Any] = await self._call("POST", path, params, None)
        return answer

    async def _call(
        self, method: str, path: str, params: dict[str, str], body: bytes | None
    ) -> Any:
        try:
            response = await self._http.request(
                method, path, params=params, content=body, headers=_HEADERS if body else None
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise Unavailable(f"dispatcher API unreachable at {self.base_url}: {exc}") from None
        return raise_for_envelope(response, self.signer.client_id)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "InvalidMessage",
    "MessageTooLarge",
    "RateLimited",
    "RecallRefused",
    "Unauthorized",
    "Unavailable",
]
