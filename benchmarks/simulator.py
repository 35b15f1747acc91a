"""The Easemob simulator alone, in the foreground: ``python -m benchmarks.simulator PORT``.

Settings (credentials, ``calls_per_second``) come from ``DISPATCHER_*``; the
benchmark runs this as a process of its own so the simulator never shares a
GIL with what is measured.
"""

from __future__ import annotations

import sys

import uvicorn

from dispatcher.config import Settings
from dispatcher.sandbox.easemob import create_easemob_app_from_settings


def main() -> None:
    port = int(sys.argv[1])
    app = create_easemob_app_from_settings(Settings())
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
