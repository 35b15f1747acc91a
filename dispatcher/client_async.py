"""The asynchronous HTTP client: :class:`AsyncClient`, the methods of
:class:`dispatcher.client.Client`, awaited (import it from :mod:`dispatcher.client`)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from types import TracebackType
from typing import Any, Self

import httpx

from dispatcher.api import paths
from dispatcher.client_base import (
    HEADERS,
    Base,
    Payload,
    Results,
    batch_results,
    raise_for_envelope,
    recipient_page,
    unreachable,
)
from dispatcher.errors import NotFound
from dispatcher.store.recipients import RecipientOutcome


class AsyncClient(Base):
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

    async def recipients(
        self,
        message_id: str,
        state: str | None = None,
        *,
        owner: str | None = None,
        page_size: int | None = None,
    ) -> AsyncIterator[RecipientOutcome]:
        """``async for`` over every recipient (see :meth:`dispatcher.client.Client.recipients`)."""
        cursor: int | None = 0
        while cursor is not None:
            path, params = self._recipients_request(message_id, owner, state, cursor, page_size)
            outcomes, cursor = recipient_page(await self._call("GET", path, params, None))
            for outcome in outcomes:
                yield outcome

    async def _call(
        self, method: str, path: str, params: dict[str, str], body: bytes | None
    ) -> Any:
        try:
            response = await self._http.request(
                method, path, params=params, content=body, headers=HEADERS if body else None
            )
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise unreachable(self.base_url, exc) from None
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
