"""What a WeChat ``errcode`` means for the sender: pure, so every row is unit-tested.

WeChat answers HTTP 200 with ``{"errcode", "errmsg"}``; we branch on the code only
(``errmsg`` carries ``hint:``/``rid:`` suffixes that change on every call). The
table and the reasons behind each row are in ``docs/channels.md`` (WeChat section).
"""

from __future__ import annotations

import math
from datetime import datetime, time, timedelta
from enum import Enum
from zoneinfo import ZoneInfo

import httpx

from dispatcher.errors import ProviderError


class Action(Enum):
    """What the channel does about one answer."""

    DELIVERED = "delivered"
    RETRY = "retry"  # transient on WeChat's side: back off and try again
    REFRESH_TOKEN = "refresh_token"  # refresh the shared token (once) and resend
    REUPLOAD_MEDIA = "reupload_media"  # the media_id expired: upload again (once) and resend
    FREQUENCY = "frequency"  # per-minute limit: retry after the minute
    QUOTA = "quota"  # daily quota: pause the app's sends until the configured time
    WINDOW = "window"  # outside the 48-hour window or over its count: this message only
    RECIPIENT = "recipient"  # bad openid, not subscribed, blocked, refuses: this recipient
    MALFORMED = "malformed"  # our request is wrong: permanent, a bug to fix
    CONFIGURATION = "configuration"  # credentials, permissions, IP whitelist: permanent


TOKEN_ERRORS = frozenset({40001, 40014, 42001})
WINDOW_ERRORS = frozenset({45015, 45047})
_ACTIONS: dict[int, Action] = {
    0: Action.DELIVERED,
    -1: Action.RETRY,
    **dict.fromkeys(TOKEN_ERRORS, Action.REFRESH_TOKEN),
    40007: Action.REUPLOAD_MEDIA,
    45009: Action.QUOTA,
    45011: Action.FREQUENCY,
    **dict.fromkeys(WINDOW_ERRORS, Action.WINDOW),
    **dict.fromkeys((40003, 43004, 43019, 48002, 43101), Action.RECIPIENT),
    **dict.fromkeys(
        (44002, 47001, 47003, 40008, 40033, 40037, *range(45002, 45009), 40004, 40005, 40006),
        Action.MALFORMED,
    ),
    **dict.fromkeys(range(40009, 40013), Action.MALFORMED),
    **dict.fromkeys((48001, 48004, 40164, 40013, 40125, 41001, 41002, 41004), Action.CONFIGURATION),
}


def classify(errcode: int) -> Action:
    """The action for ``errcode``; a code not in the table is treated as transient."""
    return _ACTIONS.get(errcode, Action.RETRY)


MAX_ERRMSG = 200


class WeChatPaused(ProviderError):
    """The app's sends are paused (daily quota) until ``retry_after`` seconds from now.

    A deferral rather than a failure: the delivery loop waits and does not count it
    against the message's attempts.
    """

    defers = True


def error_for(
    errcode: int, errmsg: str, operation: str, *, now: float, resume_at: float | None = None
) -> ProviderError:
    """The DeliveryError for a non-zero ``errcode`` of ``operation`` (e.g. ``custom/send``)."""
    action = classify(errcode)
    if action is Action.DELIVERED:
        raise ValueError("errcode 0 is not an error")
    code = f"wechat_{errcode}"
    said = f"WeChat {operation} answered errcode {errcode}: {errmsg[:MAX_ERRMSG]}"
    if action is Action.QUOTA:
        wait = max((resume_at or now) - now, 1.0)
        message = f"{said}; sends paused for {wait:.0f} s"
        return WeChatPaused(code, message, retryable=True, retry_after=wait)
    if action is Action.FREQUENCY:
        return ProviderError(code, said, retryable=True, retry_after=seconds_to_next_minute(now))
    if action is Action.RETRY:
        return ProviderError(code, said, retryable=True)
    # Token and media errors reach here only when the one refresh/re-upload did not help.
    hint = {
        Action.REFRESH_TOKEN: "a freshly fetched token was refused too: check the appid and "
        "secret, and that no other system force-refreshes this app's token",
        Action.REUPLOAD_MEDIA: "a freshly uploaded media_id was refused too",
        Action.WINDOW: "the customer-service window for this user is closed",
        Action.RECIPIENT: "the recipient cannot receive messages from this account",
        Action.MALFORMED: "WeChat refused the request as malformed",
        Action.CONFIGURATION: "check the WeChat app's appid, secret, permissions and IP whitelist",
    }[action]
    return ProviderError(code, f"{said} ({hint})", retryable=False)


def seconds_to_next_minute(now: float) -> float:
    """WeChat's per-minute limits count calendar minutes: wait for the next one (and a bit)."""
    return math.floor(now / 60 + 1) * 60 - now + 1.0


def next_resume(now: float, resume_time: time, zone: str) -> float:
    """The next ``resume_time`` in ``zone`` after ``now``, as a unix time."""
    tz = ZoneInfo(zone)
    local = datetime.fromtimestamp(now, tz)
    candidate = datetime.combine(local.date(), resume_time, tz)
    if candidate.timestamp() <= now:
        candidate = datetime.combine(local.date() + timedelta(days=1), resume_time, tz)
    return candidate.timestamp()


def day_of(now: float, zone: str) -> str:
    """The quota day ``now`` falls in (WeChat's quotas reset at midnight, Beijing time)."""
    return datetime.fromtimestamp(now, ZoneInfo(zone)).strftime("%Y%m%d")


def transport_error(exc: httpx.HTTPError, operation: str) -> ProviderError:
    """A failed exchange: retryable; ambiguous once the request may have reached WeChat."""
    kind = type(exc).__name__
    if isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout | httpx.PoolTimeout):
        return ProviderError(
            "wechat_unreachable", f"could not reach WeChat for {operation} ({kind})", retryable=True
        )
    return ProviderError(
        "wechat_response_lost",
        f"no answer from WeChat to {operation} after the request was sent ({kind}); "
        "it may have been delivered",
        retryable=True,
        ambiguous=True,
    )


def bad_answer(status: int, operation: str) -> ProviderError:
    """An answer that is not WeChat's JSON (a proxy's error page, a 5xx)."""
    return ProviderError(
        "wechat_bad_answer",
        f"WeChat {operation} answered HTTP {status} without an errcode",
        retryable=True,
        status=status,
    )
