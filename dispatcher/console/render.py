"""Server-rendered pages: one Jinja environment, the console's filters, safe response headers."""

from __future__ import annotations

import secrets
from datetime import datetime
from importlib import resources
from typing import Any
from zoneinfo import ZoneInfo

from jinja2 import Environment, PackageLoader, select_autoescape
from markupsafe import Markup
from starlette.responses import HTMLResponse, Response

STATIC_FILES = {
    "console.css": "text/css; charset=utf-8",
    "console.js": "text/javascript; charset=utf-8",
    "live.js": "text/javascript; charset=utf-8",
}
"""Everything under /console/static/, with its media type (nothing else is served)."""


def security_headers(nonce: str | None = None) -> dict[str, str]:
    """No framing, no caching, no third-party anything; inline styles only with a nonce."""
    style = "'self'" + (f" 'nonce-{nonce}'" if nonce else "")
    return {
        "Content-Security-Policy": (
            f"default-src 'none'; script-src 'self'; style-src {style}; img-src 'self' data:; "
            "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
        ),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        # same-origin, not no-referrer: with no-referrer chromium sends "Origin: null" on forms.
        "Referrer-Policy": "same-origin",
        "Cache-Control": "no-store",
    }


def static_file(name: str) -> bytes | None:
    return _read_static(name) if name in STATIC_FILES else None


def _read_static(name: str) -> bytes:
    return resources.files("dispatcher.console").joinpath("static", name).read_bytes()


class Pages:
    """Renders the console's templates with the operator's time zone."""

    def __init__(self, timezone: str) -> None:
        self.zone = ZoneInfo(timezone)
        self.env = Environment(
            loader=PackageLoader("dispatcher.console", "templates"),
            autoescape=select_autoescape(default=True, default_for_string=True),
            trim_blocks=True,
            lstrip_blocks=True,
        )
        self.env.filters["when"] = self.when
        self.env.filters["duration"] = duration
        # The sign-in page inlines the stylesheet (assets need a session); our file, not input.
        self.env.globals["static_css"] = lambda: Markup(_read_static("console.css").decode())

    def when(self, value: datetime | float | None) -> str:
        """A time in the configured zone, to the millisecond."""
        if value is None:
            return ""
        moment = value if isinstance(value, datetime) else datetime.fromtimestamp(value)
        local = moment.astimezone(self.zone)
        return local.strftime("%Y-%m-%d %H:%M:%S.") + f"{local.microsecond // 1000:03d}"

    def page(self, template: str, status: int = 200, **context: Any) -> Response:
        nonce = secrets.token_urlsafe(12)
        html = self.env.get_template(template).render(nonce=nonce, **context)
        return HTMLResponse(html, status_code=status, headers=security_headers(nonce))


def duration(seconds: float | None) -> str:
    """``230 ms``, ``4.2 s``, ``3 min 12 s``, ``2 h 5 min``, ``3 d 4 h``."""
    if seconds is None:
        return ""
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60} min {whole % 60} s"
    if whole < 86400:
        return f"{whole // 3600} h {whole % 3600 // 60} min"
    return f"{whole // 86400} d {whole % 86400 // 3600} h"
