"""QiniuClient: configuration, parsing and the mapping of Qiniu failures to MediaError."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError, MediaError
from dispatcher.media.qiniu import (
    AvInfo,
    QiniuClient,
    parse_avinfo,
    parse_image_info,
    sniff_extension,
)
from dispatcher.sandbox.qiniu import create_qiniu_app, seed_demo_objects
from dispatcher.sandbox.server import ServerThread

AK, SK, BUCKET = "client-access-key", "client-secret-key", "client-bucket"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, httpx.Client]]:
    app = create_qiniu_app(access_key=AK, secret_key=SK, bucket=BUCKET, private=True)
    seed_demo_objects(app)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as http:
        yield running.url, http


@pytest.fixture()
def url(server: tuple[str, httpx.Client]) -> str:
    server[1].delete("/_sandbox/faults").raise_for_status()
    return server[0]


def fault(url: str, **rule: Any) -> None:
    httpx.post(f"{url}/_sandbox/faults", json=rule).raise_for_status()


def make_client(url: str, bucket: str = BUCKET, **options: Any) -> QiniuClient:
    return QiniuClient(
        access_key=AK,
        secret_key=SK,
        bucket=bucket,
        domain=url,
        private=True,
        up_host=url,
        rs_host=url,
        **{"timeout": 1.0, **options},
    )


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- configuration --------------------------------------------------------------------------


def test_from_settings_names_every_missing_variable_and_never_the_secret() -> None:
    with pytest.raises(ConfigurationError) as missing:
        QiniuClient.from_settings(Settings(qiniu_secret_key=SecretStr("top-secret-value")))

    message = str(missing.value)
    for name in ("ACCESS_KEY", "BUCKET", "DOMAIN"):
        assert f"DISPATCHER_QINIU_{name}" in message
    assert "DISPATCHER_QINIU_SECRET_KEY" not in message and "top-secret-value" not in message


def test_from_settings_takes_hosts_domain_privacy_and_lifetime() -> None:
    settings = Settings(
        qiniu_access_key="ak",
        qiniu_secret_key=SecretStr("sk"),
        qiniu_bucket="b",
        qiniu_domain="cdn.example.com/",
        qiniu_private=True,
        qiniu_url_lifetime=60,
        qiniu_up_host="http://up.local:1/",
        qiniu_rs_host="http://rs.local:2",
    )

    with QiniuClient.from_settings(settings) as client:
        url = client.download_url("a.jpg", deadline=123)

    assert (client.up_host, client.rs_host) == ("http://up.local:1", "http://rs.local:2")
    assert url.startswith("http://cdn.example.com/a.jpg?e=123&token=ak:")
    assert client.url_lifetime == 60


def test_default_private_url_lives_for_the_configured_lifetime(url: str) -> None:
    with make_client(url, url_lifetime=600) as client:
        signed = client.download_url("demo.jpg")

    deadline = int(signed.split("e=")[1].split("&")[0])
    assert 590 < deadline - time.time() <= 600
    assert httpx.get(signed).status_code == 200


# -- parsing -------------------------------------------------------------------------------


def test_parse_avinfo_reads_numbers_given_as_strings_and_honours_rotation() -> None:
    body = {
        "streams": [
            {"codec_type": "audio", "duration": "9.1"},
            {"codec_type": "video", "width": 1920, "height": 1080, "tags": {"rotate": "90"}},
        ],
        "format": {"duration": "6413.359589", "size": "1048576", "format_name": "mov,mp4"},
    }

    assert parse_avinfo(body) == AvInfo(6413.359589, 1080, 1920, 1048576, "mov,mp4")


def test_parse_avinfo_falls_back_to_stream_durations_and_tolerates_garbage() -> None:
    streams_only = {"streams": [{"codec_type": "audio", "duration": "3.5"}], "format": {}}
    garbage = {"streams": "nope", "format": {"duration": "N/A", "size": None}}

    assert parse_avinfo(streams_only) == AvInfo(3.5, None, None, None, None)
    assert parse_avinfo(garbage) == AvInfo(None, None, None, None, None)


def test_parse_image_info_needs_width_and_height() -> None:
    info = parse_image_info({"format": "png", "width": 4, "height": 3, "size": 99})

    assert (info and (info.width, info.height, info.size, info.format)) == (4, 3, 99, "png")
    assert parse_image_info({"format": "png", "width": 0, "height": 3}) is None


@pytest.mark.parametrize(
    ("head", "extension"),
    [
        (b"\xff\xd8\xff\xe0", ".jpg"),
        (b"\x89PNG\r\n\x1a\n", ".png"),
        (b"GIF89a", ".gif"),
        (b"\x00\x00\x00\x20ftypisom", ".mp4"),
        (b"#!AMR\n", ".amr"),
        (b"ID3\x04", ".mp3"),
        (b"\xff\xf1\x50", ".aac"),
        (b"plain", ""),
    ],
)
def test_sniff_extension_recognises_the_media_types_messages_accept(
    head: bytes, extension: str
) -> None:
    assert sniff_extension(head) == extension


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "retryable"),
    [
        (573, "qiniu_unavailable", True),
        (599, "qiniu_unavailable", True),
        (502, "qiniu_unavailable", True),
        (403, "qiniu_forbidden", False),
        (631, "bucket_not_found", False),
        (419, "qiniu_error", False),
    ],
)
def test_stat_failures_map_to_retryable_or_permanent_media_errors(
    url: str, status: int, code: str, retryable: bool
) -> None:
    fault(url, path="^/stat/", status=status, body={"error": f"simulated {status}"}, times=1)

    with make_client(url) as client, pytest.raises(MediaError) as failed:
        client.stat("demo.mp4")

    assert (failed.value.code, failed.value.retryable, failed.value.status) == (
        code,
        retryable,
        status,
    )
    assert f"simulated {status}" in failed.value.message


def test_stat_in_an_unknown_bucket_is_a_permanent_bucket_not_found(url: str) -> None:
    with make_client(url, bucket="elsewhere") as client, pytest.raises(MediaError) as failed:
        client.stat("demo.mp4")

    assert (failed.value.code, failed.value.retryable) == ("bucket_not_found", False)
    assert (
        "'elsewhere'" in failed.value.message and "DISPATCHER_QINIU_BUCKET" in failed.value.message
    )


def test_avinfo_of_a_missing_key_is_media_not_found_and_never_shows_the_signed_url(
    url: str,
) -> None:
    with make_client(url) as client, pytest.raises(MediaError) as failed:
        client.avinfo("absent.mp4")

    assert (failed.value.code, failed.value.retryable, failed.value.status) == (
        "media_not_found",
        False,
        404,
    )
    assert "token=" not in failed.value.message and "'absent.mp4'" in failed.value.message


def test_avinfo_error_inside_a_200_reply_is_still_an_error(url: str) -> None:
    fault(url, path="^/demo.mp4$", status=200, body={"code": 400, "error": "bad media"}, times=1)

    with make_client(url) as client, pytest.raises(MediaError) as failed:
        client.avinfo("demo.mp4")

    assert (failed.value.code, failed.value.retryable) == ("media_unreadable", False)


def test_avinfo_answer_that_is_not_json_is_retryable(url: str) -> None:
    fault(url, path="^/demo.mp4$", status=200, body="<html>", times=1)

    with make_client(url) as client, pytest.raises(MediaError) as failed:
        client.avinfo("demo.mp4")

    assert (failed.value.code, failed.value.retryable) == ("qiniu_bad_response", True)


def test_unreachable_qiniu_is_retryable_for_sdk_and_httpx_calls() -> None:
    dead = f"http://127.0.0.1:{closed_port()}"

    with make_client(dead) as client:
        with pytest.raises(MediaError) as stat_failed:
            client.stat("a.jpg")
        with pytest.raises(MediaError) as info_failed:
            client.image_info("a.jpg")
        with pytest.raises(MediaError) as upload_failed:
            client.upload(b"abc", "a.txt")

    for failed in (stat_failed, info_failed, upload_failed):
        assert (failed.value.code, failed.value.retryable) == ("qiniu_unavailable", True)
        assert "token=" not in failed.value.message


def test_a_host_answering_200_without_x_reqid_is_reported_as_not_qiniu() -> None:
    impostor = FastAPI()

    @impostor.post("/stat/{entry}")
    def stat(entry: str) -> dict[str, int]:
        return {"fsize": 1}

    with ServerThread(impostor) as running:
        client = make_client(running.url)
        with client, pytest.raises(MediaError) as failed:
            client.stat("a.jpg")

    assert (failed.value.code, failed.value.retryable) == ("qiniu_bad_response", False)
    assert "X-Reqid" in failed.value.message


def test_uploading_a_missing_file_is_a_permanent_error(url: str, tmp_path: Path) -> None:
    with make_client(url) as client, pytest.raises(MediaError) as failed:
        client.upload(tmp_path / "nowhere.mp4")

    assert (failed.value.code, failed.value.retryable) == ("media_unreadable", False)
    assert "nowhere.mp4" in failed.value.message
