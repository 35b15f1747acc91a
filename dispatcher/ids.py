"""getMessageId and the reference that addresses a message: (namespace, getMessageId).

Generated ids are ``<prefix><uuid4 hex>`` and globally unique; a caller-chosen
id is unique within its namespace (docs/architecture.md, "Message references").
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,64}$")
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9]{1,8}$")
NAMESPACE_PATTERN = re.compile(r"^[A-Za-z0-9._~-]{1,64}$")
"""A namespace is an HTTP client's id (or an in-process producer's configured name): no
``:`` (a reference splits at its last one), no ``{}`` (they delimit the keys' hash tag)."""

DEFAULT_NAMESPACE = "default"
"""The namespace of in-process producers unless DISPATCHER_PRODUCER_NAMESPACE names another."""


def new_message_id(prefix: str) -> str:
    """``<prefix><uuid4 hex>``, e.g. ``m0`` + 32 hex digits."""
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"id prefix must be 1..8 characters [A-Za-z0-9], got {prefix!r}")
    return f"{prefix}{uuid.uuid4().hex}"


@dataclass(frozen=True, slots=True)
class MessageRef:
    """One message: its getMessageId within the namespace of the client that chose it.

    ``member`` (``<namespace>:<id>``) is how the reference travels: in the delivery
    task, in the in-flight index and in the dead letters. An id never holds ``:``,
    so the last one splits it.
    """

    namespace: str
    id: str

    @property
    def member(self) -> str:
        return f"{self.namespace}:{self.id}"

    @classmethod
    def parse(cls, member: str) -> MessageRef:
        """The reference of ``member``; a bare id (a task queued before namespaces) is in
        the default namespace."""
        namespace, _, message_id = member.rpartition(":")
        return cls(namespace or DEFAULT_NAMESPACE, message_id)

    def __str__(self) -> str:
        return self.member
