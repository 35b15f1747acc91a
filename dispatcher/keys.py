"""Every Redis key dispatcher writes, spelled once (docs/architecture.md, "Redis keys").

The store is split into :data:`SHARDS` shards. A message belongs to the shard its member
hashes to (:func:`shard_of`); its keys and the shard's shared structures (in-flight index,
schedule, dead letters, stats, rejected trace, webhook outbox) carry the shard's Redis
Cluster hash tag, so every script that changes a message touches one slot. Fleet-wide
readers (the reaper, the scheduler, dead-letter listings, counters) go through every
shard. The shards' tags are chosen so their slots spread evenly over the 16384 slots:
a cluster whose primaries share the slots evenly shares the shards evenly too.
Rate limiter state and webhook deliveries carry tags of their own.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from functools import cache

from redis.crc import REDIS_CLUSTER_HASH_SLOTS, key_slot

from dispatcher.ids import MessageRef

PREFIX = "dispatcher"

SHARDS = 16
"""Fixed: a message's shard is part of its keys' names, so changing the count would
strand every record written before (docs/deployment.md, "Redis Cluster and RabbitMQ")."""

MAX_DEAD_LETTERS = 100_000
"""Each shard's dead-letter index is trimmed to this many newest entries."""

MAX_REJECTED = 1000
"""Each shard's rejected trace is trimmed to this many newest entries."""

_RECORD = ":rec"
_HISTORY = ":hist"
_RECIPIENTS = ":rcpt"
_INFLIGHT = "inflight"


@dataclass(frozen=True)
class Shard:
    """One shard's keys: all in the slot of its hash tag."""

    index: int
    tag: str

    @property
    def open(self) -> str:
        """What every key of the shard starts with (a message's: ``open + member + close``)."""
        return f"{PREFIX}:{{{self.tag}}}:"

    @property
    def key_parts(self) -> tuple[str, str, str]:
        """How a script that only learns members (the recovery scan, the scheduler) spells
        their keys: ``open + member + record`` and ``open + member + history``."""
        return (self.open, _RECORD, _HISTORY)

    def message(self, member: str) -> str:
        return f"{self.open}{member}{_RECORD}"

    def history(self, member: str) -> str:
        return f"{self.open}{member}{_HISTORY}"

    def recipients(self, member: str) -> str:
        return f"{self.open}{member}{_RECIPIENTS}"

    @property
    def inflight(self) -> str:
        """Sorted set of the shard's non-terminal message references not waiting in
        :attr:`schedule`, scored by the time (ms) each must have progressed by: lease end,
        a due retry's promotion plus grace, or queued time plus grace (a short grace until
        a task published through another broker is confirmed: docs/reliability.md)."""
        return f"{self.open}{_INFLIGHT}"

    @property
    def schedule(self) -> str:
        """Sorted set of message references waiting for their time, scored by the time
        (ms) they are due to be queued: ``scheduled`` sends and ``retrying`` messages."""
        return f"{self.open}schedule"

    @property
    def dead(self) -> str:
        """Sorted set of dead message references, scored by the time they died."""
        return f"{self.open}dead"

    @property
    def stats(self) -> str:
        """Hash of counters (transitions by state, latency buckets); the fleet's counters
        are the sums over the shards."""
        return f"{self.open}stats"

    @property
    def rejected(self) -> str:
        """List of queue messages no status record can hold (undecodable, unknown task,
        unknown id, expired record), newest first, each a JSON object with the reason."""
        return f"{self.open}rejected"

    @property
    def beats(self) -> str:
        """Sorted set of the worker processes that take leases, scored by their last
        heartbeat (ms, Redis's clock); every process beats in every shard, so each shard's
        recovery reads the beats of its own slot (dispatcher/store/liveness.py)."""
        return f"{self.open}beats"

    @property
    def outbox(self) -> str:
        """List of webhook events recorded by the script that made the state change,
        oldest first; the webhook pump turns each into its deliveries."""
        return f"{self.open}webhooks:outbox"


def _tag(index: int) -> str:
    """The first tag ``s<index>.<n>`` whose slot lies in the shard's even share of slots."""
    share = REDIS_CLUSTER_HASH_SLOTS // SHARDS
    n = 0
    while not index * share <= key_slot(f"s{index}.{n}".encode()) < (index + 1) * share:
        n += 1
    return f"s{index}.{n}"


@cache
def shards() -> tuple[Shard, ...]:
    """Every shard, in order."""
    return tuple(Shard(i, _tag(i)) for i in range(SHARDS))


def shard_of(ref: MessageRef | str) -> Shard:
    """The shard of a message (by its reference or its member)."""
    member = ref if isinstance(ref, str) else ref.member
    return shards()[zlib.crc32(member.encode()) % SHARDS]


def counters_shard() -> Shard:
    """Where counters and traces written outside a message's script go (any shard would
    do: readers sum or merge every shard's)."""
    return shards()[0]


PENDING_ENTRY_PARTS = (_RECORD, _HISTORY, _INFLIGHT)
"""How a script spells a :func:`pending_entry`'s keys: ``open + member`` then the record's
and the history's closing, and ``open`` then the shard's in-flight index's name."""

ALL_RECORDS = f"{PREFIX}:{{*}}:*{_RECORD}"
"""SCAN pattern matching every message's record."""

ALL_HISTORIES = f"{PREFIX}:{{*}}:*{_HISTORY}"
"""SCAN pattern matching every message's history."""


def ref_of_record(key: str) -> MessageRef:
    """The reference whose record :func:`message` names ``key``."""
    return MessageRef.parse(key.partition("}:")[2].removesuffix(_RECORD))


def message(ref: MessageRef) -> str:
    """Hash holding one message's status record and payload."""
    return shard_of(ref).message(ref.member)


def history(ref: MessageRef) -> str:
    """List of the message's state changes, oldest first, bounded."""
    return shard_of(ref).history(ref.member)


def recipients(ref: MessageRef) -> str:
    """String of a multi-recipient message's per-recipient outcomes, one fixed-width slot
    per recipient in the order of its ``to`` list (dispatcher/store/recipients.py)."""
    return shard_of(ref).recipients(ref.member)


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


RATE_OPEN = f"{PREFIX}:{{rate}}:"
"""Rate limiter state and the submit gate's replay guards share one tag: a limiter's
dimensions, and a client's rate with its nonce's guard, are checked in one script."""


def rate_limit(name: str, scope: str | None = None) -> str:
    """State of one shared rate limiter (GCRA theoretical arrival time); ``scope``: one
    provider app's budget of that name (a named Easemob app), None: the default app's."""
    if scope is None:
        return f"{RATE_OPEN}{name}"
    return f"{RATE_OPEN}{name}:app:{scope}"


def media_cache(bucket: str, key: str) -> str:
    """Short-lived cache of a resolved Qiniu object's metadata."""
    return f"{PREFIX}:media:{bucket}:{key}"


def replay_guard(client: str, nonce: str) -> str:
    """Marks a (client, nonce) pair seen within the signature window."""
    return f"{RATE_OPEN}nonce:{client}:{nonce}"


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

# Each shard has its outbox (Shard.outbox); the deliveries share one tag.
_WEBHOOKS = f"{PREFIX}:{{webhooks}}:"

WEBHOOK_DUE = f"{_WEBHOOKS}due"
"""Sorted set of delivery members (``<endpoint id>:<webhook id>``) scored by when (ms)
they are due: the next attempt, or the end of a claimed attempt's lease."""

WEBHOOK_PUMP = f"{_WEBHOOKS}pump"
"""String naming the worker whose pump holds the lease (it expires unless renewed): one
pump of the fleet works at a time."""

WEBHOOK_DEAD = f"{_WEBHOOKS}dead"
"""Sorted set of delivery members whose attempts ran out, scored by when (ms)."""

MAX_WEBHOOK_DEAD = 100_000

WEBHOOK_TAKEN_OPEN = f"{_WEBHOOKS}taken:"
"""``open + webhook id``: marks an outbox event fanned out (for a while), so a second
fan-out of it creates nothing."""

WEBHOOK_DELIVERY_OPEN = f"{_WEBHOOKS}delivery:"
"""How a script that only learns delivery members spells their keys: open + member."""


def webhook_delivery(member: str) -> str:
    """Hash of one delivery: its endpoint, webhook id, body, attempts, last error."""
    return f"{WEBHOOK_DELIVERY_OPEN}{member}"


def webhook_endpoint(endpoint_id: str) -> str:
    """Hash of one endpoint's health: counts, last error, failing since, disabled."""
    return f"{_WEBHOOKS}endpoint:{endpoint_id}"


# The doorbell (docs/architecture.md, "The doorbell")

DEFAULT_LANE = "default"
"""The one lane of each delivery queue today; lanes (per priority, per client) share the
queue's ring task and each has its own pending list and flag."""


def pending(queue: str, lane: str = DEFAULT_LANE) -> str:
    """List of messages waiting for a worker in one lane of ``queue``, pushed on the left,
    drained from the right: entries (:func:`pending_entry`) name the message's shard, as
    the lane's messages are in every shard."""
    return f"{PREFIX}:pending:{queue}:{lane}"


def ring_flag(queue: str, lane: str = DEFAULT_LANE) -> str:
    """Set (with a short expiry) while a ring of the lane is outstanding: a ring task that
    will drain :func:`pending` is queued or running."""
    return f"{PREFIX}:ring:{queue}:{lane}"


def pending_entry(ref: MessageRef, task_id: str | None = None) -> str:
    """A message's entry on a :func:`pending` list: its shard's key opening and its member
    (``dispatcher:{s3.7}:<member>``), then `` <task id>`` when a task id goes with it. A
    drain spells the message's keys and its shard's in-flight index from the entry alone
    (``open + member + record``, ``open + inflight``: :data:`PENDING_ENTRY_PARTS`)."""
    entry = shard_of(ref).open + ref.member
    return entry if task_id is None else f"{entry} {task_id}"


def ref_of_entry(entry: str) -> MessageRef:
    """The message a :func:`pending_entry` names."""
    return MessageRef.parse(entry.partition("}:")[2].split(" ", 1)[0])
