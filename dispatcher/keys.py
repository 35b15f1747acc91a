"""Every Redis key dispatcher writes, spelled once."""

from __future__ import annotations

PREFIX = "dispatcher"

DEAD_LETTERS = f"{PREFIX}:dead"
"""Sorted set of dead message ids, scored by the time they died."""

STATS = f"{PREFIX}:stats"
"""Hash of counters shared by every process: transitions by state, delivery latency buckets."""

IN_FLIGHT = f"{PREFIX}:inflight"
"""Sorted set of every non-terminal message id, scored by the time (ms) it must have
progressed by: lease end, retry due time plus grace, or queued time plus grace."""

MAX_DEAD_LETTERS = 100_000
"""The dead-letter index is trimmed to this many newest entries."""

REJECTED = f"{PREFIX}:rejected"
"""List of queue messages no status record can hold (undecodable, unknown task, unknown
id), newest first, each a JSON object with the reason; trimmed to ``MAX_REJECTED``."""

MAX_REJECTED = 1000


def message(message_id: str) -> str:
    """Hash holding one message's status record and payload."""
    return f"{PREFIX}:msg:{message_id}"


def history(message_id: str) -> str:
    """List of the message's state changes, oldest first, bounded."""
    return f"{PREFIX}:hist:{message_id}"


def easemob_token(org: str, app: str, client_id: str) -> str:
    """The Easemob app token shared by all workers."""
    return f"{PREFIX}:easemob:token:{org}:{app}:{client_id}"


def easemob_token_lock(org: str, app: str, client_id: str) -> str:
    return f"{PREFIX}:easemob:token-lock:{org}:{app}:{client_id}"


def rate_limit(name: str) -> str:
    """State of one shared rate limiter (GCRA theoretical arrival time)."""
    return f"{PREFIX}:rate:{name}"


def media_cache(bucket: str, key: str) -> str:
    """Short-lived cache of a resolved Qiniu object's metadata."""
    return f"{PREFIX}:media:{bucket}:{key}"


def replay_guard(client: str, nonce: str) -> str:
    """Marks a (client, nonce) pair seen within the signature window."""
    return f"{PREFIX}:nonce:{client}:{nonce}"


CONSOLE_SIGNING_KEY = f"{PREFIX}:console:signing-key"
"""The console's session-signing key when DISPATCHER_CONSOLE_SESSION_SECRET is not set."""

CONSOLE_WORKERS = f"{PREFIX}:console:workers"
"""Hash of Celery worker name -> JSON of its last answer to the console's inspect."""


def console_session(session_id: str) -> str:
    """One signed-in console session (user, CSRF token); expires with the session."""
    return f"{PREFIX}:console:session:{session_id}"


def console_login_link(token_hash: str) -> str:
    """A one-time console login link, by the SHA-256 of its token."""
    return f"{PREFIX}:console:login-link:{token_hash}"


def console_login_failures(who: str) -> str:
    """Failed console sign-ins of one remote address, counted for a few minutes."""
    return f"{PREFIX}:console:login-failures:{who}"
