"""Every Redis key dispatcher writes, spelled once (docs/architecture.md, "Redis keys").

The keys of one message carry one Redis Cluster hash tag, ``{<namespace>:<id>}``,
so every script's keys of that message live in one slot. The shared structures
below (in-flight index, dead letters, stats, rejected trace, rate limiters) are
keys of their own.
"""

from __future__ import annotations

from dispatcher.ids import MessageRef

PREFIX = "dispatcher"

DEAD_LETTERS = f"{PREFIX}:dead"
"""Sorted set of dead message references (``MessageRef.member``), scored by the time they died."""

STATS = f"{PREFIX}:stats"
"""Hash of counters shared by every process: transitions by state, delivery latency buckets."""

IN_FLIGHT = f"{PREFIX}:inflight"
"""Sorted set of every non-terminal message reference not waiting in :data:`SCHEDULE`,
scored by the time (ms) it must have progressed by: lease end, a due retry's promotion
plus grace, or queued time plus grace."""

SCHEDULE = f"{PREFIX}:schedule"
"""Sorted set of message references (``MessageRef.member``) waiting for their time, scored
by the time (ms) they are due to be queued: ``scheduled`` sends and ``retrying`` messages
until their backoff has run out. One key for the whole fleet: on a Redis
Cluster it lives on one node (docs/architecture.md, "Scheduled delivery")."""

BEATS = f"{PREFIX}:beats"
"""Sorted set of the worker processes that take leases, scored by their last heartbeat (ms,
Redis's clock); entries a day old are trimmed at each beat (dispatcher/store/liveness.py)."""

MAX_DEAD_LETTERS = 100_000
"""The dead-letter index is trimmed to this many newest entries."""

REJECTED = f"{PREFIX}:rejected"
"""List of queue messages no status record can hold (undecodable, unknown task, unknown
id), newest first, each a JSON object with the reason; trimmed to ``MAX_REJECTED``."""

MAX_REJECTED = 1000

_TAG_OPEN = f"{PREFIX}:{{"
_RECORD = "}:rec"
_HISTORY = "}:hist"
_RECIPIENTS = "}:rcpt"

MESSAGE_KEY_PARTS = (_TAG_OPEN, _RECORD, _HISTORY)
"""How a script that only learns members (the recovery scan) spells their keys:
``open + member + record`` and ``open + member + history``."""

ALL_RECORDS = f"{_TAG_OPEN}*{_RECORD}"
"""SCAN pattern matching every message's record."""

ALL_HISTORIES = f"{_TAG_OPEN}*{_HISTORY}"
"""SCAN pattern matching every message's history."""


def ref_of_record(key: str) -> MessageRef:
    """The reference whose record :func:`message` names ``key``."""
    return MessageRef.parse(key.removeprefix(_TAG_OPEN).removesuffix(_RECORD))


def message(ref: MessageRef) -> str:
    """Hash holding one message's status record and payload."""
    return f"{_TAG_OPEN}{ref.member}{_RECORD}"


def history(ref: MessageRef) -> str:
    """List of the message's state changes, oldest first, bounded."""
    return f"{_TAG_OPEN}{ref.member}{_HISTORY}"


def recipients(ref: MessageRef) -> str:
    """String of a multi-recipient message's per-recipient outcomes, one fixed-width slot
    per recipient in the order of its ``to`` list (dispatcher/store/recipients.py)."""
    return f"{_TAG_OPEN}{ref.member}{_RECIPIENTS}"


def token(channel: str, *account: str) -> str:
    """A channel's access token for one provider account, shared by all workers."""
    return f"{PREFIX}:{channel}:token:{':'.join(account)}"


def token_lock(channel: str, *account: str) -> str:
    """Held by the one worker fetching :func:`token` anew."""
    return f"{PREFIX}:{channel}:token-lock:{':'.join(account)}"


def token_failed(channel: str, *account: str) -> str:
    """Hash of the last failed fetch of :func:`token` (its count and error), for the
    workers that were waiting for that fetch."""
    return f"{PREFIX}:{channel}:token-failed:{':'.join(account)}"


def wechat_media(appid: str, media_type: str, qiniu_key: str) -> str:
    """The WeChat temporary media_id of one Qiniu object, until shortly before it expires."""
    return f"{PREFIX}:wechat:{appid}:media:{media_type}:{qiniu_key}"


def wechat_media_lock(appid: str, media_type: str, qiniu_key: str) -> str:
    """Held by the one worker uploading that object to WeChat."""
    return f"{PREFIX}:wechat:{appid}:media-lock:{media_type}:{qiniu_key}"


def wechat_paused(appid: str, operation: str) -> str:
    """Unix time until which a WeChat API of the app is paused (its daily quota is used up)."""
    return f"{PREFIX}:wechat:{appid}:paused:{operation}"


def wechat_calls(appid: str, operation: str, day: str) -> str:
    """Calls of a WeChat API made on ``day`` (``YYYYMMDD`` in the quota's time zone)."""
    return f"{PREFIX}:wechat:{appid}:calls:{operation}:{day}"


def wechat_template_msgid(appid: str, msgid: str) -> str:
    """The message reference a template ``msgid`` belongs to (for WeChat's receipts)."""
    return f"{PREFIX}:wechat:{appid}:msgid:{msgid}"


def wechat_rate(appid: str) -> str:
    """Name of the WeChat app's calls-per-second budget in the shared limiter (:func:`rate_limit`)."""
    return f"wechat:{appid}:calls"


def easemob_msgid(msg_id: str) -> str:
    """The message reference an Easemob message id belongs to (one per target), for
    Easemob's callbacks (docs/providers.md)."""
    return f"{PREFIX}:easemob:msgid:{msg_id}"


def easemob_callback(call_id: str) -> str:
    """Marks an Easemob callback seen (Easemob sends a failed one again at once)."""
    return f"{PREFIX}:easemob:call:{call_id}"


EASEMOB_UNKNOWN_CALLBACKS = f"{PREFIX}:easemob:unknown-callbacks"
"""List of verified Easemob callbacks naming a msg_id we do not know, newest first, bounded."""

MAX_UNKNOWN_CALLBACKS = 1000


def rate_limit(name: str, scope: str | None = None) -> str:
    """State of one shared rate limiter (GCRA theoretical arrival time); ``scope``: one
    provider app's budget of that name (a named Easemob app), None: the default app's."""
    if scope is None:
        return f"{PREFIX}:rate:{name}"
    return f"{PREFIX}:rate:{name}:app:{scope}"


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


# Status webhooks (docs/webhooks.md)

WEBHOOK_OUTBOX = f"{PREFIX}:webhooks:outbox"
"""List of events recorded by the script that made the state change, oldest first, each a
JSON object; the webhook pump turns each into one delivery per subscribed endpoint."""

WEBHOOK_DUE = f"{PREFIX}:webhooks:due"
"""Sorted set of delivery members (``<endpoint id>:<webhook id>``) scored by when (ms)
they are due: the next attempt, or the end of a claimed attempt's lease."""

WEBHOOK_PUMP = f"{PREFIX}:webhooks:pump"
"""String naming the worker whose pump holds the lease (it expires unless renewed): one
pump of the fleet works at a time."""

WEBHOOK_DEAD = f"{PREFIX}:webhooks:dead"
"""Sorted set of delivery members whose attempts ran out, scored by when (ms)."""

MAX_WEBHOOK_DEAD = 100_000

WEBHOOK_DELIVERY_OPEN = f"{PREFIX}:webhooks:delivery:"
"""How a script that only learns delivery members spells their keys: open + member."""


def webhook_delivery(member: str) -> str:
    """Hash of one delivery: its endpoint, webhook id, body, attempts, last error."""
    return f"{WEBHOOK_DELIVERY_OPEN}{member}"


def webhook_endpoint(endpoint_id: str) -> str:
    """Hash of one endpoint's health: counts, last error, failing since, disabled."""
    return f"{PREFIX}:webhooks:endpoint:{endpoint_id}"
