"""resolve_media against the Qiniu simulator over loopback HTTP, with fakeredis as the cache."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import fakeredis
import httpx
import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from dispatcher import keys
from dispatcher.errors import MediaError
from dispatcher.media.qiniu import QiniuClient
from dispatcher.media.resolve import needs_resolution, resolve_media
from dispatcher.models import ImageInfo, TextInfo, VideoInfo, VoiceInfo
from dispatcher.sandbox.qiniu import QiniuSimulator, create_qiniu_app, seed_demo_objects
from dispatcher.sandbox.server import ServerThread

AK, SK, BUCKET = "resolve-access-key", "resolve-secret-key", "resolve-bucket"
MiB, KiB = 1024 * 1024, 1024
DEMO_JPG_BYTES, DEMO_MP4_BYTES = 229, 2882


@dataclass
class Bucket:
    """One simulator (public or private) and a client configured for it."""

    url: str
    sim: QiniuSimulator
    client: QiniuClient
    http: httpx.Client

    def place(self, key: str, **meta: Any) -> None:
        """An object known by metadata only (``fsize``, ``mimeType``, ``duration``, ``width``...)."""
        self.http.put(f"{self.url}/_sandbox/objects/{key}", json=meta).raise_for_status()

    def ledger(self) -> list[dict[str, Any]]:
        return self.http.get(f"{self.url}/_sandbox/requests").json()

    def qiniu_calls(self) -> list[str]:
        """The Qiniu calls received, oldest first: ``stat`` or ``<fop> <path>``."""
        return [
            "stat" if e["path"].startswith("/stat/") else f"{e['query'].split('&')[0]} {e['path']}"
            for e in self.ledger()
        ]

    def fault(self, **rule: Any) -> None:
        self.http.post(f"{self.url}/_sandbox/faults", json=rule).raise_for_status()

    def reset(self) -> Bucket:
        for path in ("faults", "objects"):
            self.http.delete(f"{self.url}/_sandbox/{path}").raise_for_status()
        seed_demo_objects(self.sim)
        self.http.delete(f"{self.url}/_sandbox/requests").raise_for_status()
        return self


def _serve(private: bool) -> Iterator[Bucket]:
    app = create_qiniu_app(access_key=AK, secret_key=SK, bucket=BUCKET, private=private)
    with ServerThread(app) as server, httpx.Client() as http:
        # One port plays the upload host, the RS host and the download domain.
        client = QiniuClient(
            access_key=AK,
            secret_key=SK,
            bucket=BUCKET,
            domain=server.url,
            private=private,
            up_host=server.url,
            rs_host=server.url,
            timeout=1.0,
        )
        with client:
            yield Bucket(server.url, app.state.qiniu, client, http)


@pytest.fixture(scope="module")
def public_server() -> Iterator[Bucket]:
    yield from _serve(private=False)


@pytest.fixture(scope="module")
def private_server() -> Iterator[Bucket]:
    yield from _serve(private=True)


@pytest.fixture()
def bucket(public_server: Bucket) -> Bucket:
    """The public bucket holding only the demo files (demo.mp4: 5 s 320x240; demo.jpg: 160x120)."""
    return public_server.reset()


@pytest.fixture()
def private_bucket(private_server: Bucket) -> Bucket:
    return private_server.reset()


@pytest.fixture()
def cache() -> redis.Redis:
    return fakeredis.FakeRedis()


# -- filling missing fields -------------------------------------------------------------


def test_image_with_a_key_only_gets_url_size_and_dimensions(bucket: Bucket) -> None:
    info = resolve_media(ImageInfo(imageMessage="demo.jpg"), bucket.client, None)

    assert info.fileUrl == f"{bucket.url}/demo.jpg"
    assert (info.fileLength, info.imageWidth, info.imageHeight) == (DEMO_JPG_BYTES, 160, 120)
    assert bucket.qiniu_calls() == ["stat", "imageInfo /demo.jpg"]


def test_voice_with_a_key_only_gets_url_size_and_duration_rounded_up(bucket: Bucket) -> None:
    bucket.place("hello.amr", fsize=5000, mimeType="audio/amr", duration=3.2)

    info = resolve_media(VoiceInfo(voiceMessage="hello.amr"), bucket.client, None)

    assert (info.fileUrl, info.fileLength, info.duration) == (f"{bucket.url}/hello.amr", 5000, 4)


def test_voice_duration_is_read_from_real_amr_frames(bucket: Bucket) -> None:
    info = resolve_media(VoiceInfo(voiceMessage="demo.amr"), bucket.client, None)

    assert info.duration == 2  # 100 frames of 20 ms


def test_video_with_a_key_only_gets_a_frame_grab_thumbnail_and_the_stream_size(
    bucket: Bucket,
) -> None:
    info = resolve_media(VideoInfo(videoMessage="demo.mp4"), bucket.client, None)

    assert info.fileUrl == f"{bucket.url}/demo.mp4"
    assert (info.fileLength, info.duration) == (DEMO_MP4_BYTES, 5)
    assert info.thumbFileUrl == f"{bucket.url}/demo.mp4?vframe/jpg/offset/0"
    assert (info.imageWidth, info.imageHeight) == (320, 240)  # from the mp4's tkhd
    assert info.thumbFileLength is None  # a frame grab has no stored size
    thumb = bucket.http.get(info.thumbFileUrl)
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    assert thumb.content.startswith(b"\xff\xd8")


def test_video_with_a_thumbnail_key_takes_size_and_dimensions_from_the_thumbnail(
    bucket: Bucket,
) -> None:
    bucket.place(
        "clip.mp4", fsize=3 * MiB, mimeType="video/mp4", duration=12.5, width=1280, height=720
    )

    info = resolve_media(
        VideoInfo(videoMessage="clip.mp4", thumbMessage="demo.jpg"), bucket.client, None
    )

    assert (info.fileUrl, info.fileLength, info.duration) == (f"{bucket.url}/clip.mp4", 3 * MiB, 13)
    assert (info.thumbFileUrl, info.thumbFileLength) == (f"{bucket.url}/demo.jpg", DEMO_JPG_BYTES)
    assert (info.imageWidth, info.imageHeight) == (160, 120)  # the thumbnail's, not the video's
    assert "imageInfo /demo.jpg" in bucket.qiniu_calls()


def test_caller_values_are_kept_and_only_the_limit_lookups_are_made(bucket: Bucket) -> None:
    given = VideoInfo.model_validate(
        {
            "videoMessage": "demo.mp4",
            "thumbMessage": "demo.jpg",
            "title": "t",
            "fileUrl": f"{bucket.url}/demo.mp4?v=2",
            "fileLength": 1234,
            "duration": 7,
            "thumbFileUrl": f"{bucket.url}/demo.jpg?v=2",
            "thumbFileLength": 99,
            "imageWidth": 640,
            "imageHeight": 480,
        },
        context={"media_domain": bucket.url},
    )

    info = resolve_media(given, bucket.client, None)

    assert info == given
    assert bucket.qiniu_calls() == ["stat", "stat"]  # sizes for the limits, nothing else


def test_caller_image_and_voice_values_are_kept(bucket: Bucket) -> None:
    bucket.place("v.mp3", fsize=1000, mimeType="audio/mpeg", duration=59.0)
    image = ImageInfo(imageMessage="demo.jpg", fileLength=1, imageWidth=7, imageHeight=9)
    voice = VoiceInfo.model_validate(
        {"voiceMessage": "v.mp3", "fileUrl": f"{bucket.url}/v.mp3", "duration": 30},
        context={"media_domain": bucket.url},
    )

    resolved_image = resolve_media(image, bucket.client, None)
    resolved_voice = resolve_media(voice, bucket.client, None)

    assert (resolved_image.fileLength, resolved_image.imageWidth, resolved_image.imageHeight) == (
        1,
        7,
        9,
    )
    assert resolved_image.fileUrl == f"{bucket.url}/demo.jpg"
    assert (resolved_voice.fileUrl, resolved_voice.duration) == (f"{bucket.url}/v.mp3", 30)
    assert resolved_voice.fileLength == 1000
    assert "imageInfo /demo.jpg" not in bucket.qiniu_calls()


# -- limits, always on Qiniu's figures ----------------------------------------------------------


@pytest.mark.parametrize(
    ("info", "meta", "code", "needles"),
    [
        (
            VideoInfo(videoMessage="big.mp4"),
            {"fsize": 10 * MiB, "mimeType": "video/mp4", "duration": 5},
            "media_too_large",
            ["'big.mp4'", "10485760 bytes", "less than 10485760"],
        ),
        (
            ImageInfo(imageMessage="big.png"),
            {"fsize": 10 * MiB + 1, "mimeType": "image/png", "width": 10, "height": 10},
            "media_too_large",
            ["'big.png'", "10485761 bytes", "10485760 bytes (10 MiB)"],
        ),
        (
            VoiceInfo(voiceMessage="big.amr"),
            {"fsize": 2 * MiB + 1, "mimeType": "audio/amr", "duration": 5},
            "media_too_large",
            ["'big.amr'", "2097153 bytes", "2097152 bytes (2 MiB)"],
        ),
        (
            VoiceInfo(voiceMessage="long.amr", duration=10),
            {"fsize": 1000, "mimeType": "audio/amr", "duration": 60.4},
            "media_too_long",
            ["'long.amr'", "60.40 s", "the limit is 60 s"],
        ),
    ],
    ids=["video-10MiB", "image-over-10MiB", "voice-over-2MiB", "voice-over-60s"],
)
def test_a_broken_limit_is_a_permanent_error_naming_key_and_limit(
    bucket: Bucket, info: Any, meta: dict[str, Any], code: str, needles: list[str]
) -> None:
    key = next(v for k, v in info.model_dump().items() if k.endswith("Message"))
    bucket.place(key, **meta)

    with pytest.raises(MediaError) as broken:
        resolve_media(info, bucket.client, None)

    assert (broken.value.code, broken.value.retryable) == (code, False)
    for needle in needles:
        assert needle in broken.value.message


def test_thumbnail_over_64_kib_is_refused_and_exactly_64_kib_is_accepted(bucket: Bucket) -> None:
    bucket.place("thumb-big.jpg", fsize=64 * KiB + 1, mimeType="image/jpeg", width=10, height=10)
    bucket.place("thumb-ok.jpg", fsize=64 * KiB, mimeType="image/jpeg", width=10, height=10)

    with pytest.raises(MediaError) as broken:
        resolve_media(
            VideoInfo(videoMessage="demo.mp4", thumbMessage="thumb-big.jpg"), bucket.client, None
        )
    ok = resolve_media(
        VideoInfo(videoMessage="demo.mp4", thumbMessage="thumb-ok.jpg"), bucket.client, None
    )

    assert (broken.value.code, broken.value.retryable) == ("media_too_large", False)
    assert "thumbnail 'thumb-big.jpg'" in broken.value.message
    assert "65536 bytes (64 KiB)" in broken.value.message
    assert ok.thumbFileLength == 64 * KiB


def test_limits_at_the_boundary_pass(bucket: Bucket) -> None:
    bucket.place(
        "edge.mp4", fsize=10 * MiB - 1, mimeType="video/mp4", duration=1, width=2, height=2
    )
    bucket.place("edge.amr", fsize=2 * MiB, mimeType="audio/amr", duration=60.0)

    video = resolve_media(VideoInfo(videoMessage="edge.mp4"), bucket.client, None)
    voice = resolve_media(VoiceInfo(voiceMessage="edge.amr"), bucket.client, None)

    assert video.fileLength == 10 * MiB - 1
    assert (voice.fileLength, voice.duration) == (2 * MiB, 60)


def test_a_small_caller_file_length_does_not_hide_qiniu_size(bucket: Bucket) -> None:
    bucket.place("huge.mp4", fsize=30 * MiB, mimeType="video/mp4", duration=5)

    with pytest.raises(MediaError) as broken:
        resolve_media(VideoInfo(videoMessage="huge.mp4", fileLength=1000), bucket.client, None)

    assert broken.value.code == "media_too_large" and str(30 * MiB) in broken.value.message


def test_a_short_caller_duration_does_not_hide_qiniu_duration(bucket: Bucket) -> None:
    bucket.place("talk.amr", fsize=1000, mimeType="audio/amr", duration=95)

    with pytest.raises(MediaError) as broken:
        resolve_media(VoiceInfo(voiceMessage="talk.amr", duration=5), bucket.client, None)

    assert broken.value.code == "media_too_long"


# -- failures -----------------------------------------------------------------------------


def test_missing_key_is_a_permanent_media_not_found_naming_key_and_bucket(bucket: Bucket) -> None:
    with pytest.raises(MediaError) as missing:
        resolve_media(ImageInfo(imageMessage="nowhere.jpg"), bucket.client, None)

    assert (missing.value.code, missing.value.retryable, missing.value.status) == (
        "media_not_found",
        False,
        612,
    )
    assert "'nowhere.jpg' not found in bucket 'resolve-bucket'" in missing.value.message


def test_missing_thumbnail_key_is_media_not_found(bucket: Bucket) -> None:
    with pytest.raises(MediaError) as missing:
        resolve_media(
            VideoInfo(videoMessage="demo.mp4", thumbMessage="gone.jpg"), bucket.client, None
        )

    assert missing.value.code == "media_not_found" and "'gone.jpg'" in missing.value.message


@pytest.mark.parametrize("path", ["^/stat/", "^/demo.mp4$"], ids=["stat", "avinfo"])
def test_a_qiniu_503_is_a_retryable_media_error(bucket: Bucket, path: str) -> None:
    bucket.fault(path=path, status=503, body={"error": "service unavailable"})

    with pytest.raises(MediaError) as unavailable:
        resolve_media(VideoInfo(videoMessage="demo.mp4"), bucket.client, None)

    assert (unavailable.value.retryable, unavailable.value.status) == (True, 503)
    assert unavailable.value.code == "qiniu_unavailable"


def test_an_avinfo_timeout_is_retryable(bucket: Bucket) -> None:
    bucket.fault(path="^/demo.amr$", latency=1.5, times=1)  # client timeout is 1 s

    with pytest.raises(MediaError) as slow:
        resolve_media(VoiceInfo(voiceMessage="demo.amr"), bucket.client, None)

    assert (slow.value.code, slow.value.retryable) == ("qiniu_timeout", True)


def test_media_qiniu_cannot_read_is_a_permanent_error(bucket: Bucket) -> None:
    bucket.place("noise.amr", fsize=100, mimeType="application/octet-stream")

    with pytest.raises(MediaError) as unreadable:
        resolve_media(VoiceInfo(voiceMessage="noise.amr"), bucket.client, None)

    assert (unreadable.value.code, unreadable.value.retryable) == ("media_unreadable", False)
    assert "'noise.amr'" in unreadable.value.message


# -- cache --------------------------------------------------------------------------------


def test_a_cache_hit_makes_no_second_http_call(bucket: Bucket, cache: redis.Redis) -> None:
    first = resolve_media(VideoInfo(videoMessage="demo.mp4"), bucket.client, cache)
    calls_after_first = bucket.qiniu_calls()

    second = resolve_media(VideoInfo(videoMessage="demo.mp4"), bucket.client, cache)

    assert calls_after_first == ["stat", "avinfo /demo.mp4"]
    assert bucket.qiniu_calls() == calls_after_first  # nothing new reached Qiniu
    assert second == first


def test_the_cache_is_shared_by_clients_and_expires_with_the_ttl(
    bucket: Bucket, cache: redis.Redis
) -> None:
    resolve_media(ImageInfo(imageMessage="demo.jpg"), bucket.client, cache, cache_ttl=120)
    other_worker = QiniuClient(
        access_key=AK, secret_key=SK, bucket=BUCKET, domain=bucket.url, rs_host=bucket.url
    )

    with other_worker:
        again = resolve_media(ImageInfo(imageMessage="demo.jpg"), other_worker, cache)

    cache_key = keys.media_cache(BUCKET, "demo.jpg")
    assert set(cache.hkeys(cache_key)) == {b"stat", b"imageInfo"}
    assert 0 < cache.ttl(cache_key) <= 120
    assert again.imageWidth == 160
    assert bucket.qiniu_calls() == ["stat", "imageInfo /demo.jpg"]


def test_without_a_cache_every_resolution_asks_qiniu(bucket: Bucket) -> None:
    for _ in range(2):
        resolve_media(ImageInfo(imageMessage="demo.jpg"), bucket.client, None)

    assert bucket.qiniu_calls() == ["stat", "imageInfo /demo.jpg"] * 2


def test_an_unreachable_cache_falls_back_to_qiniu(bucket: Bucket) -> None:
    down = redis.Redis(host="127.0.0.1", port=1, retry=Retry(NoBackoff(), 0))
    reads: list[str] = []
    original = down.hgetall

    def counted_hgetall(name: str) -> Any:
        reads.append(name)
        return original(name)

    down.hgetall = counted_hgetall  # type: ignore[method-assign,assignment]

    info = resolve_media(
        VideoInfo(videoMessage="demo.mp4", thumbMessage="demo.jpg"), bucket.client, down
    )

    assert (info.imageWidth, info.thumbFileLength) == (160, DEMO_JPG_BYTES)
    assert len(reads) == 1  # after the first failure the cache is left alone


def test_a_missing_key_is_not_cached(bucket: Bucket, cache: redis.Redis) -> None:
    with pytest.raises(MediaError):
        resolve_media(ImageInfo(imageMessage="later.jpg"), bucket.client, cache)
    bucket.sim.put_bytes("later.jpg", (bucket.sim.get("demo.jpg").data or b""), "image/jpeg")  # type: ignore[union-attr]

    info = resolve_media(ImageInfo(imageMessage="later.jpg"), bucket.client, cache)

    assert info.fileLength == DEMO_JPG_BYTES


# -- private bucket -----------------------------------------------------------------------


def test_private_bucket_urls_are_signed_and_accepted_by_the_simulator(
    private_bucket: Bucket,
) -> None:
    info = resolve_media(VideoInfo(videoMessage="demo.mp4"), private_bucket.client, None)

    assert info.fileUrl is not None and info.thumbFileUrl is not None
    assert "?e=" in info.fileUrl and "&token=resolve-access-key:" in info.fileUrl
    assert info.thumbFileUrl.startswith(f"{private_bucket.url}/demo.mp4?vframe/jpg/offset/0&e=")
    video, thumb = private_bucket.http.get(info.fileUrl), private_bucket.http.get(info.thumbFileUrl)
    assert video.status_code == 200 and len(video.content) == DEMO_MP4_BYTES
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    unsigned = private_bucket.http.get(info.fileUrl.split("?")[0])
    assert unsigned.status_code == 401


def test_private_bucket_refuses_a_client_with_the_wrong_secret(private_bucket: Bucket) -> None:
    wrong = QiniuClient(
        access_key=AK,
        secret_key="not-it",
        bucket=BUCKET,
        domain=private_bucket.url,
        private=True,
        rs_host=private_bucket.url,
    )

    with wrong, pytest.raises(MediaError) as refused:
        resolve_media(ImageInfo(imageMessage="demo.jpg"), wrong, None)

    assert (refused.value.code, refused.value.retryable, refused.value.status) == (
        "qiniu_unauthorized",
        False,
        401,
    )
    assert "not-it" not in refused.value.message


# -- needs_resolution ------------------------------------------------------------------------


def test_needs_resolution_is_true_while_a_filled_field_is_missing() -> None:
    url = "http://cdn.example/x"
    complete_video = VideoInfo.model_validate(
        {
            "videoMessage": "v.mp4",
            "fileUrl": url,
            "fileLength": 1,
            "duration": 1,
            "thumbFileUrl": url,
            "imageWidth": 1,
            "imageHeight": 1,
        },
        context={"media_domain": "http://cdn.example"},
    )

    assert needs_resolution(ImageInfo(imageMessage="a.jpg")) is True
    assert needs_resolution(VoiceInfo(voiceMessage="a.amr")) is True
    assert needs_resolution(complete_video) is False
    assert needs_resolution(complete_video.model_copy(update={"thumbMessage": "t.jpg"})) is True
    assert needs_resolution(complete_video.model_copy(update={"duration": None})) is True
    assert needs_resolution(TextInfo(textMessage="hi")) is False
