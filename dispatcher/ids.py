"""getMessageId: "shard prefix + uuid without separators" (seed), and caller-supplied ids."""

from __future__ import annotations

import re
import uuid

ID_PATTERN = re.compile(r"^[A-Za-z0-9]{1,64}$")
PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9]{1,8}$")


def new_message_id(prefix: str) -> str:
    """``<prefix><uuid4 hex>``, e.g. ``m0`` + 32 hex digits."""
    if not PREFIX_PATTERN.match(prefix):
        raise ValueError(f"id prefix must be 1..8 characters [A-Za-z0-9], got {prefix!r}")
    return f"{prefix}{uuid.uuid4().hex}"


def is_valid_message_id(value: str) -> bool:
    return bool(ID_PATTERN.match(value))
