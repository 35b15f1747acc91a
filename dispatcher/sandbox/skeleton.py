"""The app every simulator is built on (docs/extending.md, "Adding a simulator").

A simulator is a FastAPI app with its docs under ``/_sandbox/`` (browsing them
leaves the ledger alone), the provider's own error bodies for its errors and
for routing errors, and, installed last so it wraps every route, the ledger and
fault book of :mod:`dispatcher.sandbox.control`. Each simulator module exports
``SIMULATOR``, a :class:`Simulator` naming its default port and how to build
it from the ``DISPATCHER_*`` settings.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.plugins import discover
from dispatcher.sandbox.control import SandboxState, install_control

ErrorAnswer = Callable[[Request, Any], Response]


@dataclass(frozen=True)
class Simulator:
    """A provider simulator as ``dispatcher sandbox`` and dev mode serve it."""

    name: str
    default_port: int
    from_settings: Callable[[Settings], FastAPI]
    optional: bool = False
    """Left out (not an error) when the settings it needs are missing: a channel not every
    installation uses."""


def simulators() -> list[Simulator]:
    """Every simulator module's ``SIMULATOR``, by default port."""
    found = discover("dispatcher.sandbox", "SIMULATOR", Simulator)
    return sorted(found, key=lambda simulator: simulator.default_port)


def simulator_app(
    title: str,
    *,
    version: str,
    errors: dict[type[Exception], ErrorAnswer],
    routing_error: Callable[[Request, StarletteHTTPException], Response],
) -> FastAPI:
    """A simulator's app: ``errors`` answers each of its exception types,
    ``routing_error`` answers unknown paths and methods as the provider would."""
    api = FastAPI(
        title=title,
        version=version,
        docs_url="/_sandbox/docs",
        redoc_url=None,
        openapi_url="/_sandbox/openapi.json",
    )
    for kind, answer in {**errors, StarletteHTTPException: routing_error}.items():
        api.add_exception_handler(kind, answer)
    return api


def record_traffic(api: FastAPI, state: SandboxState | None = None) -> SandboxState:
    """Install the ledger and fault book (``state``: one that masks secrets); call it
    after the last route."""
    state = install_control(api, state)
    api.state.sandbox = state
    return state


def require(settings: Settings, prefix: str, names: Iterable[str], given: dict[str, Any]) -> None:
    """Raise ConfigurationError naming the ``DISPATCHER_<PREFIX>_*`` settings a simulator
    needs that are neither set nor in ``given``."""
    missing = [
        f"DISPATCHER_{prefix.upper()}_{name.upper()}"
        for name in names
        if not given.get(name) and getattr(settings, f"{prefix}_{name}") is None
    ]
    if missing:
        raise ConfigurationError(f"the {prefix.capitalize()} simulator needs {', '.join(missing)}")
