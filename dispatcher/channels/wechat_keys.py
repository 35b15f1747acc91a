"""Every Redis key the WeChat channel writes, spelled once, all under one app's appid."""

from __future__ import annotations

from dataclasses import dataclass

from dispatcher.keys import PREFIX


@dataclass(frozen=True)
class WeChatKeys:
    appid: str

    @property
    def _base(self) -> str:
        return f"{PREFIX}:wechat:{self.appid}"

    @property
    def token(self) -> str:
        """The app's access token, shared by every worker."""
        return f"{self._base}:token"

    @property
    def token_lock(self) -> str:
        """Held by the one worker fetching a token."""
        return f"{self._base}:token-lock"

    def media(self, media_type: str, qiniu_key: str) -> str:
        """The temporary media_id of one Qiniu object, until shortly before it expires."""
        return f"{self._base}:media:{media_type}:{qiniu_key}"

    def media_lock(self, media_type: str, qiniu_key: str) -> str:
        """Held by the one worker uploading that object."""
        return f"{self._base}:media-lock:{media_type}:{qiniu_key}"

    def paused(self, operation: str) -> str:
        """Unix time until which ``operation`` is paused (its daily quota is used up)."""
        return f"{self._base}:paused:{operation}"

    def calls(self, operation: str, day: str) -> str:
        """Calls of ``operation`` made on ``day`` (``YYYYMMDD`` in the quota's time zone)."""
        return f"{self._base}:calls:{operation}:{day}"

    def template_msgid(self, msgid: str) -> str:
        """The getMessageId a template ``msgid`` belongs to (for WeChat's receipts)."""
        return f"{self._base}:msgid:{msgid}"

    @property
    def rate_dimension(self) -> str:
        """Name of the app's calls-per-second budget in the shared rate limiter."""
        return f"wechat:{self.appid}:calls"
