"""The operator console at ``/console``: find a message, act on dead letters, watch the flow.

``mount_console`` is what the API calls; ``issue_login_link`` makes a one-time
sign-in link (``dispatcher dev`` prints one). See docs/console.md.
"""

from __future__ import annotations

from dispatcher.console.app import CONSOLE_PATH, create_console, mount_console
from dispatcher.console.sessions import dev_banner_line, issue_login_link

__all__ = [
    "CONSOLE_PATH",
    "create_console",
    "dev_banner_line",
    "issue_login_link",
    "mount_console",
]
