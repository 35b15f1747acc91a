"""The app's daily quotas, counted in Redis, and the pause a used-up quota causes.

WeChat counts calls per API per day (reset at midnight, Beijing time) and answers
45009 once a quota is used up. We count our own calls too, so the pause starts
before WeChat has to refuse us; either way the API's sends wait until the
configured resume time instead of burning their retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import time as time_of_day

import redis

from dispatcher import keys
from dispatcher.channels.wechat_outcome import WeChatPaused, day_of, next_resume

log = logging.getLogger(__name__)

COUNTER_SECONDS = 2 * 86400  # a day's counter outlives its day, whatever the time zone


class QuotaBook:
    def __init__(
        self,
        client: redis.Redis,
        appid: str,
        *,
        quotas: dict[str, int],
        resume_time: time_of_day,
        zone: str,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.redis = client
        self.appid = appid
        self.quotas = quotas
        self.resume_time = resume_time
        self.zone = zone
        self._clock = clock

    def check(self, operation: str) -> None:
        """Raise WeChatPaused when ``operation`` is paused or its quota for today is used up."""
        now = self._clock()
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(keys.wechat_paused(self.appid, operation))
        pipe.get(keys.wechat_calls(self.appid, operation, day_of(now, self.zone)))
        paused, used = pipe.execute()
        if paused is not None and float(paused) > now:
            raise self._paused(operation, float(paused) - now, "paused")
        limit = self.quotas.get(operation)
        if limit is not None and used is not None and int(used) >= limit:
            resume_at = self.pause(operation)
            raise self._paused(operation, resume_at - now, f"{int(used)} of {limit} calls used")

    def count(self, operation: str) -> None:
        """One call of ``operation`` reached WeChat."""
        key = keys.wechat_calls(self.appid, operation, day_of(self._clock(), self.zone))
        pipe = self.redis.pipeline(transaction=False)
        pipe.incr(key)
        pipe.expire(key, COUNTER_SECONDS)
        pipe.execute()

    def used(self, operation: str) -> int:
        raw = self.redis.get(
            keys.wechat_calls(self.appid, operation, day_of(self._clock(), self.zone))
        )
        return int(raw) if raw is not None else 0

    def pause(self, operation: str) -> float:
        """Pause ``operation`` until the next resume time; returns that unix time."""
        now = self._clock()
        resume_at = next_resume(now, self.resume_time, self.zone)
        self.redis.set(
            keys.wechat_paused(self.appid, operation),
            repr(resume_at),
            px=max(int((resume_at - now) * 1000), 1),
        )
        log.warning(
            "wechat %s paused for app %s until %s (daily quota)",
            operation,
            self.appid,
            time.strftime("%Y-%m-%d %H:%M:%S %z", time.localtime(resume_at)),
        )
        return resume_at

    def resume(self, operation: str) -> None:
        """Lift a pause early (an operator raised the quota)."""
        self.redis.delete(keys.wechat_paused(self.appid, operation))

    def _paused(self, operation: str, wait: float, why: str) -> WeChatPaused:
        return WeChatPaused(
            "wechat_quota_paused",
            f"WeChat {operation} for app {self.appid} is paused for {wait:.0f} s ({why}); "
            "the daily quota resets at midnight, Beijing time",
            retryable=True,
            retry_after=max(wait, 1.0),
        )
