"""The official ``wechatpy`` SDK, unchanged, against the WeChat simulator.

A client no one here wrote must get the answers (and the errors) it would get
from WeChat. Its requests go to ``https://api.weixin.qq.com`` (the token URL is
hard-coded in the SDK); a transport adapter on its session sends them to the
simulator on loopback instead, so not one line of the SDK is changed.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from importlib import resources
from typing import Any

import httpx
import pytest
import requests
from wechatpy import WeChatClient
from wechatpy.exceptions import APILimitedException, WeChatClientException

from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.wechat import create_wechat_app

APPID, SECRET = "wx5a1d2b3c4d5e6f70", "0123456789abcdef0123456789abcdef"
OPENID = "oSandboxUser0000000000000001"
WECHAT = "https://api.weixin.qq.com"


class ToSimulator(requests.adapters.HTTPAdapter):
    """Sends what the SDK addresses to WeChat to the simulator instead."""

    def __init__(self, base_url: str) -> None:
        super().__init__()
        self.base_url = base_url

    def send(self, request: requests.PreparedRequest, **kwargs: Any) -> requests.Response:
        assert request.url is not None and request.url.startswith(WECHAT)
        request.url = self.base_url + request.url.removeprefix(WECHAT)
        return super().send(request, **kwargs)


@pytest.fixture()
def sim_url() -> Iterator[str]:
    app = create_wechat_app(appid=APPID, secret=SECRET, templates={"TPL-ORDER": ["first"]})
    with ServerThread(app) as server:
        yield server.url


def sdk_client(sim_url: str, secret: str = SECRET, appid: str = APPID) -> WeChatClient:
    client = WeChatClient(appid, secret, timeout=10)
    client._http.mount(WECHAT, ToSimulator(sim_url))  # the SDK's requests.Session
    return client


def ledger(sim_url: str, path: str) -> list[dict[str, Any]]:
    entries = httpx.get(f"{sim_url}/_sandbox/requests", timeout=10).json()
    return [entry for entry in entries if entry["path"] == path]


def test_token(sim_url: str) -> None:
    client = sdk_client(sim_url)
    answer = client.fetch_access_token()
    assert answer["expires_in"] == 7200
    assert client.access_token == answer["access_token"]
    [call] = ledger(sim_url, "/cgi-bin/token")
    assert call["method"] == "GET" and "secret=***" in call["query"]


def test_text_send(sim_url: str) -> None:
    client = sdk_client(sim_url)
    assert client.message.send_text(OPENID, "你好，世界") == {"errcode": 0, "errmsg": "ok"}
    [call] = ledger(sim_url, "/cgi-bin/message/custom/send")
    assert call["json"] == {"touser": OPENID, "msgtype": "text", "text": {"content": "你好，世界"}}


def test_media_upload_and_image_send(sim_url: str) -> None:
    client = sdk_client(sim_url)
    jpeg = resources.files("dispatcher.sandbox.assets").joinpath("demo.jpg").read_bytes()
    media = io.BytesIO(jpeg)
    media.name = "demo.jpg"  # requests names the multipart file after it
    answer = client.media.upload("image", media)
    assert answer["type"] == "image" and answer["media_id"]
    assert client.message.send_image(OPENID, answer["media_id"])["errcode"] == 0


def test_media_upload_errors_reach_the_sdk(sim_url: str) -> None:
    client = sdk_client(sim_url)
    media = io.BytesIO(b"GIF89a" + bytes(30))
    media.name = "anim.gif"
    with pytest.raises(WeChatClientException) as raised:
        client.media.upload("image", media)
    assert raised.value.errcode == 40005


def test_template_send(sim_url: str) -> None:
    client = sdk_client(sim_url)
    data = {"first": {"value": "您的订单已发货", "color": "#173177"}}
    answer = client.message.send_template(OPENID, "TPL-ORDER", data, url="https://e.x/o/1")
    assert answer["errcode"] == 0 and isinstance(answer["msgid"], int)
    with pytest.raises(WeChatClientException) as raised:
        client.message.send_template(OPENID, "TPL-OTHER", data)
    assert raised.value.errcode == 40037


@pytest.mark.parametrize(
    ("appid", "secret", "code", "text"),
    [
        (APPID, "not-the-secret", 40125, "invalid appsecret"),
        ("wx0000000000000000", SECRET, 40013, "invalid appid"),
    ],
)
def test_bad_credentials_give_wechats_errors(
    sim_url: str, appid: str, secret: str, code: int, text: str
) -> None:
    client = sdk_client(sim_url, secret=secret, appid=appid)
    with pytest.raises(WeChatClientException) as raised:
        client.message.send_text(OPENID, "hi")
    assert raised.value.errcode == code
    assert raised.value.errmsg.startswith(text) and " rid: " in raised.value.errmsg
    # One token request, refused; nothing was sent.
    assert len(ledger(sim_url, "/cgi-bin/token")) == 1
    assert ledger(sim_url, "/cgi-bin/message/custom/send") == []


def test_sdk_refetches_a_revoked_token_and_resends(sim_url: str) -> None:
    client = sdk_client(sim_url)
    first = client.access_token
    httpx.post(f"{sim_url}/_sandbox/wechat/revoke-tokens", timeout=10).raise_for_status()
    assert client.message.send_text(OPENID, "again")["errcode"] == 0
    assert client.access_token != first
    sends = ledger(sim_url, "/cgi-bin/message/custom/send")
    assert len(sends) == 2 and len(ledger(sim_url, "/cgi-bin/token")) == 2


def test_daily_quota_is_the_sdks_api_limit(sim_url: str) -> None:
    httpx.put(
        f"{sim_url}/_sandbox/wechat/quotas", json={"daily": {"custom_send": 0}}, timeout=10
    ).raise_for_status()
    with pytest.raises(APILimitedException) as raised:
        sdk_client(sim_url).message.send_text(OPENID, "hi")
    assert raised.value.errcode == 45009
    assert json.loads(raised.value.response.content)["errcode"] == 45009
