"""The HTTP API (docs/api.md): signed submit, status lookup, operations endpoints.

``create_app`` and ``run_api`` live in :mod:`dispatcher.api.app`; they are
imported lazily so the signing helpers (used by :mod:`dispatcher.client`)
do not pull FastAPI in.

Modules, one concern each:

- ``paths``     the URL paths (shared with the client)
- ``signing``   canonical string and HMAC (pure; shared with the client)
- ``auth``      who is calling: signature v2 (or a legacy client's v1), timestamp
                window, nonce (docs/security.md)
- ``body``      reading a body: size limit, strict UTF-8 and JSON
- ``admission`` a submit's gate (client rate + nonce guard, checked by the
                script that records it); the replay guard of reads
- ``envelope``  the seed's response envelope and its OpenAPI models
- ``metrics``   Prometheus counters and the Redis-backed collector
- ``routes``    the endpoints, their one dependency (read, authenticate) and the
                error mapping
- ``openapi``   the OpenAPI document (request bodies from the real models)
- ``app``       ``create_app`` (wiring, error handlers) and ``run_api``
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dispatcher.api.app import create_app, run_api

__all__ = ["create_app", "run_api"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from dispatcher.api import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
