"""Media on Qiniu: the bucket client and the resolution of media messages.

``QiniuClient`` talks to the bucket (stat, avinfo, imageInfo, signed URLs,
uploads); ``resolve_media`` fills a media message's missing fields from it and
checks the limits.
"""

from dispatcher.media.qiniu import (
    AvInfo,
    ImageMeta,
    ObjectStat,
    QiniuClient,
    parse_avinfo,
    parse_image_info,
    qiniu_etag,
)
from dispatcher.media.resolve import needs_resolution, resolve_media

__all__ = [
    "AvInfo",
    "ImageMeta",
    "ObjectStat",
    "QiniuClient",
    "needs_resolution",
    "parse_avinfo",
    "parse_image_info",
    "qiniu_etag",
    "resolve_media",
]
