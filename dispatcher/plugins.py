"""Plug-ins found by convention: every module of a package that exports a named object.

Channels (``dispatcher/channels/``, ``CHANNEL``) and simulators
(``dispatcher/sandbox/``, ``SIMULATOR``) register this way, so adding one is
adding its module (docs/extending.md).
"""

from __future__ import annotations

import importlib
import pkgutil
from typing import TypeVar

Plugin = TypeVar("Plugin")


def discover(package: str, name: str, kind: type[Plugin]) -> list[Plugin]:
    """The ``name`` of every module directly in ``package`` that has one of type ``kind``."""
    found: list[Plugin] = []
    for module in pkgutil.iter_modules(importlib.import_module(package).__path__):
        plugin = getattr(importlib.import_module(f"{package}.{module.name}"), name, None)
        if isinstance(plugin, kind):
            found.append(plugin)
    return found
