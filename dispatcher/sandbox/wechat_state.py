"""What the WeChat Official Account simulator remembers, and the rules it applies.

No HTTP here: :mod:`dispatcher.sandbox.wechat` turns a raised :class:`WeChatError`
into WeChat's answer (HTTP 200, ``{"errcode", "errmsg"}``). The rules follow the
facts written down in ``docs/channels.md`` (WeChat section): two token families
(``/cgi-bin/token`` and ``/cgi-bin/stable_token``) with their overlap rules, each
user's 48-hour window and per-trigger counts, daily quotas, per-minute
frequency, temporary media that expire after three days, and template
``client_msg_id`` dedupe.
"""

from __future__ import annotations

import itertools
import re
import secrets
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from dispatcher.sandbox.easemob_state import SlidingWindow
from dispatcher.sandbox.qiniu import probe_amr, probe_image, probe_mp4

Clock = Callable[[], float]

DAY = 86400
BEIJING_OFFSET = 8 * 3600  # WeChat's daily quotas reset at midnight, Beijing time
MEDIA_LIFETIME = 3 * DAY
WINDOW_SECONDS = 48 * 3600
EVENT_TRIGGER_SECONDS = 60
MESSAGE_TRIGGER_COUNT = 5
EVENT_TRIGGER_COUNT = 3
DEDUPE_SECONDS = 600
STABLE_RENEW_BEFORE = 300  # normal mode hands out a new token in the last 5 minutes
FORCE_REFRESH_SPACING = 30
TEXT_MAX_BYTES = 2048
OPENID = re.compile(r"[A-Za-z0-9_-]{28}")
TOKEN_SHAPE = re.compile(r"[A-Za-z0-9_-]{32,512}")
# A \uXXXX escape whose backslash is not itself escaped.
UNICODE_ESCAPE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[0-9a-fA-F]{4}")

ERRMSG: dict[int, str] = {
    -1: "system error",
    40001: "invalid credential, access_token is invalid or not latest",
    40002: "invalid grant_type",
    40003: "invalid openid",
    40004: "invalid media type",
    40005: "invalid file type",
    40007: "invalid media_id",
    40008: "invalid message type",
    40009: "invalid image size",
    40010: "invalid voice size",
    40011: "invalid video size",
    40012: "invalid thumb size",
    40013: "invalid appid",
    40014: "invalid access_token",
    40033: "invalid charset. please check your request, if include \\uxxxx will create fail!",
    40037: "invalid template_id",
    40125: "invalid appsecret",
    41001: "access_token missing",
    41002: "appid missing",
    41004: "appsecret missing",
    41005: "media data missing",
    41006: "media_id missing",
    42001: "access_token expired",
    43001: "require GET method",
    43002: "require POST method",
    43004: "require subscribe",
    43019: "require remove blacklist",
    43101: "user refuse to accept the msg",
    44002: "empty post data",
    44003: "empty news data",
    44004: "empty content",
    45002: "content size out of limit",
    45008: "article size out of limit",
    45009: "reach max api daily quota limit",
    45011: "api minute-quota reach limit  mustslower  retry next minute",
    45015: "response out of time limit or subscription is canceled",
    45047: "out of response count limit",
    47001: "data format error",
    47003: "argument invalid!",
}


class WeChatError(Exception):
    """An ``errcode`` answer; ``detail`` is appended to the standard text when given."""

    def __init__(self, errcode: int, detail: str | None = None) -> None:
        self.errcode = errcode
        self.text = ERRMSG[errcode] + (f" {detail}" if detail else "")
        super().__init__(f"{errcode}: {self.text}")

    def body(self) -> dict[str, Any]:
        # Real answers end in "hint: [...]" and/or "rid: ...": clients must branch on errcode.
        hint = secrets.token_hex(6)
        rid = "-".join(secrets.token_hex(4) for _ in range(3))
        return {"errcode": self.errcode, "errmsg": f"{self.text} hint: [{hint}] rid: {rid}"}


# ---------------------------------------------------------------------------
# Media: the types, formats and limits of /cgi-bin/media/upload

MediaType = Literal["image", "voice", "video", "thumb"]


@dataclass(frozen=True)
class MediaRule:
    extensions: frozenset[str]
    max_bytes: int
    size_errcode: int


MEDIA_RULES: dict[str, MediaRule] = {
    "image": MediaRule(frozenset({"jpg", "jpeg", "png"}), 2 * 1024 * 1024, 40009),
    "voice": MediaRule(frozenset({"amr", "mp3"}), 2 * 1024 * 1024, 40010),
    "video": MediaRule(frozenset({"mp4"}), 10 * 1024 * 1024, 40011),
    "thumb": MediaRule(frozenset({"jpg", "jpeg"}), 64 * 1024, 40012),
}
VOICE_MAX_SECONDS = 60

_MP3_BITRATES = {
    1: (0, 32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    2: (0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_MP3_RATES = {3: (44100, 48000, 32000), 2: (22050, 24000, 16000), 0: (11025, 12000, 8000)}


def mp3_duration(data: bytes) -> float | None:
    """Seconds of MPEG Layer III audio, walking every frame; None if it is not MP3."""
    pos = 0
    if data.startswith(b"ID3") and len(data) >= 10:
        size = data[6] << 21 | data[7] << 14 | data[8] << 7 | data[9]
        pos = 10 + size
    seconds, frames = 0.0, 0
    while pos + 4 <= len(data):
        (header,) = struct.unpack_from(">I", data, pos)
        version, layer = (header >> 19) & 3, (header >> 17) & 3
        bitrate_index, rate_index = (header >> 12) & 15, (header >> 10) & 3
        if header >> 21 != 0x7FF or version == 1 or layer != 1:
            break
        if bitrate_index in (0, 15) or rate_index == 3:
            break
        rate = _MP3_RATES[version][rate_index]
        bitrate = _MP3_BITRATES[1 if version == 3 else 2][bitrate_index] * 1000
        samples = 1152 if version == 3 else 576
        length = samples // 8 * bitrate // rate + ((header >> 9) & 1)
        pos += length
        seconds += samples / rate
        frames += 1
    return seconds if frames else None


def check_media(media_type: str, filename: str, data: bytes) -> None:
    """Raise what WeChat answers for an upload of ``data`` named ``filename`` as ``media_type``."""
    rule = MEDIA_RULES.get(media_type)
    if rule is None:
        raise WeChatError(40004)
    if not data:
        raise WeChatError(41005)
    extension = filename.rsplit(".", 1)[-1].lower() if "." in filename else ""
    if extension not in rule.extensions or not _content_is(extension, data):
        raise WeChatError(40005)
    if len(data) > rule.max_bytes:
        raise WeChatError(rule.size_errcode)
    if media_type == "voice":
        seconds = _voice_seconds(extension, data)
        if seconds is None or seconds > VOICE_MAX_SECONDS:
            raise WeChatError(40010, "(voice over 60 s)" if seconds else None)


def _content_is(extension: str, data: bytes) -> bool:
    if extension in ("jpg", "jpeg", "png"):
        probe = probe_image(data)
        return probe is not None and probe[0] == ("png" if extension == "png" else "jpeg")
    if extension == "amr":
        return probe_amr(data) is not None
    if extension == "mp3":
        return mp3_duration(data) is not None
    return probe_mp4(data) is not None


def _voice_seconds(extension: str, data: bytes) -> float | None:
    if extension == "amr":
        probe = probe_amr(data)
        return probe.duration if probe else None
    return mp3_duration(data)


@dataclass
class Media:
    media_id: str
    media_type: str
    created_at: float
    size: int


# ---------------------------------------------------------------------------
# Users, tokens and counters


class UserState(BaseModel):
    """One follower as the simulator sees them; set through ``/_sandbox/wechat/users``.

    ``window_until``/``remaining`` None means no window or count limit (an openid
    never configured): configured users get WeChat's rules.
    """

    model_config = ConfigDict(extra="forbid")

    subscribed: bool = True
    blacklisted: bool = False
    refuses_templates: bool = False
    window_until: float | None = None
    remaining: int | None = Field(default=None, ge=0)
    receipt_status: Literal["success", "failed:user block", "failed: system failed"] = "success"


class Interaction(BaseModel):
    """A user action that opens the customer-service window."""

    trigger: Literal["message", "click", "follow", "scan"] = "message"


@dataclass
class Token:
    value: str
    family: str
    expires_at: float
    invalid_from: float | None = None


QUOTA_DEFAULTS: dict[str, int] = {
    "token": 2000,
    "stable_token": 500_000,
    "force_refresh": 20,
    "custom_send": 500_000,
    "template_send": 100_000,
    "media_upload": 100_000,
}
MINUTE_DEFAULTS: dict[str, int | None] = {
    "stable_token": 10_000,
    "custom_send": None,
    "template_send": None,
    "media_upload": None,
}


@dataclass
class _Counters:
    day: int = -1
    used: dict[str, int] = field(default_factory=dict)


class WeChatState:
    """Everything one simulated account remembers; safe to use from any thread."""

    def __init__(
        self,
        *,
        appid: str,
        secret: str,
        templates: dict[str, tuple[str, ...]],
        token_ttl: int = 7200,
        token_overlap: float = 300,
        clock: Clock = time.time,
    ) -> None:
        self.appid = appid
        self.secret = secret
        self.templates = templates
        self.token_ttl = token_ttl
        self.token_overlap = token_overlap
        self.clock = clock
        self.quotas = dict(QUOTA_DEFAULTS)
        self._lock = threading.RLock()
        self._tokens: dict[str, Token] = {}
        self._current: dict[str, Token] = {}  # family -> newest token
        self._last_force: float | None = None
        self._users: dict[str, UserState] = {}
        self._media: dict[str, Media] = {}
        self._dedupe: dict[tuple[str, str], tuple[int, float]] = {}
        self._counters = _Counters()
        self._minute: dict[str, SlidingWindow | None] = {}
        self.set_minute_limits(MINUTE_DEFAULTS)
        self._msgids = itertools.count(200_228_332)
        self.stats: dict[str, int] = dict.fromkeys(
            (
                "token_calls",
                "stable_token_calls",
                "tokens_issued",
                "custom_sent",
                "template_sent",
                "uploads",
                "duplicates",
                "receipts_pushed",
                "receipt_failures",
            ),
            0,
        )

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            self.stats[name] = self.stats.get(name, 0) + amount

    # -- quotas ----------------------------------------------------------------

    def set_minute_limits(self, limits: dict[str, int | None]) -> None:
        with self._lock:
            for name, limit in limits.items():
                self._minute[name] = SlidingWindow(limit, 60.0, self.clock) if limit else None

    def usage(self) -> dict[str, dict[str, int]]:
        with self._lock:
            self._roll_day()
            return {
                name: {"limit": limit, "used": self._counters.used.get(name, 0)}
                for name, limit in self.quotas.items()
            }

    def charge(self, name: str) -> None:
        """Count one call against the daily quota ``name`` (45009) and its minute limit (45011)."""
        with self._lock:
            self._roll_day()
            if self._counters.used.get(name, 0) >= self.quotas[name]:
                raise WeChatError(45009)
            window = self._minute.get(name)
            if window is not None and not window.try_acquire():
                raise WeChatError(45011)
            self._counters.used[name] = self._counters.used.get(name, 0) + 1

    def _roll_day(self) -> None:
        day = int((self.clock() + BEIJING_OFFSET) // DAY)
        if day != self._counters.day:
            self._counters = _Counters(day=day)

    # -- tokens ----------------------------------------------------------------

    def check_credentials(self, appid: Any, secret: Any) -> None:
        if not appid:
            raise WeChatError(41002)
        if appid != self.appid:
            raise WeChatError(40013)
        if not secret:
            raise WeChatError(41004)
        if not secrets.compare_digest(str(secret).encode(), self.secret.encode()):
            raise WeChatError(40125)

    def _issue(self, family: str) -> Token:
        token = Token(secrets.token_urlsafe(96), family, self.clock() + self.token_ttl)
        self._tokens[token.value] = token
        self._current[family] = token
        self.stats["tokens_issued"] += 1
        return token

    def classic_token(self) -> tuple[str, int]:
        """``/cgi-bin/token``: a new token each call; the previous one lives on for the overlap."""
        with self._lock:
            previous = self._current.get("token")
            if previous is not None:
                until = min(previous.expires_at, self.clock() + self.token_overlap)
                if previous.invalid_from is None or until < previous.invalid_from:
                    previous.invalid_from = until
            return self._issue("token").value, self.token_ttl

    def stable_token(self, force_refresh: bool) -> tuple[str, int]:
        """``/cgi-bin/stable_token``: the same token until its last 5 minutes, unless forced."""
        with self._lock:
            now = self.clock()
            current = self._current.get("stable")
            usable = current is not None and self._usable(current, now)
            if force_refresh:
                recent = self._last_force is not None and now - self._last_force < (
                    FORCE_REFRESH_SPACING
                )
                if not (recent and usable):  # within 30 s of the last one: no refresh
                    self.charge("force_refresh")
                    self._last_force = now
                    if current is not None:
                        current.invalid_from = now
                    current = self._issue("stable")
            elif not usable or current is None or current.expires_at - now <= STABLE_RENEW_BEFORE:
                current = self._issue("stable")  # the old one stays valid to its own expiry
            assert current is not None
            return current.value, int(current.expires_at - now)

    @staticmethod
    def _usable(token: Token, now: float) -> bool:
        return now < token.expires_at and (token.invalid_from is None or now < token.invalid_from)

    def authenticate(self, value: str | None) -> None:
        if not value:
            raise WeChatError(41001)
        with self._lock:
            token = self._tokens.get(value)
            if token is None:
                raise WeChatError(40001 if TOKEN_SHAPE.fullmatch(value) else 40014)
            now = self.clock()
            if token.invalid_from is not None and now >= token.invalid_from:
                raise WeChatError(40001)
            if now >= token.expires_at:
                raise WeChatError(42001)

    def revoke_tokens(self) -> int:
        """Invalidate every token now, as a force refresh elsewhere would (40001)."""
        with self._lock:
            now = self.clock()
            for token in self._tokens.values():
                token.invalid_from = now
            self._current.clear()
            return len(self._tokens)

    def expire_tokens(self) -> int:
        """Let every token run out now (42001)."""
        with self._lock:
            now = self.clock()
            for token in self._tokens.values():
                token.expires_at = min(token.expires_at, now)
            self._current.clear()
            return len(self._tokens)

    # -- media -----------------------------------------------------------------

    def store_media(self, media_type: str, size: int) -> Media:
        with self._lock:
            media = Media(secrets.token_urlsafe(48), media_type, self.clock(), size)
            self._media[media.media_id] = media
            return media

    def check_media_id(self, media_id: Any, *allowed: str) -> None:
        if not media_id:
            raise WeChatError(41006)
        with self._lock:
            media = self._media.get(str(media_id))
        if media is None or media.media_type not in allowed:
            raise WeChatError(40007)
        if self.clock() >= media.created_at + MEDIA_LIFETIME:
            raise WeChatError(40007)

    def media(self) -> dict[str, dict[str, Any]]:
        """Every media_id uploaded so far, with its type, size and upload time."""
        with self._lock:
            return {
                media.media_id: {
                    "type": media.media_type,
                    "size": media.size,
                    "created_at": media.created_at,
                }
                for media in self._media.values()
            }

    def expire_media(self) -> int:
        with self._lock:
            for media in self._media.values():
                media.created_at -= MEDIA_LIFETIME
            return len(self._media)

    # -- users -----------------------------------------------------------------

    def user(self, openid: str) -> UserState:
        with self._lock:
            return self._users.get(openid, UserState()).model_copy()

    def set_user(self, openid: str, changes: dict[str, Any]) -> UserState:
        with self._lock:
            updated = UserState.model_validate({**self.user(openid).model_dump(), **changes})
            self._users[openid] = updated
            return updated.model_copy()

    def interact(self, openid: str, trigger: str) -> UserState:
        """The user wrote (5 replies within 48 h) or clicked/followed/scanned (3 within 1 min)."""
        now = self.clock()
        if trigger == "message":
            return self.set_user(
                openid, {"window_until": now + WINDOW_SECONDS, "remaining": MESSAGE_TRIGGER_COUNT}
            )
        return self.set_user(
            openid, {"window_until": now + EVENT_TRIGGER_SECONDS, "remaining": EVENT_TRIGGER_COUNT}
        )

    def take_window(self, openid: str) -> None:
        """Admit one customer-service message to ``openid`` or raise 43004/43019/45015/45047."""
        check_openid(openid)
        with self._lock:
            user = self._users.get(openid, UserState())
            if not user.subscribed:
                raise WeChatError(43004)
            if user.blacklisted:
                raise WeChatError(43019)
            if user.window_until is not None and self.clock() >= user.window_until:
                raise WeChatError(45015)
            if user.remaining is not None:
                if user.remaining <= 0:
                    raise WeChatError(45047)
                user.remaining -= 1
                self._users[openid] = user

    def check_template_user(self, openid: str) -> UserState:
        check_openid(openid)
        user = self.user(openid)
        if not user.subscribed:
            raise WeChatError(43004)
        if user.refuses_templates:
            raise WeChatError(43101)
        return user

    # -- template messages -----------------------------------------------------

    def template_msgid(self, openid: str, client_msg_id: str | None) -> tuple[int, bool]:
        """(msgid, duplicate): a repeated ``client_msg_id`` within 10 min gets the first msgid."""
        with self._lock:
            now = self.clock()
            if client_msg_id:
                seen = self._dedupe.get((openid, client_msg_id))
                if seen is not None and now - seen[1] < DEDUPE_SECONDS:
                    self.stats["duplicates"] += 1
                    return seen[0], True
            msgid = next(self._msgids)
            if client_msg_id:
                self._dedupe[(openid, client_msg_id)] = (msgid, now)
                for key in [k for k, v in self._dedupe.items() if now - v[1] >= DEDUPE_SECONDS]:
                    del self._dedupe[key]
            return msgid, False


def check_openid(openid: Any) -> None:
    if not isinstance(openid, str) or not OPENID.fullmatch(openid):
        raise WeChatError(40003)
