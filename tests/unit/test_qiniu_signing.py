"""The signature and etag vectors of docs/providers.md ("Qiniu"), through our client and our simulator."""

from __future__ import annotations

import io
import os
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import pytest
import qiniu
import qiniu.auth
from qiniu.utils import entry, etag_stream

from dispatcher.media.qiniu import QiniuClient, qiniu_etag
from dispatcher.sandbox import qiniu as sandbox
from dispatcher.sandbox.qiniu import QiniuError, QiniuSimulator

AK, SK = "MY_ACCESS_KEY", "MY_SECRET_KEY"
DEADLINE = 1451491200
MiB = 1024 * 1024


def client(bucket: str = "my-bucket", **options: object) -> QiniuClient:
    return QiniuClient(
        access_key=AK,
        secret_key=SK,
        bucket=bucket,
        domain=str(options.pop("domain", "http://developer.qiniu.com")),
        **options,  # type: ignore[arg-type]
    )


def simulator(bucket: str = "my-bucket", now: float = DEADLINE - 60) -> QiniuSimulator:
    return QiniuSimulator(access_key=AK, secret_key=SK, bucket=bucket, clock=lambda: now)


@pytest.fixture()
def frozen_sdk_clock(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK adds ``expires`` to time.time(); freeze it one hour before the vectors' deadline."""
    # Replace the module reference inside qiniu.auth only: time.time stays real elsewhere.
    monkeypatch.setattr(qiniu.auth, "time", SimpleNamespace(time=lambda: DEADLINE - 3600))


# -- management tokens --------------------------------------------------------------


def test_qbox_token_reproduces_the_documented_move_vector_and_the_simulator_accepts_it() -> None:
    path = "/move/bmV3ZG9jczpmaW5kX21hbi50eHQ=/bmV3ZG9jczpmaW5kLm1hbi50eHQ="
    token = qiniu.Auth(AK, SK).token_of_request(f"http://rs.qiniu.com{path}")

    assert token == f"{AK}:FXsYh0wKHYPEsIAgdPD9OfjkeEM="
    check: dict[str, Any] = {
        "method": "POST",
        "host": "rs.qiniu.com",
        "path_qs": path,
        "content_type": None,
    }
    simulator().check_management(f"QBox {token}", qiniu_headers={}, body=b"", **check)
    with pytest.raises(QiniuError) as refused:
        simulator().check_management(f"QBox {token[:-2]}A=", qiniu_headers={}, body=b"", **check)
    assert (refused.value.status, refused.value.error) == (401, "bad token")


def test_entry_and_qbox_stat_token_reproduce_the_vectors() -> None:
    encoded = entry("my-bucket", "k.jpg")

    assert encoded == "bXktYnVja2V0OmsuanBn"
    token = qiniu.Auth(AK, SK).token_of_request(f"http://rs.qiniu.com/stat/{encoded}")
    assert token == f"{AK}:2PxIXtV9uZOJK0QoKcu2FVIQ4TY="


def test_qiniu_token_with_x_qiniu_date_reproduces_the_vector_and_is_checked_for_freshness() -> None:
    url = f"http://rs.qiniuapi.com/stat/{entry('my-bucket', 'k.jpg')}"
    form = "application/x-www-form-urlencoded"
    token = qiniu.QiniuMacAuth(AK, SK).token_of_request(
        "POST", "rs.qiniuapi.com", url, "X-Qiniu-Date: 20240101T000000Z", form, None
    )

    assert token == f"{AK}:fmsy-J4wCCp5Gdlg-zSq4KCKl84="
    signed_at = datetime(2024, 1, 1, tzinfo=UTC).timestamp()
    request: dict[str, Any] = {
        "method": "POST",
        "host": "rs.qiniuapi.com",
        "path_qs": url.removeprefix("http://rs.qiniuapi.com"),
        "content_type": form,
        "qiniu_headers": {"X-Qiniu-Date": "20240101T000000Z"},
        "body": b"",
    }
    simulator(now=signed_at + 60).check_management(f"Qiniu {token}", **request)
    with pytest.raises(QiniuError) as stale:
        simulator(now=signed_at + 3600).check_management(f"Qiniu {token}", **request)
    assert (stale.value.status, stale.value.error) == (401, "expired token")


# -- upload tokens ----------------------------------------------------------------------


def test_upload_token_reproduces_the_v6_doc_example_signature() -> None:
    return_body = (
        '{"name":$(fname),"size":$(fsize),"w":$(imageInfo.width),'
        '"h":$(imageInfo.height),"hash":$(etag)}'
    )
    token = client().upload_token(
        "sunflower.jpg", deadline=DEADLINE, policy={"returnBody": return_body}
    )

    access_key, signature, encoded = token.split(":")
    assert (access_key, signature) == (AK, "wQ4ofysef1R7IKnrziqtomqyDvI=")
    assert encoded.startswith("eyJzY29wZSI6Im15LWJ1Y2tldDpzdW5mbG93ZXIuanBnIiwiZGVhZGxpbmUi")


def test_upload_token_for_a_key_reproduces_the_vector_and_equals_the_sdks(
    frozen_sdk_clock: None,
) -> None:
    expected = (
        f"{AK}:JRApKWkZWD6zZM10bJQGrU1iWe8=:"
        "eyJzY29wZSI6Im15LWJ1Y2tldDprLmpwZyIsImRlYWRsaW5lIjoxNDUxNDkxMjAwfQ=="
    )

    assert client().upload_token("k.jpg", deadline=DEADLINE) == expected
    assert qiniu.Auth(AK, SK).upload_token("my-bucket", "k.jpg") == expected


def test_simulator_accepts_a_good_upload_token_and_refuses_tampered_expired_and_foreign_ones() -> (
    None
):
    token = client().upload_token("k.jpg", deadline=DEADLINE)
    access_key, signature, encoded = token.split(":")

    assert simulator().check_upload_token(token)["scope"] == "my-bucket:k.jpg"
    forged = sandbox.b64url(b'{"scope":"my-bucket","deadline":1451491200}')
    cases = {
        f"{access_key}:{signature}:{forged}": (401, "bad token"),
        f"OTHER_KEY:{signature}:{encoded}": (401, "bad token"),
        None: (401, "token not specified"),
    }
    for bad, expected in cases.items():
        with pytest.raises(QiniuError) as refused:
            simulator().check_upload_token(bad)
        assert (refused.value.status, refused.value.error) == expected
    with pytest.raises(QiniuError) as expired:
        simulator(now=DEADLINE + 1).check_upload_token(token)
    assert (expired.value.status, expired.value.error) == (401, "expired token")
    with pytest.raises(QiniuError) as foreign:
        simulator(bucket="another-bucket").check_upload_token(token)
    assert (foreign.value.status, foreign.value.error) == (631, "no such bucket")


# -- download URLs ------------------------------------------------------------------------


def test_private_download_url_reproduces_the_vector_and_equals_the_sdks(
    frozen_sdk_clock: None,
) -> None:
    expected = (
        "http://developer.qiniu.com/resource/flower.jpg"
        f"?e={DEADLINE}&token={AK}:v24Hqj-H6oM96pmWC-QgDm5JLbk="
    )

    assert client(private=True).download_url("resource/flower.jpg", deadline=DEADLINE) == expected
    sdk = qiniu.Auth(AK, SK).private_download_url(
        "http://developer.qiniu.com/resource/flower.jpg", expires=3600
    )
    assert sdk == expected


def test_private_url_with_a_fop_signs_the_query_and_appends_e_with_an_ampersand() -> None:
    url = client(private=True).download_url("v.mp4", "avinfo", deadline=DEADLINE)

    base, _, token = url.partition("&token=")
    assert base == f"http://developer.qiniu.com/v.mp4?avinfo&e={DEADLINE}"
    simulator().check_download(base, token, str(DEADLINE))


def test_public_download_url_is_not_signed() -> None:
    assert client().download_url("a b/c.jpg", "imageInfo") == (
        "http://developer.qiniu.com/a%20b/c.jpg?imageInfo"
    )


def test_non_ascii_key_is_utf8_escaped_before_signing_and_verifies() -> None:
    url = client(private=True).download_url("视频/封面 1.jpg", deadline=DEADLINE)

    base, _, token = url.partition("&token=")
    assert base.startswith(
        "http://developer.qiniu.com/%E8%A7%86%E9%A2%91/%E5%B0%81%E9%9D%A2%201.jpg?"
    )
    assert base.isascii()
    simulator().check_download(base, token, str(DEADLINE))
    with pytest.raises(QiniuError) as expired:
        simulator(now=DEADLINE + 1).check_download(base, token, str(DEADLINE))
    assert (expired.value.status, expired.value.error) == (401, "token out of date")


# -- etag ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"", "Fto5o-5ea0sNMlW_75VgGJCv2AcJ"),
        (b"hello", "Fqr0xh3cxeii2r7eDztILNmuqUNN"),
        (bytes(5 * MiB), "lrMhp7oU8rzWSRlmUeGJ73Q2pVa-"),
    ],
    ids=["empty", "hello", "5MiB-zeros"],
)
def test_etag_reproduces_the_vectors_in_client_and_simulator(data: bytes, expected: str) -> None:
    assert qiniu_etag(data) == expected
    assert qiniu_etag(io.BytesIO(data)) == expected
    assert sandbox.qiniu_etag(data) == expected


@pytest.mark.parametrize("size", [4 * MiB, 4 * MiB + 1, 8 * MiB + 7])
def test_etag_agrees_with_the_sdk_at_block_boundaries(size: int) -> None:
    data = os.urandom(size)

    expected = etag_stream(io.BytesIO(data))
    assert qiniu_etag(data) == expected
    assert sandbox.qiniu_etag(data) == expected
