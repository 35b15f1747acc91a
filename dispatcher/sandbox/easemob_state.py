"""The Easemob simulator's state: one org/app's credentials, tokens, rate windows, ledger
and fault settings (docs/providers.md, "Easemob"); dispatcher/sandbox/easemob.py serves it
over HTTP."""

from __future__ import annotations

import itertools
import json
import secrets
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from dispatcher.sandbox.easemob_checks import (
    APP_NOT_FOUND,
    GROUPS_PER_CALL,
    REACH_LIMIT,
    ROOMS_PER_CALL,
    SECURITY,
    WEB_APPLICATION,
    EasemobError,
)
from dispatcher.sandbox.easemob_recall import RecallBook

Clock = Callable[[], float]

DEFAULT_TOKEN_TTL = 5_184_000  # 60 days, the 2022+ console default
MAX_TARGET_BYTES = 4 * 64 + 3
"""Room a target id takes in a body: 64 characters of up to 4 UTF-8 bytes, quoted, a comma."""


class SlidingWindow:
    """Admits at most ``limit`` units in any ``window`` seconds; a refusal uses nothing.

    A log of admissions rather than a token bucket: the simulator must refuse
    exactly what the provider's documented "N per second" refuses, with no burst.
    """

    def __init__(self, limit: int, window: float, clock: Clock = time.monotonic) -> None:
        self.limit = limit
        self.window = window
        self._clock = clock
        self._admitted: deque[tuple[float, int]] = deque()
        self._used = 0
        self._lock = threading.Lock()

    def try_acquire(self, units: int = 1) -> bool:
        with self._lock:
            now = self._clock()
            horizon = now - self.window
            while self._admitted and self._admitted[0][0] <= horizon:
                self._used -= self._admitted.popleft()[1]
            if self._used + units > self.limit:
                return False
            self._admitted.append((now, units))
            self._used += units
            return True


# ---------------------------------------------------------------------------
# The simulated app: credentials, tokens, limits, counters.


@dataclass(frozen=True)
class EasemobApp:
    """The simulated app: its credentials and the limits it enforces."""

    org: str
    app: str
    client_id: str
    client_secret: str
    token_ttl: int = DEFAULT_TOKEN_TTL
    calls_per_second: int = 100
    messages_per_minute: int = 6000
    token_calls_per_second: int = 300
    max_body_bytes: int = 5120
    max_users_per_call: int = 600
    recall_window: float = 120.0
    """Seconds after a send it may be recalled (the console's setting: 2 min to 7 days)."""
    recall_enabled: bool = True


class EasemobSimulator:
    """State of one simulated Easemob app. Safe to use from any thread."""

    def __init__(self, config: EasemobApp, clock: Clock = time.monotonic) -> None:
        self.config = config
        self.caps = {
            "users": config.max_users_per_call,
            "chatgroups": GROUPS_PER_CALL,
            "chatrooms": ROOMS_PER_CALL,
        }
        self.appkey = f"{config.org}#{config.app}"
        # Stable across restarts so recorded envelopes stay comparable.
        self.application = str(uuid.uuid5(uuid.NAMESPACE_URL, f"easemob:{config.org}#{config.app}"))
        self._clock = clock
        self._lock = threading.Lock()
        self._tokens: dict[str, float | None] = {}  # token -> expiry on the clock, None = never
        self.call_window = SlidingWindow(config.calls_per_second, 1.0, clock)
        self.token_window = SlidingWindow(config.token_calls_per_second, 1.0, clock)
        self.message_window = SlidingWindow(config.messages_per_minute, 60.0, clock)
        # Snowflake-like: milliseconds shifted left, then a counter: 19 digits, increasing.
        self._ids = itertools.count(int(time.time() * 1000) << 22)
        self.recalls = RecallBook(config.recall_window, config.recall_enabled, clock)
        self.failing: dict[str, str] = {}
        """Targets answered with an error text instead of an id (``/_sandbox/easemob/failing-targets``)."""
        self.deliveries: Counter[str] = Counter()
        """How many times each target was given a message id (answered 200)."""
        self._stats = dict.fromkeys(
            (
                "token_calls",
                "tokens_issued",
                "message_calls",
                "messages_accepted",
                "rate_limited_429",
                "quota_exceeded_403",
            ),
            0,
        )

    # -- tokens --------------------------------------------------------------

    def issue_token(self, ttl: int) -> str:
        token = "YWMt" + secrets.token_urlsafe(48)
        with self._lock:
            self._tokens[token] = None if ttl == 0 else self._clock() + ttl
            self._stats["tokens_issued"] += 1
        return token

    def authenticate(self, authorization: str | None) -> None:
        """Raise the 401 Easemob gives for a missing, expired or unknown bearer token."""
        scheme, _, token = (authorization or "").strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise EasemobError(
                401,
                "unauthorized",
                "Unable to authenticate due to expired access token",
                SECURITY,
            )
        with self._lock:
            known = token in self._tokens
            expiry = self._tokens.get(token)
        if not known:
            raise EasemobError(
                401,
                "auth_bad_access_token",
                "Unable to authenticate due to corrupt access token",
                SECURITY,
            )
        if expiry is not None and self._clock() >= expiry:
            raise EasemobError(
                401,
                "unauthorized",
                "Unable to authenticate due to expired access token",
                SECURITY,
            )

    def expire_tokens(self) -> int:
        """Expire every issued token now, even those issued with ttl 0; returns how many."""
        with self._lock:
            past = self._clock() - 1.0
            for token in self._tokens:
                self._tokens[token] = past
            return len(self._tokens)

    # -- messages ------------------------------------------------------------

    def set_failing(self, targets: dict[str, str]) -> int:
        """Answer these targets with their error text from now on; how many there are."""
        with self._lock:
            self.failing = targets
            return len(targets)

    def delivered_counts(self, *, clear: bool = False) -> dict[str, int]:
        """Message ids given per target (then forgotten, with ``clear``)."""
        with self._lock:
            counts = dict(self.deliveries)
            if clear:
                self.deliveries.clear()
            return counts

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self._stats[name] += amount

    def stats(self) -> dict[str, int]:
        with self._lock:
            return dict(self._stats)

    # -- request checks shared by the handlers ---------------------------------

    def check_app(self, org: str, app: str, path: str) -> None:
        if org != self.config.org or app != self.config.app:
            raise app_not_found(org, app, path)

    def check_size(self, body: bytes, *, targets: int = 0) -> None:
        """The front proxy's cap: the body limit, plus room for ``targets`` recipient ids."""
        if len(body) > self.config.max_body_bytes + targets * MAX_TARGET_BYTES:
            raise _too_large()

    def check_content_size(self, payload: dict[str, Any]) -> None:
        """Easemob's limit on a send: the message and its ext, the target list aside."""
        content = {k: v for k, v in payload.items() if k not in ("target", "to")}
        if len(json.dumps(content, ensure_ascii=False).encode()) > self.config.max_body_bytes:
            raise _too_large()

    def outcomes(self, targets: list[str], reply_ids: bool) -> dict[str, str]:
        """Each target's answer: a new message id (or "success"), or its configured error."""
        data: dict[str, str] = {}
        with self._lock:
            for target in targets:
                refused = self.failing.get(target)
                if refused is not None:
                    data[target] = refused
                    continue
                self.deliveries[target] += 1
                data[target] = str(next(self._ids)) if reply_ids else "success"
        return data

    def admit_call(self, window: SlidingWindow) -> None:
        if not window.try_acquire():
            self.count("rate_limited_429")
            raise EasemobError(
                429, "reach_limit", "This request has reached api limit", REACH_LIMIT
            )


def app_not_found(org: str, app: str, path: str) -> EasemobError:
    """Easemob's answer to a path naming an org/app it does not have."""
    return EasemobError(
        404,
        "organization_application_not_found",
        f"Could not find application for {org}/{app} from URI: {path}",
        APP_NOT_FOUND,
    )


def _too_large() -> EasemobError:
    return EasemobError(
        413, "Request Entity Too Large", "Request Entity Too Large", WEB_APPLICATION
    )
