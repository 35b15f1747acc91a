"""Fill a media message's missing fields from Qiniu and check the limits (README.md, "Message types").

``resolve_media`` is what a worker calls before building the provider body:

* image: ``fileUrl``, ``fileLength`` (stat), ``imageWidth``/``imageHeight`` (imageInfo);
* voice: ``fileUrl``, ``fileLength`` (stat), ``duration`` (avinfo, rounded up to seconds);
* video: ``fileUrl``, ``fileLength`` (stat), ``duration`` (avinfo) and a thumbnail:
  with ``thumbMessage``, its URL, size (stat) and width/height (imageInfo);
  without, Qiniu's frame grab ``?vframe/jpg/offset/0`` of the video and the
  width/height of the video stream (avinfo).

Values the caller gave are kept, but the limits are always checked on Qiniu's
own figures (stat size, avinfo duration): a caller cannot talk a 30 MiB video
under the limit. Stat/avinfo/imageInfo answers are cached in Redis for a short
while, so one file sent to many receivers costs one lookup.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict
from typing import Any, TypeVar

import redis

from dispatcher import keys
from dispatcher.connections import text
from dispatcher.errors import MediaError
from dispatcher.media.qiniu import AvInfo, ImageMeta, ObjectStat, QiniuClient
from dispatcher.models import (
    IMAGE_MAX_BYTES,
    THUMB_MAX_BYTES,
    VIDEO_MAX_BYTES,
    VOICE_MAX_BYTES,
    VOICE_MAX_SECONDS,
    ImageInfo,
    VideoInfo,
    VoiceInfo,
)

logger = logging.getLogger(__name__)

MediaInfo = TypeVar("MediaInfo", ImageInfo, VoiceInfo, VideoInfo)

DEFAULT_CACHE_TTL = 300
VFRAME_THUMBNAIL = "vframe/jpg/offset/0"
"""Qiniu's frame grab: the first frame of a video as a JPEG, used when no thumbnail is given."""

# Hash fields of keys.media_cache(bucket, key).
_STAT, _AVINFO, _IMAGE = "stat", "avinfo", "imageInfo"


def needs_resolution(info: object) -> bool:
    """True when a media ``messageInfo`` lacks a field that :func:`resolve_media` fills.

    Pure: no I/O. It answers "is this message complete as given?", e.g. for the
    API to know the provider body will still grow by URLs. It does not mean a
    complete message may skip :func:`resolve_media`: the limits are checked
    on Qiniu's figures every time. Non-media infos need nothing (False).
    """
    if isinstance(info, ImageInfo):
        return None in (info.fileUrl, info.fileLength, info.imageWidth, info.imageHeight)
    if isinstance(info, VoiceInfo):
        return None in (info.fileUrl, info.fileLength, info.duration)
    if isinstance(info, VideoInfo):
        fields = [
            info.fileUrl,
            info.fileLength,
            info.duration,
            info.thumbFileUrl,
            info.imageWidth,
            info.imageHeight,
        ]
        if info.thumbMessage is not None:
            fields.append(info.thumbFileLength)  # only a named thumbnail has a size to look up
        return None in fields
    return False


def resolve_media(
    info: MediaInfo,
    client: QiniuClient,
    cache: redis.Redis | None,
    *,
    cache_ttl: int = DEFAULT_CACHE_TTL,
) -> MediaInfo:
    """``info`` with every missing field filled from Qiniu and the limits checked.

    Raises :class:`MediaError`: permanent for a missing key (``media_not_found``),
    a broken limit (``media_too_large``/``media_too_long``) or unreadable media;
    retryable when Qiniu is unavailable.
    """
    lookup = _Lookup(client, cache, cache_ttl)
    if isinstance(info, ImageInfo):
        return _image(info, lookup)
    if isinstance(info, VoiceInfo):
        return _voice(info, lookup)
    if isinstance(info, VideoInfo):
        return _video(info, lookup)
    raise TypeError(f"resolve_media takes ImageInfo, VoiceInfo or VideoInfo, not {type(info)!r}")


def _image(info: ImageInfo, lookup: _Lookup) -> ImageInfo:
    key = info.imageMessage
    stat = lookup.stat(key)
    _check_size("image", key, stat.fsize, IMAGE_MAX_BYTES, "10485760 bytes (10 MiB)")
    update: dict[str, Any] = {
        "fileUrl": info.fileUrl or lookup.client.download_url(key),
        "fileLength": info.fileLength or stat.fsize,
    }
    if info.imageWidth is None or info.imageHeight is None:
        meta = lookup.image_info(key)
        update["imageWidth"] = info.imageWidth or meta.width
        update["imageHeight"] = info.imageHeight or meta.height
    return info.model_copy(update=update)


def _voice(info: VoiceInfo, lookup: _Lookup) -> VoiceInfo:
    key = info.voiceMessage
    stat = lookup.stat(key)
    _check_size("voice", key, stat.fsize, VOICE_MAX_BYTES, "2097152 bytes (2 MiB)")
    seconds = lookup.avinfo(key).duration
    if seconds is None:
        raise MediaError(
            "media_unreadable",
            f"voice {key!r}: Qiniu's avinfo gives no duration, so the 60 s limit cannot be checked",
            retryable=False,
        )
    if seconds > VOICE_MAX_SECONDS:
        raise MediaError(
            "media_too_long",
            f"voice {key!r} lasts {seconds:.2f} s on Qiniu; the limit is {VOICE_MAX_SECONDS} s",
            retryable=False,
        )
    return info.model_copy(
        update={
            "fileUrl": info.fileUrl or lookup.client.download_url(key),
            "fileLength": info.fileLength or stat.fsize,
            # seconds <= 60 here, so rounding up stays within the limit.
            "duration": info.duration if info.duration is not None else math.ceil(seconds),
        }
    )


def _video(info: VideoInfo, lookup: _Lookup) -> VideoInfo:
    key = info.videoMessage
    stat = lookup.stat(key)
    if stat.fsize >= VIDEO_MAX_BYTES:
        raise MediaError(
            "media_too_large",
            f"video {key!r} is {stat.fsize} bytes on Qiniu; "
            "the limit is less than 10485760 bytes (10 MiB)",
            retryable=False,
        )
    client = lookup.client
    update: dict[str, Any] = {
        "fileUrl": info.fileUrl or client.download_url(key),
        "fileLength": info.fileLength or stat.fsize,
    }
    width, height = info.imageWidth, info.imageHeight
    thumb = info.thumbMessage
    if thumb is not None:
        thumb_stat = lookup.stat(thumb)
        _check_size("thumbnail", thumb, thumb_stat.fsize, THUMB_MAX_BYTES, "65536 bytes (64 KiB)")
        update["thumbFileUrl"] = info.thumbFileUrl or client.download_url(thumb)
        update["thumbFileLength"] = info.thumbFileLength or thumb_stat.fsize
        if width is None or height is None:
            meta = lookup.image_info(thumb)
            width, height = width or meta.width, height or meta.height
    else:
        # Easemob needs a thumb URL: Qiniu grabs the first frame of the video.
        update["thumbFileUrl"] = info.thumbFileUrl or client.download_url(key, VFRAME_THUMBNAIL)
    needs_av = info.duration is None or (thumb is None and (width is None or height is None))
    if needs_av:
        av = lookup.avinfo(key)
        if info.duration is None:
            if av.duration is None:
                raise MediaError(
                    "media_unreadable",
                    f"video {key!r}: Qiniu's avinfo gives no duration",
                    retryable=False,
                )
            update["duration"] = math.ceil(av.duration)
        if thumb is None:
            width, height = width or av.width, height or av.height
    if width is None or height is None:
        source = f"thumbnail {thumb!r}" if thumb is not None else f"video {key!r}"
        raise MediaError(
            "media_unreadable",
            f"{source}: Qiniu gives no width and height for the thumbnail",
            retryable=False,
        )
    update["imageWidth"], update["imageHeight"] = width, height
    return info.model_copy(update=update)


def _check_size(kind: str, key: str, fsize: int, limit: int, described: str) -> None:
    if fsize > limit:
        raise MediaError(
            "media_too_large",
            f"{kind} {key!r} is {fsize} bytes on Qiniu; the limit is {described}",
            retryable=False,
        )


_T = TypeVar("_T", ObjectStat, AvInfo, ImageMeta)


class _Lookup:
    """Qiniu answers for one resolution, through the Redis cache.

    Each key's cache hash is read once per resolution (one round trip). A
    Redis failure only costs the cache: the rest of this resolution goes to
    Qiniu directly.
    """

    def __init__(self, client: QiniuClient, cache: redis.Redis | None, ttl: int) -> None:
        self.client = client
        self._cache = cache
        self._ttl = ttl
        self._entries: dict[str, dict[str, str]] = {}

    def stat(self, key: str) -> ObjectStat:
        return self._get(key, _STAT, ObjectStat, self.client.stat)

    def avinfo(self, key: str) -> AvInfo:
        return self._get(key, _AVINFO, AvInfo, self.client.avinfo)

    def image_info(self, key: str) -> ImageMeta:
        return self._get(key, _IMAGE, ImageMeta, self.client.image_info)

    def _get(self, key: str, name: str, kind: type[_T], fetch: Any) -> _T:
        raw = self._entry(key).get(name)
        if raw is not None:
            try:
                return kind(**json.loads(raw))
            except (TypeError, ValueError):
                logger.warning("ignoring a malformed media cache entry for %r", key)
        value: _T = fetch(key)
        self._store(key, name, json.dumps(asdict(value)))
        return value

    def _entry(self, key: str) -> dict[str, str]:
        if key not in self._entries:
            self._entries[key] = {}
            if self._cache is not None:
                try:
                    raw = self._cache.hgetall(keys.media_cache(self.client.bucket, key))
                except redis.RedisError as exc:
                    self._give_up_cache(exc)
                else:
                    self._entries[key] = {text(k): text(v) for k, v in raw.items()}
        return self._entries[key]

    def _store(self, key: str, name: str, value: str) -> None:
        self._entries.setdefault(key, {})[name] = value
        if self._cache is None:
            return
        cache_key = keys.media_cache(self.client.bucket, key)
        try:
            pipe = self._cache.pipeline(transaction=False)
            pipe.hset(cache_key, name, value)
            pipe.expire(cache_key, self._ttl)
            pipe.execute()
        except redis.RedisError as exc:
            self._give_up_cache(exc)

    def _give_up_cache(self, exc: redis.RedisError) -> None:
        # One failure is enough: each further try could cost the client's full retry budget.
        logger.warning("media cache unavailable, asking Qiniu directly: %s", exc)
        self._cache = None
