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
returns None. :meth:`Client.recipients` pages through a multi-recipient message's
recipients (docs/api.md, "Fan-out").

Each request is signed with signature v2 (method, path, query and body;
docs/security.md) and a fresh ``timestamp`` and ``nonce``, so a retry of the same
message is never mistaken for a replay. ``legacy_signing=True`` signs the
seed's way instead (query and body only), for servers that know the client as
legacy; ``algorithm="md5"`` uses HMAC-MD5, for clients configured for it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from dispatcher.api import paths
from dispatcher.client_async import AsyncClient
from dispatcher.client_base import (
    HEADERS,
    Base,
    Payload,
    Results,
    batch_results,
    encode_payload,
    error_for,
    raise_for_envelope,
    recipient_page,
    unreachable,
)
from dispatcher.errors import (
    ApiError,
    Conflict,
    InvalidMessage,
    MessageTooLarge,
    NotFound,
    RateLimited,
    RecallRefused,
    Unauthorized,
    Unavailable,
)
from dispatcher.store.recipients import RecipientOutcome, RecipientState


class Client(Base):
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

    def recipients(
        self,
        message_id: str,
        state: str | None = None,
        *,
        owner: str | None = None,
        page_size: int | None = None,
    ) -> Iterator[RecipientOutcome]:
        """Every recipient of a multi-recipient message, in the order of its ``to``, one
        page (``page_size``, default the server's 1,000) at a time; only those in
        ``state`` (``pending``, ``delivered``, ``failed``) if given. A generator: NotFound
        when iterated for an unknown id, another client's message or one recipient."""
        cursor: int | None = 0
        while cursor is not None:
            path, params = self._recipients_request(message_id, owner, state, cursor, page_size)
            outcomes, cursor = recipient_page(self._call("GET", path, params, None))
            yield from outcomes

    def _call(self, method: str, path: str, params: dict[str, str], body: bytes | None) -> Any:
        try:
            response = self._http.request(
                method, path, params=params, content=body, headers=HEADERS if body else None
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self.base_url, exc) from None
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


__all__ = [
    "ApiError",
    "AsyncClient",
    "Client",
    "Conflict",
    "InvalidMessage",
    "MessageTooLarge",
    "Payload",
    "RateLimited",
    "RecallRefused",
    "RecipientOutcome",
    "RecipientState",
    "Results",
    "Unauthorized",
    "Unavailable",
    "batch_results",
    "encode_payload",
    "error_for",
    "raise_for_envelope",
]
