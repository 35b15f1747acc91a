"""The Easemob simulator alone, in the foreground: ``python -m benchmarks.simulator PORT``.

Settings (credentials, ``calls_per_second``) come from ``DISPATCHER_*``; the
benchmark runs this as a process of its own so the simulator never shares a
GIL with what is measured.
"""

from __future__ import annotations

import gc
import sys

import uvicorn

from dispatcher.config import Settings
from dispatcher.sandbox.easemob import create_easemob_app_from_settings


def main() -> None:
    port = int(sys.argv[1])
    app = create_easemob_app_from_settings(Settings())
    # The simulator stamps each call's arrival for its rate window when its event loop gets
    # to it: a full collection of the start-up heap (~60 ms here) delays a handful of calls
    # and stamps them together, a burst the real provider's edge would never see. Keep the
    # start-up objects out of the collector so the instrument's pauses stay short.
    gc.freeze()
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
