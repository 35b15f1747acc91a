"""The background loops every worker runs beside Celery (the reaper, the scheduler, the
webhook pump): one daemon thread each, stopped through one event."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import ClassVar, Self


@dataclass
class BackgroundLoop:
    """``run`` loops until ``_stop`` is set; ``start``/``stop`` own its daemon thread."""

    thread_name: ClassVar[str]
    _stop: threading.Event = field(default_factory=threading.Event, init=False)
    _thread: threading.Thread | None = field(default=None, init=False)

    def run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._thread = threading.Thread(target=self.run, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
