"""Counts per lane, a lane being one (provider app, client, priority): accepted, ended,
delivered, and the wait from submit to the first attempt (docs/operations.md, "Metrics").

Counted in memory where they happen (the producer at accept, the worker at the lease
and the outcome, the withdrawal at a cancel) and added to the shared stats hash by a
:class:`~dispatcher.store.durations.StatsBuffer` timer, so they cost the submit and the
delivery path no Redis call. Fields: ``lane:<app>|<client>|<priority>:<name>``. Apps and
clients are configured names (``-`` for none), priorities three: the label sets of
``/metrics`` stay bounded.
"""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.store.durations import histogram_increments

LANE_PREFIX = "lane:"
NONE = "-"
"""The app of a channel that records none, or the client of an in-process producer."""
WAIT_BUCKETS_MS = (100, 250, 500, 1000, 2000, 5000, 10000, 30000, 60000, 300000, 1800000)
"""Upper bounds of the submit-to-first-attempt histogram, in milliseconds."""
WAIT = "wait:"


@dataclass(frozen=True, slots=True)
class Lane:
    app: str
    client: str
    priority: str

    @classmethod
    def of(cls, app: str | None, client: str | None, priority: str) -> Lane:
        return cls(app or NONE, client or NONE, priority)

    @property
    def prefix(self) -> str:
        return f"{LANE_PREFIX}{self.app}|{self.client}|{self.priority}:"

    def count(self, *names: str) -> dict[str, int]:
        """Increments of one each of ``names`` (``accepted``, ``ended``, ``delivered``)."""
        return {self.prefix + name: 1 for name in names}

    def waited(self, seconds: float) -> dict[str, int]:
        """Increments of one first attempt after ``seconds`` of waiting."""
        ms = max(0, round(seconds * 1000))
        return histogram_increments(self.prefix + WAIT, ms, WAIT_BUCKETS_MS)


def parse_field(field: str) -> tuple[Lane, str] | None:
    """The lane and the rest (``accepted``, ``wait:le:100``, ...) of a stats field."""
    if not field.startswith(LANE_PREFIX):
        return None
    lane, _, name = field.removeprefix(LANE_PREFIX).partition(":")
    parts = lane.split("|")
    if len(parts) != 3 or not name:
        return None
    return Lane(*parts), name
