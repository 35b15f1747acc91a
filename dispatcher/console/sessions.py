"""Console sessions: a signed cookie naming a session kept in Redis, and its CSRF token.

The cookie holds only a random session id, signed (itsdangerous) so a forged or
stale cookie is refused before Redis is asked; the session itself (who, CSRF
token) lives in Redis with the session's lifetime, so logout ends it everywhere
and every API process shares it. The signing key is
``DISPATCHER_CONSOLE_SESSION_SECRET`` or, when that is unset, a random key kept
in Redis (created by the first process that needs it). See docs/console.md.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import secrets
import threading
from dataclasses import dataclass

import redis
from itsdangerous import BadSignature, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from dispatcher import keys
from dispatcher.config import Settings

log = logging.getLogger(__name__)

SESSION_COOKIE = "dispatcher_console"
LOGIN_COOKIE = "dispatcher_console_login"
"""Holds the nonce the sign-in form echoes (CSRF protection of the sign-in itself)."""
LOGIN_FORM_SECONDS = 1800
LOGIN_LINK_SECONDS = 900
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Session:
    """A signed-in operator."""

    session_id: str
    user: str
    """Who signed in, as shown and logged: ``client <id>``, ``console password`` or a link."""
    csrf: str


class SessionStore:
    """Creates, reads and ends console sessions; checks CSRF tokens."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.redis = client
        self.lifetime = settings.console_session_seconds
        configured = settings.console_session_secret
        self._configured_key = configured.get_secret_value() if configured else None
        self._serializer: URLSafeTimedSerializer | None = None
        self._lock = threading.Lock()

    def _signer(self) -> URLSafeTimedSerializer:
        serializer = self._serializer
        if serializer is None:
            with self._lock:
                if self._serializer is None:
                    self._serializer = URLSafeTimedSerializer(self._signing_key(), "console")
                serializer = self._serializer
        return serializer

    def _signing_key(self) -> str:
        if self._configured_key:
            return self._configured_key
        # Every API process must sign alike: the first one to ask leaves a key in Redis.
        self.redis.set(keys.CONSOLE_SIGNING_KEY, secrets.token_urlsafe(32), nx=True)
        stored = self.redis.get(keys.CONSOLE_SIGNING_KEY)
        assert stored is not None
        return stored.decode() if isinstance(stored, bytes) else str(stored)

    # -- sessions ----------------------------------------------------------

    def open(self, user: str) -> tuple[Session, str]:
        """A new session for ``user`` and the cookie value that names it."""
        session = Session(secrets.token_urlsafe(24), user, secrets.token_urlsafe(32))
        record = json.dumps({"user": session.user, "csrf": session.csrf})
        self.redis.set(keys.console_session(session.session_id), record, ex=self.lifetime)
        cookie = self._signer().dumps(session.session_id, salt="session")
        log.info("console: %s signed in", user)
        return session, cookie

    def read(self, request: Request) -> Session | None:
        """The request's session, or None (no cookie, bad signature, expired, logged out)."""
        cookie = request.cookies.get(SESSION_COOKIE)
        if not cookie:
            return None
        try:
            session_id = self._signer().loads(cookie, salt="session", max_age=self.lifetime)
        except BadSignature:
            return None
        if not isinstance(session_id, str):
            return None
        raw = self.redis.get(keys.console_session(session_id))
        if raw is None:
            return None
        record = json.loads(raw)
        return Session(session_id, str(record["user"]), str(record["csrf"]))

    def close(self, session: Session) -> None:
        self.redis.delete(keys.console_session(session.session_id))
        log.info("console: %s signed out", session.user)

    def set_cookie(self, request: Request, response: Response, value: str) -> None:
        response.set_cookie(
            SESSION_COOKIE,
            value,
            max_age=self.lifetime,
            path=console_root(request),
            httponly=True,
            samesite="strict",
            secure=request.url.scheme == "https",
        )

    # -- CSRF ----------------------------------------------------------------

    @staticmethod
    def csrf_ok(request: Request, session: Session, submitted: str | None) -> bool:
        """The action carries the session's token and comes from this site."""
        if not same_origin(request):
            return False
        token = submitted or request.headers.get(CSRF_HEADER) or ""
        return hmac.compare_digest(token.encode(), session.csrf.encode())

    def login_nonce(self) -> tuple[str, str]:
        """A nonce for the sign-in form and the signed cookie that must come back with it."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._signer().dumps(nonce, salt="login")

    def login_nonce_ok(self, request: Request, submitted: str | None) -> bool:
        cookie = request.cookies.get(LOGIN_COOKIE)
        if not cookie or not submitted or not same_origin(request):
            return False
        try:
            nonce = self._signer().loads(cookie, salt="login", max_age=LOGIN_FORM_SECONDS)
        except BadSignature:
            return False
        return isinstance(nonce, str) and hmac.compare_digest(nonce.encode(), submitted.encode())

    # -- one-time links --------------------------------------------------------

    def redeem_link(self, token: str) -> str | None:
        """The user a one-time link was made for; the link is spent either way."""
        raw = self.redis.getdel(keys.console_login_link(_digest(token)))
        if raw is None:
            return None
        return raw.decode() if isinstance(raw, bytes) else str(raw)


def issue_login_link(
    client: redis.Redis,
    base_url: str,
    *,
    user: str = "one-time link",
    ttl: int = LOGIN_LINK_SECONDS,
) -> str:
    """A console URL that signs its first visitor in as ``user``, valid once for ``ttl``
    seconds. Only the token's hash is kept, so Redis never holds a usable link."""
    token = secrets.token_urlsafe(32)
    client.set(keys.console_login_link(_digest(token)), user, ex=ttl)
    return f"{base_url.rstrip('/')}/console/login/once?token={token}"


def dev_banner_line(settings: Settings, base_url: str) -> str:
    """The ``dispatcher dev`` banner's console line: its URL and a fresh one-time link."""
    client = redis.Redis.from_url(settings.redis_url)
    try:
        link = issue_login_link(client, base_url, user="dev (one-time link)")
    finally:
        client.close()
    # The link on a line of its own (aligned under the banner's values): easy to copy.
    return f"Console    {base_url.rstrip('/')}/console  one-time sign-in link:\n{' ' * 13}{link}"


def console_root(request: Request) -> str:
    """The console's path prefix (where the app is mounted)."""
    return request.scope.get("root_path", "").rstrip("/") or "/"


def same_origin(request: Request) -> bool:
    """False when the browser says the request comes from another site."""
    if request.headers.get("sec-fetch-site", "same-origin") not in ("same-origin", "none"):
        return False
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return origin is None
    host = request.headers.get("host", "")
    return origin.split("://", 1)[-1] == host


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()
