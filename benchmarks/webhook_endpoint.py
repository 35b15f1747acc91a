"""A client's webhook endpoint answering after a fixed delay: ``python -m
benchmarks.webhook_endpoint PORT SECRET DELAY``. A bare ASGI app (the client's server is
not ours: it should cost the shared cores little) that still verifies every request with
standardwebhooks; ``GET /`` answers ``{"verified", "unique", "rejected"}``. A process of
its own, so it never shares a GIL with what is measured."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import uvicorn
from standardwebhooks.webhooks import Webhook, WebhookVerificationError

Scope = MutableMapping[str, Any]
Channel = Callable[..., Awaitable[Any]]


def endpoint(secret: str, delay: float) -> Callable[[Scope, Channel, Channel], Awaitable[None]]:
    hook = Webhook(secret)
    seen: set[str] = set()
    counts = {"verified": 0, "rejected": 0}

    async def app(scope: Scope, receive: Channel, send: Channel) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        if scope["method"] == "GET":
            answer = json.dumps({**counts, "unique": len(seen)}).encode()
            await send({"type": "http.response.start", "status": 200, "headers": []})
            await send({"type": "http.response.body", "body": answer})
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        await asyncio.sleep(delay)
        try:
            hook.verify(body, headers)
        except WebhookVerificationError:
            counts["rejected"] += 1
            status = 400
        else:
            counts["verified"] += 1
            seen.add(headers["webhook-id"])
            status = 204
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    port, secret, delay = int(sys.argv[1]), sys.argv[2], float(sys.argv[3])
    uvicorn.run(
        endpoint(secret, delay), host="127.0.0.1", port=port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
