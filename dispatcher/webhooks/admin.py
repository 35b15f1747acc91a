"""What operators see and do, shared by the HTTP API and the command line: each
endpoint with its health, the webhook dead letters, replay, enabling an endpoint."""

from __future__ import annotations

from typing import Any

from dispatcher.config import Settings
from dispatcher.webhooks.outbox import WebhookStore

REPLAY_ALL_LIMIT = 10_000

_COUNTS = ("attempts", "successes", "failures", "lastStatus")
_TIMES = ("lastSuccessAt", "lastFailureAt", "failingSince", "disabledAt")


def endpoints(settings: Settings, store: WebhookStore) -> list[dict[str, Any]]:
    """Every configured endpoint (never its secret) with its health."""
    views = []
    for endpoint_id, (client, endpoint) in settings.webhook_subscriptions().endpoints.items():
        health = store.endpoint_health(endpoint_id)
        view: dict[str, Any] = {
            "id": endpoint_id,
            "client": client,
            "url": endpoint.url,
            "description": endpoint.description,
            "events": [e.value for e in endpoint.events],
            "disabled": health.get("disabled"),
            "lastError": health.get("lastError"),
        }
        for name in _COUNTS:
            view[name] = int(health[name]) if name in health else 0
        for name in _TIMES:
            view[name] = int(health[name]) / 1000 if name in health else None
        views.append(view)
    return views


def dead_letters(store: WebhookStore, limit: int, offset: int) -> list[dict[str, Any]]:
    return [letter.summary() for letter in store.dead_letters(limit, offset)]


def replay(store: WebhookStore, members: list[str], replay_all: bool) -> dict[str, Any]:
    """Dead deliveries (``<endpoint>:<webhook id>``) due again now."""
    chosen = list(members)
    if replay_all:
        letters = store.dead_letters(REPLAY_ALL_LIMIT)
        chosen += [f"{d.endpoint_id}:{d.webhook_id}" for d in letters]
    replayed, skipped = [], []
    for member in dict.fromkeys(chosen):
        verdict = store.replay(member)
        if verdict == "ok":
            replayed.append(member)
        else:
            skipped.append({"delivery": member, "reason": verdict})
    return {"replayed": replayed, "skipped": skipped}
