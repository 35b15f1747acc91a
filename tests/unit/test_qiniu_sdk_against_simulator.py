"""The real ``qiniu`` SDK (and our client on top of it) against the simulator over loopback HTTP."""

from __future__ import annotations

import binascii
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import qiniu
from qiniu.utils import etag as sdk_etag
from qiniu.utils import urlsafe_base64_encode

from dispatcher.errors import MediaError
from dispatcher.media.qiniu import QiniuClient, qiniu_etag
from dispatcher.sandbox.qiniu import QiniuSimulator, create_qiniu_app
from dispatcher.sandbox.server import ServerThread

AK, SK, BUCKET = "sdk-access-key", "sdk-secret-key", "sdk-bucket"
MiB = 1024 * 1024


@dataclass
class Sandbox:
    url: str
    sim: QiniuSimulator
    http: httpx.Client

    def ledger(self, path_contains: str = "") -> list[dict[str, Any]]:
        entries = self.http.get(f"{self.url}/_sandbox/requests").json()
        return [e for e in entries if path_contains in e["path"]]

    def fault(self, **rule: Any) -> None:
        self.http.post(f"{self.url}/_sandbox/faults", json=rule).raise_for_status()

    def region(self) -> qiniu.Region:
        return qiniu.Region(up_host=self.url, rs_host=self.url)

    def client(self, secret_key: str = SK, **options: Any) -> QiniuClient:
        return QiniuClient(
            access_key=AK,
            secret_key=secret_key,
            bucket=BUCKET,
            domain=self.url,
            up_host=self.url,
            rs_host=self.url,
            **options,
        )


@pytest.fixture(scope="module")
def server() -> Iterator[Sandbox]:
    app = create_qiniu_app(access_key=AK, secret_key=SK, bucket=BUCKET, private=True)
    with ServerThread(app) as running, httpx.Client() as http:
        yield Sandbox(running.url, app.state.qiniu, http)


@pytest.fixture()
def sandbox(server: Sandbox) -> Sandbox:
    for path in ("requests", "faults", "objects"):
        server.http.delete(f"{server.url}/_sandbox/{path}").raise_for_status()
    return server


@pytest.fixture()
def recorder(tmp_path: Path) -> qiniu.UploadProgressRecorder:
    """Keep the SDK's resume records in this test's directory, not the shared temp dir."""
    return qiniu.UploadProgressRecorder(str(tmp_path))


def bucket_manager(sandbox: Sandbox, secret_key: str = SK) -> qiniu.BucketManager:
    return qiniu.BucketManager(qiniu.Auth(AK, secret_key), regions=[sandbox.region()])


def test_sdk_form_upload_is_accepted_and_stat_reports_it(sandbox: Sandbox) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "notes/hello.txt")

    ret, info = qiniu.put_data(
        token, "notes/hello.txt", b"hello", mime_type="text/plain", regions=[sandbox.region()]
    )

    assert info.status_code == 200 and info.req_id, info
    assert ret == {"hash": "Fqr0xh3cxeii2r7eDztILNmuqUNN", "key": "notes/hello.txt"}
    stat, info = bucket_manager(sandbox).stat(BUCKET, "notes/hello.txt")
    assert info.status_code == 200, info
    assert stat["fsize"] == 5 and stat["mimeType"] == "text/plain"
    assert stat["hash"] == "Fqr0xh3cxeii2r7eDztILNmuqUNN"
    assert abs(stat["putTime"] / 1e7 - time.time()) < 60  # 100-ns units
    (upload,) = sandbox.ledger("/")[:1]
    assert (upload["method"], upload["path"]) == ("POST", "/")


def test_sdk_stat_is_a_signed_post_with_qiniu_auth_and_x_qiniu_date(sandbox: Sandbox) -> None:
    bucket_manager(sandbox).stat(BUCKET, "missing.jpg")

    (stat,) = sandbox.ledger("/stat/")
    assert stat["method"] == "POST"
    assert stat["headers"]["authorization"] == "Qiniu ***"  # the ledger masks the credential
    assert "x-qiniu-date" in stat["headers"]


def test_sdk_stat_of_a_missing_key_gets_612(sandbox: Sandbox) -> None:
    ret, info = bucket_manager(sandbox).stat(BUCKET, "missing.jpg")

    assert ret is None
    assert info.status_code == 612
    assert '"no such file or directory"' in info.error


def test_sdk_stat_in_an_unknown_bucket_gets_631(sandbox: Sandbox) -> None:
    ret, info = bucket_manager(sandbox).stat("no-such-bucket", "a.jpg")

    assert ret is None and info.status_code == 631
    assert '"no such bucket"' in info.error


def test_sdk_with_a_wrong_secret_key_is_refused_with_401(sandbox: Sandbox) -> None:
    sandbox.sim.put_bytes("a.jpg", b"\xff\xd8\xff")
    wrong = qiniu.Auth(AK, "not-the-secret")

    stat, stat_info = bucket_manager(sandbox, "not-the-secret").stat(BUCKET, "a.jpg")
    upload, upload_info = qiniu.put_data(
        wrong.upload_token(BUCKET, "b.jpg"), "b.jpg", b"x", regions=[sandbox.region()]
    )

    assert stat is None and stat_info.status_code == 401 and "bad token" in stat_info.error
    assert upload is None and upload_info.status_code == 401 and "bad token" in upload_info.error
    assert sandbox.sim.get("b.jpg") is None


def test_sdk_resumable_upload_above_8_mib_uses_v2_multipart(
    sandbox: Sandbox, tmp_path: Path, recorder: qiniu.UploadProgressRecorder
) -> None:
    path = tmp_path / "big.mp4"
    path.write_bytes(os.urandom(9 * MiB + 123))
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "big.mp4")

    ret, info = qiniu.put_file_v2(
        token, "big.mp4", str(path), regions=[sandbox.region()], upload_progress_recorder=recorder
    )

    assert info.status_code == 200, info
    assert ret == {"hash": sdk_etag(str(path)), "key": "big.mp4"}
    stored = sandbox.sim.get("big.mp4")
    assert stored is not None and stored.data == path.read_bytes()
    prefix = f"/buckets/{BUCKET}/objects/{urlsafe_base64_encode('big.mp4')}/uploads"
    init, *parts, complete = sandbox.ledger()
    upload_id = complete["path"].removeprefix(f"{prefix}/")
    assert (init["method"], init["path"]) == ("POST", prefix)  # initParts
    assert complete["method"] == "POST" and "/" not in upload_id  # completeParts
    assert sorted((p["method"], p["path"]) for p in parts) == [
        ("PUT", f"{prefix}/{upload_id}/{n}") for n in (1, 2, 3)
    ]


def test_sdk_v1_resumable_upload_with_mkblk_and_mkfile_is_accepted(
    sandbox: Sandbox, tmp_path: Path, recorder: qiniu.UploadProgressRecorder
) -> None:
    path = tmp_path / "v1.bin"
    path.write_bytes(os.urandom(8 * MiB + 10))
    token = qiniu.Auth(AK, SK).upload_token(BUCKET)

    ret, info = qiniu.put_file_v2(
        token,
        "v1.bin",
        str(path),
        version="v1",
        regions=[sandbox.region()],
        upload_progress_recorder=recorder,
    )

    assert info.status_code == 200, info
    assert ret == {"hash": sdk_etag(str(path)), "key": "v1.bin"}
    assert [e["path"].split("/")[1] for e in sandbox.ledger()] == ["mkblk"] * 3 + ["mkfile"]


def test_sdk_private_download_url_is_fetched_with_httpx_and_checked(sandbox: Sandbox) -> None:
    sandbox.sim.put_bytes("docs/readme.txt", b"private bytes", "text/plain")
    auth, plain = qiniu.Auth(AK, SK), f"{sandbox.url}/docs/readme.txt"

    signed = auth.private_download_url(plain, expires=60)
    ok = httpx.get(signed)
    unsigned = httpx.get(plain)
    tampered = httpx.get(signed.replace("readme", "README"))
    expired = httpx.get(auth.private_download_url(plain, expires=-10))
    forged = httpx.get(qiniu.Auth(AK, "guess").private_download_url(plain, expires=60))

    assert (ok.status_code, ok.content) == (200, b"private bytes")
    assert ok.headers["content-type"].startswith("text/plain")
    assert (unsigned.status_code, unsigned.json()) == (401, {"error": "token not specified"})
    assert (tampered.status_code, tampered.json()) == (401, {"error": "bad token"})
    assert (expired.status_code, expired.json()) == (401, {"error": "token out of date"})
    assert forged.status_code == 401
    assert all(r.headers.get("x-reqid") for r in (ok, unsigned, tampered, expired, forged))


def test_insert_only_token_refuses_other_content_with_614_and_accepts_the_same(
    sandbox: Sandbox,
) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET)  # scope = bucket: insert-only
    region = [sandbox.region()]

    first, _ = qiniu.put_data(token, "same.txt", b"one", regions=region)
    again, again_info = qiniu.put_data(token, "same.txt", b"one", regions=region)
    other, other_info = qiniu.put_data(token, "same.txt", b"two", regions=region)

    assert first == again == {"hash": qiniu_etag(b"one"), "key": "same.txt"}
    assert again_info.status_code == 200
    assert other is None and other_info.status_code == 614 and "file exists" in other_info.error
    assert sandbox.sim.get("same.txt").data == b"one"  # type: ignore[union-attr]


def test_key_scoped_token_overwrites_and_refuses_another_key_with_403(sandbox: Sandbox) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "scoped.txt")
    region = [sandbox.region()]

    qiniu.put_data(token, "scoped.txt", b"one", regions=region)
    overwritten, _ = qiniu.put_data(token, "scoped.txt", b"two", regions=region)
    elsewhere, info = qiniu.put_data(token, "other.txt", b"two", regions=region)

    assert overwritten == {"hash": qiniu_etag(b"two"), "key": "scoped.txt"}
    assert sandbox.sim.get("scoped.txt").data == b"two"  # type: ignore[union-attr]
    assert elsewhere is None and info.status_code == 403 and "doesn't match scope" in info.error


def test_form_upload_with_a_wrong_crc32_is_refused_with_406(sandbox: Sandbox) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "crc.txt")
    good_crc = binascii.crc32(b"payload") & 0xFFFFFFFF

    refused = httpx.post(
        f"{sandbox.url}/",
        data={"token": token, "key": "crc.txt", "crc32": str(good_crc + 1)},
        files={"file": ("crc.txt", b"payload", "text/plain")},
    )
    accepted = httpx.post(
        f"{sandbox.url}/",
        data={"token": token, "key": "crc.txt", "crc32": str(good_crc)},
        files={"file": ("crc.txt", b"payload", "text/plain")},
    )

    assert (refused.status_code, refused.json()) == (406, {"error": "crc32 not match"})
    assert accepted.status_code == 200 and accepted.json()["key"] == "crc.txt"


def test_expired_upload_token_is_refused_with_401(sandbox: Sandbox) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "late.txt", expires=-5)

    ret, info = qiniu.put_data(token, "late.txt", b"late", regions=[sandbox.region()])

    assert ret is None and info.status_code == 401 and "expired token" in info.error


def test_injected_fault_replies_carry_x_reqid_so_the_sdk_reads_them(sandbox: Sandbox) -> None:
    sandbox.fault(path="^/stat/", status=503, body={"error": "service unavailable"}, times=1)

    ret, info = bucket_manager(sandbox).stat(BUCKET, "a.jpg")

    assert ret is None and info.status_code == 503 and info.req_id
    assert len(sandbox.ledger("/stat/")) == 1  # one configured host: the SDK does not retry


# -- our client on top of the SDK -------------------------------------------------------------


def test_client_upload_of_bytes_keys_them_by_etag_and_sniffed_extension(sandbox: Sandbox) -> None:
    data = (Path(__file__).parents[2] / "dispatcher/sandbox/assets/demo.jpg").read_bytes()
    progress: list[tuple[int, int]] = []

    with sandbox.client() as client:
        key = client.upload(data, progress=lambda done, total: progress.append((done, total)))
        again = client.upload(data)  # same content, same key: insert-only accepts it

    assert key == again == f"{qiniu_etag(data)}.jpg"
    stored = sandbox.sim.get(key)
    assert stored is not None and stored.data == data and stored.mime_type == "image/jpeg"
    assert progress == [(len(data), len(data))]


def test_client_resumable_upload_of_a_file_reports_progress_and_keeps_the_given_key(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "clip.MP4"
    path.write_bytes(os.urandom(8 * MiB + 1))
    progress: list[tuple[int, int]] = []

    with sandbox.client() as client:
        key = client.upload(path, "videos/clip.mp4", progress=lambda *p: progress.append(p))
        stat = client.stat(key)

    assert key == "videos/clip.mp4"
    assert (stat.fsize, stat.hash, stat.mime_type) == (
        path.stat().st_size,
        sdk_etag(str(path)),
        "video/mp4",
    )
    assert max(done for done, _ in progress) == path.stat().st_size
    assert {total for _, total in progress} == {path.stat().st_size}
    assert len(sandbox.ledger("/buckets/")) == 5  # init, 3 parts, complete


def test_client_default_key_of_a_file_takes_the_lowercased_extension(
    sandbox: Sandbox, tmp_path: Path
) -> None:
    path = tmp_path / "Voice.AMR"
    path.write_bytes(b"#!AMR\n" + bytes([0x3C]) + bytes(31))

    with sandbox.client() as client:
        key = client.upload(path)

    assert key == f"{qiniu_etag(path.read_bytes())}.amr"
    assert sandbox.sim.get(key).mime_type == "audio/amr"  # type: ignore[union-attr]


def test_client_with_a_wrong_secret_gets_a_permanent_error_without_the_secret(
    sandbox: Sandbox,
) -> None:
    client = sandbox.client(secret_key="s3cr3t-that-must-not-leak")
    with client, pytest.raises(MediaError) as refused:
        client.upload(b"data", "x.txt")

    assert refused.value.code == "qiniu_unauthorized" and refused.value.retryable is False
    assert refused.value.status == 401
    assert "s3cr3t" not in str(refused.value) and "DISPATCHER_QINIU_SECRET_KEY" in str(
        refused.value
    )


def test_client_upload_of_existing_key_with_other_content_by_insert_only_is_permanent(
    sandbox: Sandbox,
) -> None:
    sandbox.sim.put_bytes(f"{qiniu_etag(b'new')}", b"old")  # a key collision, forced

    with sandbox.client() as client, pytest.raises(MediaError) as refused:
        client.upload(b"new")

    assert (refused.value.code, refused.value.retryable, refused.value.status) == (
        "media_exists",
        False,
        614,
    )
