"""The Qiniu simulator's own behaviour: media answers, control API, assets, edge paths."""

from __future__ import annotations

import importlib.util
import struct
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import qiniu
from pydantic import SecretStr
from qiniu.utils import entry

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError
from dispatcher.sandbox import qiniu as sandbox
from dispatcher.sandbox.qiniu import (
    create_qiniu_app,
    create_qiniu_app_from_settings,
    probe_amr,
    probe_image,
    probe_mp4,
    seed_demo_objects,
)
from dispatcher.sandbox.server import ServerThread

AK, SK, BUCKET = "sim-access-key", "sim-secret-key", "sim-bucket"
ASSETS = Path(sandbox.__file__).parent / "assets"


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, Any, httpx.Client]]:
    app = create_qiniu_app(access_key=AK, secret_key=SK, bucket=BUCKET)
    with ServerThread(app) as running, httpx.Client(base_url=running.url) as http:
        yield running.url, app, http


@pytest.fixture()
def http(server: tuple[str, Any, httpx.Client]) -> httpx.Client:
    _, app, client = server
    for path in ("requests", "faults", "objects"):
        client.delete(f"/_sandbox/{path}").raise_for_status()
    seed_demo_objects(app)
    return client


def png(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr
    return b"\x89PNG\r\n\x1a\n" + chunk + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))


def gif(width: int, height: int, frames: int) -> bytes:
    image = b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0) + b"\x02\x02\x44\x01\x00"
    return b"GIF89a" + struct.pack("<HHBBB", width, height, 0, 0, 0) + image * frames + b"\x3b"


# -- assets -----------------------------------------------------------------------------


def test_sample_assets_carry_real_headers_for_duration_and_size() -> None:
    mp4 = probe_mp4((ASSETS / "demo.mp4").read_bytes())
    amr = probe_amr((ASSETS / "demo.amr").read_bytes())

    assert mp4 is not None and mp4.duration == 5.0
    assert [(t.kind, t.width, t.height, t.duration) for t in mp4.tracks] == [
        ("video", 320, 240, 5.0),
        ("audio", 0, 0, 5.0),
    ]
    assert probe_image((ASSETS / "demo.jpg").read_bytes()) == ("jpeg", 160, 120, "gray")
    assert amr is not None and amr.duration == 2.0


def test_sample_assets_are_what_the_build_script_writes() -> None:
    spec = importlib.util.spec_from_file_location("build_assets", ASSETS / "build_assets.py")
    assert spec is not None and spec.loader is not None
    build = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(build)

    assert build.build_mp4() == (ASSETS / "demo.mp4").read_bytes()
    assert build.build_jpeg() == (ASSETS / "demo.jpg").read_bytes()
    assert build.build_amr() == (ASSETS / "demo.amr").read_bytes()


def test_seed_demo_objects_places_the_samples_in_an_app_or_a_simulator() -> None:
    app = create_qiniu_app(access_key=AK, secret_key=SK, bucket=BUCKET)

    keys = seed_demo_objects(app)
    again = seed_demo_objects(app.state.qiniu)

    assert keys == again == ["demo.mp4", "demo.jpg", "demo.amr"]
    stored = {o.key: (o.mime_type, o.fsize) for o in app.state.qiniu.objects()}
    assert stored["demo.mp4"] == ("video/mp4", (ASSETS / "demo.mp4").stat().st_size)
    assert stored["demo.jpg"][0] == "image/jpeg" and stored["demo.amr"][0] == "audio/amr"


# -- avinfo / imageInfo / vframe ------------------------------------------------------------


def test_avinfo_of_an_mp4_has_qiniu_shape_with_numbers_as_strings(http: httpx.Client) -> None:
    body = http.get("/demo.mp4?avinfo").json()

    fmt, (video, audio) = body["format"], body["streams"]
    assert fmt["duration"] == "5.000000" and fmt["size"] == "2882"
    assert fmt["nb_streams"] == 2 and fmt["format_name"] == "mov,mp4,m4a,3gp,3g2,mj2"
    assert (video["codec_type"], video["width"], video["height"]) == ("video", 320, 240)
    assert video["duration"] == "5.000000" and isinstance(video["nb_frames"], str)
    assert (audio["codec_type"], audio["sample_rate"], audio["channels"]) == ("audio", "44100", 2)


def test_avinfo_of_amr_bytes_counts_frames(http: httpx.Client) -> None:
    body = http.get("/demo.amr?avinfo").json()

    assert body["format"]["format_name"] == "amr" and body["format"]["duration"] == "2.000000"
    assert [s["codec_name"] for s in body["streams"]] == ["amr_nb"]


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (png(640, 480), {"format": "png", "width": 640, "height": 480, "colorModel": "nrgba"}),
        (gif(30, 20, 3), {"format": "gif", "width": 30, "height": 20, "frameNumber": 3}),
    ],
    ids=["png", "gif"],
)
def test_image_info_reads_png_and_gif_headers(
    http: httpx.Client, data: bytes, expected: dict[str, Any]
) -> None:
    http.put("/_sandbox/objects/pic", content=data, headers={"content-type": "image/x"})

    body = http.get("/pic?imageInfo").json()

    assert body.items() >= expected.items()
    assert body["size"] == len(data)


def test_metadata_only_objects_answer_stat_and_media_info_but_not_downloads(
    http: httpx.Client, server: tuple[str, Any, httpx.Client]
) -> None:
    meta = {"fsize": 4096, "mimeType": "video/mp4", "duration": 7.25, "width": 720, "height": 1280}
    placed = http.put("/_sandbox/objects/clips/a.mp4", json=meta)

    avinfo = http.get("/clips/a.mp4?avinfo").json()
    stat, info = qiniu.BucketManager(
        qiniu.Auth(AK, SK), regions=[qiniu.Region(rs_host=server[0])]
    ).stat(BUCKET, "clips/a.mp4")
    download = http.get("/clips/a.mp4")

    assert placed.status_code == 200 and placed.json()["hasData"] is False
    assert avinfo["format"]["duration"] == "7.250000" and avinfo["format"]["size"] == "4096"
    assert (avinfo["streams"][0]["width"], avinfo["streams"][0]["height"]) == (720, 1280)
    assert info.status_code == 200 and (stat["fsize"], stat["mimeType"]) == (4096, "video/mp4")
    assert download.status_code == 404 and "metadata only" in download.json()["error"]


def test_metadata_with_unknown_fields_is_refused(http: httpx.Client) -> None:
    refused = http.put("/_sandbox/objects/x.mp4", json={"fsize": 1, "size": 2})

    assert refused.status_code == 400 and "size" in refused.json()["error"]


def test_media_info_errors_use_qiniu_code_bodies(http: httpx.Client) -> None:
    http.put(
        "/_sandbox/objects/notes.txt", content=b"plain text", headers={"content-type": "text/plain"}
    )

    not_media = http.get("/notes.txt?avinfo")
    not_image = http.get("/demo.mp4?imageInfo")
    missing = http.get("/missing.mp4?avinfo")
    grab_of_image = http.get("/demo.jpg?vframe/jpg/offset/0")

    assert (not_media.status_code, not_media.json()["code"]) == (400, 400)
    assert (not_image.status_code, not_image.json()) == (
        400,
        {"code": 400, "error": "unsupported format"},
    )
    assert (missing.status_code, missing.json()) == (
        404,
        {"code": 404, "error": "Document not found"},
    )
    assert grab_of_image.status_code == 400


def test_vframe_of_a_video_returns_a_jpeg(http: httpx.Client) -> None:
    grab = http.get("/demo.mp4?vframe/jpg/offset/0")

    assert grab.status_code == 200 and grab.headers["content-type"] == "image/jpeg"
    assert probe_image(grab.content) == ("jpeg", 160, 120, "gray")


def test_plain_download_returns_bytes_type_and_etag(http: httpx.Client) -> None:
    got = http.get("/demo.jpg?v=cache-buster")

    assert got.content == (ASSETS / "demo.jpg").read_bytes()
    assert got.headers["content-type"] == "image/jpeg"
    assert got.headers["etag"] == f'"{sandbox.qiniu_etag(got.content)}"'


# -- RS and upload paths the SDK does not use by default --------------------------------------


def test_stat_accepts_get_with_a_qbox_token(
    http: httpx.Client, server: tuple[str, Any, httpx.Client]
) -> None:
    path = f"/stat/{entry(BUCKET, 'demo.jpg')}"
    token = qiniu.Auth(AK, SK).token_of_request(f"{server[0]}{path}")

    ok = http.get(path, headers={"Authorization": f"QBox {token}"})
    wrong = http.get(path, headers={"Authorization": f"QBox {AK}:AAAA"})
    anonymous = http.get(path)

    assert ok.status_code == 200 and ok.json()["fsize"] == 229 and ok.json()["type"] == 0
    assert (wrong.status_code, wrong.json()) == (401, {"error": "bad token"})
    assert (anonymous.status_code, anonymous.json()) == (401, {"error": "token not specified"})


def test_v1_blocks_can_be_sent_in_chunks_and_a_stale_ctx_is_701(http: httpx.Client) -> None:
    headers = {"Authorization": f"UpToken {qiniu.Auth(AK, SK).upload_token(BUCKET, 'chunks.bin')}"}

    first = http.post("/mkblk/10", content=b"12345", headers=headers).json()
    second = http.post(f"/bput/{first['ctx']}/5", content=b"67890", headers=headers).json()
    stale = http.post(f"/bput/{first['ctx']}/5", content=b"x", headers=headers)
    made = http.post(
        f"/mkfile/10/key/{sandbox.b64url(b'chunks.bin')}", content=second["ctx"], headers=headers
    )

    assert (first["offset"], second["offset"]) == (5, 10)
    assert (stale.status_code, stale.json()) == (701, {"error": "invalid ctx"})
    assert made.status_code == 200 and made.json() == {
        "hash": sandbox.qiniu_etag(b"1234567890"),
        "key": "chunks.bin",
    }


def test_v2_complete_refuses_parts_out_of_order(http: httpx.Client) -> None:
    headers = {"Authorization": f"UpToken {qiniu.Auth(AK, SK).upload_token(BUCKET)}"}
    base = f"/buckets/{BUCKET}/objects/~/uploads"
    upload_id = http.post(base, headers=headers).json()["uploadId"]
    etags = [
        http.put(f"{base}/{upload_id}/{n}", content=b"x", headers=headers).json()["etag"]
        for n in (1, 2)
    ]

    backwards = http.post(
        f"{base}/{upload_id}",
        json={"parts": [{"partNumber": 2, "etag": etags[1]}, {"partNumber": 1, "etag": etags[0]}]},
        headers=headers,
    )
    unknown = http.post(f"{base}/not-an-upload", json={"parts": []}, headers=headers)

    assert backwards.status_code == 400 and "ascend" in backwards.json()["error"]
    assert (unknown.status_code, unknown.json()) == (612, {"error": "no such uploadId"})


# -- control API and plumbing -------------------------------------------------------------------


def test_objects_can_be_listed_deleted_and_cleared(http: httpx.Client) -> None:
    listed = [o["key"] for o in http.get("/_sandbox/objects").json()]
    deleted = http.delete("/_sandbox/objects/demo.amr").json()
    after_delete = [o["key"] for o in http.get("/_sandbox/objects").json()]
    cleared = http.delete("/_sandbox/objects").json()

    assert listed == ["demo.amr", "demo.jpg", "demo.mp4"]
    assert deleted == {"ok": True, "deleted": True} and after_delete == ["demo.jpg", "demo.mp4"]
    assert cleared == {"ok": True, "deleted": 2} and http.get("/_sandbox/objects").json() == []


def test_every_reply_carries_an_x_reqid(http: httpx.Client) -> None:
    http.post(
        "/_sandbox/faults", json={"path": "^/demo.jpg$", "status": 573, "body": {"error": "x"}}
    )

    replies = [
        http.get("/demo.mp4"),
        http.get("/nothing-here"),
        http.put("/"),  # method not allowed
        http.get("/demo.jpg"),  # the injected 573
        http.get("/_sandbox/objects"),
    ]

    assert [r.status_code for r in replies] == [200, 404, 405, 573, 200]
    reqids = [r.headers.get("x-reqid") for r in replies]
    assert all(reqids) and len(set(reqids)) == len(reqids)


def test_the_ledger_records_uploads_with_the_token_masked(http: httpx.Client) -> None:
    token = qiniu.Auth(AK, SK).upload_token(BUCKET, "ledger.txt")
    http.post("/mkblk/4", content=b"abcd", headers={"Authorization": f"UpToken {token}"})

    (entry_,) = http.get("/_sandbox/requests").json()

    assert (entry_["method"], entry_["path"]) == ("POST", "/mkblk/4")
    assert entry_["headers"]["authorization"] == "UpToken ***"


def test_app_from_settings_needs_the_credentials_and_honours_private() -> None:
    with pytest.raises(ConfigurationError) as missing:
        create_qiniu_app_from_settings(Settings(qiniu_access_key="ak"))
    app = create_qiniu_app_from_settings(
        Settings(
            qiniu_access_key="ak",
            qiniu_secret_key=SecretStr("sk"),
            qiniu_bucket="b",
            qiniu_private=True,
        )
    )

    assert "DISPATCHER_QINIU_SECRET_KEY" in str(missing.value)
    assert "DISPATCHER_QINIU_BUCKET" in str(missing.value)
    assert "DISPATCHER_QINIU_ACCESS_KEY" not in str(missing.value)
    assert app.state.qiniu.private is True and app.state.qiniu.bucket == "b"
