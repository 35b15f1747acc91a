"""The WeChat simulator over real HTTP: tokens, sends, media, windows, quotas and receipts."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable, Iterator
from importlib import resources
from typing import Any
from xml.etree import ElementTree

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.wechat import create_wechat_app
from dispatcher.sandbox.wechat_state import mp3_duration

APPID, SECRET = "wx5a1d2b3c4d5e6f70", "0123456789abcdef0123456789abcdef"
OPENID = "oSandboxUser0000000000000001"
OTHER_OPENID = "oSandboxUser0000000000000002"
TEMPLATES = {"TPL-ORDER": ["first", "remark"], "TPL-FREE": []}
CREDENTIALS = {"grant_type": "client_credential", "appid": APPID, "secret": SECRET}
START = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC, 06:13:20 in Beijing


class FakeClock:
    """A wall clock the test moves by hand; read from the server thread."""

    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def asset(name: str) -> bytes:
    return resources.files("dispatcher.sandbox.assets").joinpath(name).read_bytes()


def mp3(seconds: float) -> bytes:
    """MPEG-1 Layer III frames at 128 kbit/s, 44.1 kHz: 417 bytes, 1152 samples each."""
    frames = round(seconds * 44100 / 1152)
    return (b"\xff\xfb\x90\x00" + bytes(413)) * frames


class Sim:
    def __init__(self, server: ServerThread, clock: FakeClock, app: FastAPI) -> None:
        self.url = server.url
        self.clock = clock
        self.app = app
        self.http = httpx.Client(base_url=server.url, timeout=10)

    def token(self) -> str:
        return str(self.http.post("/cgi-bin/stable_token", json=CREDENTIALS).json()["access_token"])

    def call(self, path: str, body: Any, token: str | None = None) -> dict[str, Any]:
        content = body if isinstance(body, bytes) else json.dumps(body, ensure_ascii=False).encode()
        response = self.http.post(
            path, params={"access_token": token or self.token()}, content=content
        )
        assert response.status_code == 200
        return dict(response.json())

    def text(self, openid: str = OPENID, content: str = "hi", token: str | None = None) -> int:
        body = {"touser": openid, "msgtype": "text", "text": {"content": content}}
        return int(self.call("/cgi-bin/message/custom/send", body, token)["errcode"])

    def upload(
        self, media_type: str, filename: str, data: bytes, token: str | None = None
    ) -> dict[str, Any]:
        response = self.http.post(
            "/cgi-bin/media/upload",
            params={"access_token": token or self.token(), "type": media_type},
            files={"media": (filename, data)},
        )
        assert response.status_code == 200
        return dict(response.json())

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, f"/_sandbox/wechat/{path}", json=body)
        response.raise_for_status()
        return response.json()


StartSim = Callable[..., Sim]


@pytest.fixture()
def start_sim() -> Iterator[StartSim]:
    servers: list[tuple[ServerThread, Sim]] = []

    def start(**options: Any) -> Sim:
        clock = FakeClock()
        app = create_wechat_app(
            appid=APPID, secret=SECRET, templates=TEMPLATES, clock=clock, **options
        )
        server = ServerThread(app).start()
        sim = Sim(server, clock, app)
        servers.append((server, sim))
        return sim

    yield start
    for server, sim in servers:
        sim.http.close()
        server.stop()


@pytest.fixture()
def sim(start_sim: StartSim) -> Sim:
    return start_sim()


def errcode(answer: dict[str, Any]) -> int:
    return int(answer["errcode"])


# -- tokens -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "code"),
    [
        ({**CREDENTIALS, "secret": "wrong"}, 40125),
        ({**CREDENTIALS, "appid": "wx0000000000000000"}, 40013),
        ({**CREDENTIALS, "grant_type": "password"}, 40002),
        ({"grant_type": "client_credential", "appid": APPID}, 41004),
        ({"grant_type": "client_credential", "secret": SECRET}, 41002),
    ],
)
def test_token_errors_are_http_200_with_errcode_and_suffixed_errmsg(
    sim: Sim, params: dict[str, str], code: int
) -> None:
    for response in (
        sim.http.get("/cgi-bin/token", params=params),
        sim.http.post("/cgi-bin/stable_token", json=params),
    ):
        assert response.status_code == 200
        body = response.json()
        assert body["errcode"] == code
        assert " hint: [" in body["errmsg"] and " rid: " in body["errmsg"]
        assert "access_token" not in body


def test_classic_token_replaces_the_previous_one_after_the_overlap(start_sim: StartSim) -> None:
    sim = start_sim(token_overlap=300)
    first = sim.http.get("/cgi-bin/token", params=CREDENTIALS).json()
    assert first["expires_in"] == 7200
    second = sim.http.get("/cgi-bin/token", params=CREDENTIALS).json()["access_token"]
    assert second != first["access_token"]
    assert sim.text(token=first["access_token"]) == 0  # both work during the overlap
    sim.clock.advance(301)
    assert sim.text(token=first["access_token"]) == 40001
    assert sim.text(token=second) == 0
    sim.clock.advance(7200)
    assert sim.text(token=second) == 42001


def test_stable_token_is_stable_and_renewed_only_in_its_last_five_minutes(sim: Sim) -> None:
    first = sim.http.post("/cgi-bin/stable_token", json=CREDENTIALS).json()
    sim.clock.advance(1000)
    again = sim.http.post("/cgi-bin/stable_token", json=CREDENTIALS).json()
    assert again == {"access_token": first["access_token"], "expires_in": 6200}
    sim.clock.advance(6000)  # 200 s left: normal mode hands out a new token
    renewed = sim.http.post("/cgi-bin/stable_token", json=CREDENTIALS).json()
    assert renewed["access_token"] != first["access_token"]
    assert renewed["expires_in"] == 7200
    assert sim.text(token=first["access_token"]) == 0  # the old one lives to its expiry
    sim.clock.advance(200)
    assert sim.text(token=first["access_token"]) == 42001


def test_stable_token_force_refresh_invalidates_at_once_and_keeps_its_limits(sim: Sim) -> None:
    old = sim.token()
    forced = {**CREDENTIALS, "force_refresh": True}
    new = sim.http.post("/cgi-bin/stable_token", json=forced).json()["access_token"]
    assert new != old
    assert sim.text(token=old) == 40001
    # Within 30 s of the last forced refresh: the same token, no refresh.
    sim.clock.advance(10)
    assert sim.http.post("/cgi-bin/stable_token", json=forced).json()["access_token"] == new
    for _ in range(19):
        sim.clock.advance(31)
        assert "access_token" in sim.http.post("/cgi-bin/stable_token", json=forced).json()
    sim.clock.advance(31)
    assert errcode(sim.http.post("/cgi-bin/stable_token", json=forced).json()) == 45009
    assert sim.control("GET", "quotas")["force_refresh"] == {"limit": 20, "used": 20}
    sim.clock.advance(86400)  # a new day in Beijing
    assert "access_token" in sim.http.post("/cgi-bin/stable_token", json=forced).json()


def test_stable_and_classic_tokens_do_not_disturb_each_other(sim: Sim) -> None:
    stable = sim.token()
    sim.http.get("/cgi-bin/token", params=CREDENTIALS)
    sim.clock.advance(400)
    sim.http.get("/cgi-bin/token", params=CREDENTIALS)
    assert sim.text(token=stable) == 0


@pytest.mark.parametrize(
    ("token", "code"),
    [("", 41001), ("not a token!", 40014), ("A" * 128, 40001)],
)
def test_bad_access_tokens(sim: Sim, token: str, code: int) -> None:
    body = {"touser": OPENID, "msgtype": "text", "text": {"content": "x"}}
    response = sim.http.post(
        "/cgi-bin/message/custom/send", params={"access_token": token}, json=body
    )
    assert response.json()["errcode"] == code


def test_revoke_and_expire_controls(sim: Sim) -> None:
    token = sim.token()
    assert sim.control("POST", "revoke-tokens") == {"revoked": 1}
    assert sim.text(token=token) == 40001
    fresh = sim.token()
    assert fresh != token and sim.text(token=fresh) == 0
    sim.control("POST", "expire-tokens")
    assert sim.text(token=fresh) == 42001


def test_wrong_method_answers_like_wechat(sim: Sim) -> None:
    assert sim.http.get("/cgi-bin/stable_token").json()["errcode"] == 43002
    assert sim.http.post("/cgi-bin/token").json()["errcode"] == 43001


# -- customer-service messages --------------------------------------------------


def test_text_must_be_raw_utf8_not_unicode_escapes(sim: Sim) -> None:
    token = sim.token()
    escaped = json.dumps(
        {"touser": OPENID, "msgtype": "text", "text": {"content": "你好"}}
    ).encode()
    assert b"\\u4f60" in escaped
    assert errcode(sim.call("/cgi-bin/message/custom/send", escaped, token)) == 40033
    assert sim.text(content="你好", token=token) == 0
    # A literal backslash followed by "u" is not an escape.
    assert sim.text(content="C:\\user", token=token) == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"touser": OPENID, "msgtype": "location", "location": {}}, 40008),
        ({"touser": OPENID, "msgtype": "text", "text": {"content": ""}}, 44004),
        ({"touser": OPENID, "msgtype": "text", "text": {"content": "字" * 683}}, 45002),
        ({"touser": "someone", "msgtype": "text", "text": {"content": "x"}}, 40003),
        ({"touser": OPENID, "msgtype": "image", "image": {}}, 41006),
        ({"touser": OPENID, "msgtype": "image", "image": {"media_id": "nope"}}, 40007),
        ({"touser": OPENID, "msgtype": "news", "news": {"articles": []}}, 44003),
        (
            {
                "touser": OPENID,
                "msgtype": "news",
                "news": {"articles": [{"title": "a"}, {"title": "b"}]},
            },
            45008,
        ),
        (b"", 44002),
        (b"{not json", 47001),
    ],
)
def test_custom_send_refusals(sim: Sim, body: Any, code: int) -> None:
    assert errcode(sim.call("/cgi-bin/message/custom/send", body)) == code


def test_text_limit_counts_utf8_bytes(sim: Sim) -> None:
    assert sim.text(content="字" * 682) == 0  # 2046 bytes


def test_news_with_one_article_is_accepted(sim: Sim) -> None:
    article = {"title": "T", "description": "D", "url": "https://e.x/a", "picurl": "https://e.x/p"}
    body = {"touser": OPENID, "msgtype": "news", "news": {"articles": [article]}}
    assert sim.call("/cgi-bin/message/custom/send", body) == {"errcode": 0, "errmsg": "ok"}


def test_window_counts_after_a_user_message(sim: Sim) -> None:
    token = sim.token()
    sim.control("POST", f"users/{OPENID}/interaction", {"trigger": "message"})
    assert [sim.text(token=token) for _ in range(6)] == [0, 0, 0, 0, 0, 45047]
    sim.control("POST", f"users/{OPENID}/interaction", {"trigger": "message"})
    assert sim.text(token=token) == 0
    sim.clock.advance(48 * 3600)
    token = sim.token()
    assert sim.text(token=token) == 45015
    assert sim.text(OTHER_OPENID, token=token) == 0  # never configured: no limits


def test_window_after_a_click_is_three_messages_within_a_minute(sim: Sim) -> None:
    token = sim.token()
    sim.control("POST", f"users/{OPENID}/interaction", {"trigger": "click"})
    assert [sim.text(token=token) for _ in range(4)] == [0, 0, 0, 45047]
    sim.control("POST", f"users/{OPENID}/interaction", {"trigger": "scan"})
    sim.clock.advance(61)
    assert sim.text(token=token) == 45015


def test_user_states_set_through_the_control_api(sim: Sim) -> None:
    token = sim.token()
    sim.control("PUT", f"users/{OPENID}", {"subscribed": False})
    assert sim.text(token=token) == 43004
    sim.control("PUT", f"users/{OPENID}", {"subscribed": True, "blacklisted": True})
    assert sim.text(token=token) == 43019
    state = sim.control("PUT", f"users/{OPENID}", {"blacklisted": False, "remaining": 1})
    assert state["remaining"] == 1 and state["subscribed"] is True
    assert [sim.text(token=token), sim.text(token=token)] == [0, 45047]
    bad = sim.http.put(f"/_sandbox/wechat/users/{OPENID}", json={"remaining": -1})
    assert bad.status_code == 422


def test_daily_quota_and_reset_at_beijing_midnight(sim: Sim) -> None:
    token = sim.token()
    sim.control("PUT", "quotas", {"daily": {"custom_send": 2}})
    assert [sim.text(token=token) for _ in range(3)] == [0, 0, 45009]
    # START is 06:13:20 in Beijing: 17 h 46 min 40 s to midnight.
    sim.clock.advance(17 * 3600 + 46 * 60 + 39)
    assert sim.text(token=sim.token()) == 45009
    sim.clock.advance(2)
    assert sim.text(token=sim.token()) == 0


def test_per_minute_frequency(sim: Sim) -> None:
    token = sim.token()
    sim.control("PUT", "quotas", {"per_minute": {"custom_send": 2}})
    assert [sim.text(token=token) for _ in range(3)] == [0, 0, 45011]
    sim.clock.advance(60)
    assert sim.text(token=token) == 0
    unknown = sim.http.put("/_sandbox/wechat/quotas", json={"daily": {"nope": 1}})
    assert unknown.status_code == 422


# -- media ------------------------------------------------------------------------


def test_upload_image_and_send_it(sim: Sim) -> None:
    token = sim.token()
    answer = sim.upload("image", "photo.jpg", asset("demo.jpg"), token)
    assert answer["type"] == "image" and answer["created_at"] == int(START)
    assert len(answer["media_id"]) >= 32
    body = {"touser": OPENID, "msgtype": "image", "image": {"media_id": answer["media_id"]}}
    assert errcode(sim.call("/cgi-bin/message/custom/send", body, token)) == 0
    # The same id is not a voice.
    body = {"touser": OPENID, "msgtype": "voice", "voice": {"media_id": answer["media_id"]}}
    assert errcode(sim.call("/cgi-bin/message/custom/send", body, token)) == 40007


def test_media_ids_expire_after_three_days(sim: Sim) -> None:
    media_id = sim.upload("image", "a.jpg", asset("demo.jpg"))["media_id"]
    body = {"touser": OPENID, "msgtype": "image", "image": {"media_id": media_id}}
    sim.clock.advance(3 * 86400 - 1)
    assert errcode(sim.call("/cgi-bin/message/custom/send", body)) == 0
    sim.clock.advance(1)
    assert errcode(sim.call("/cgi-bin/message/custom/send", body)) == 40007


def test_expire_media_control(sim: Sim) -> None:
    media_id = sim.upload("voice", "a.amr", asset("demo.amr"))["media_id"]
    assert sim.control("POST", "expire-media") == {"expired": 1}
    body = {"touser": OPENID, "msgtype": "voice", "voice": {"media_id": media_id}}
    assert errcode(sim.call("/cgi-bin/message/custom/send", body)) == 40007


def test_video_with_thumb(sim: Sim) -> None:
    token = sim.token()
    video = sim.upload("video", "clip.mp4", asset("demo.mp4"), token)["media_id"]
    thumb = sim.upload("thumb", "t.jpg", asset("demo.jpg"), token)["media_id"]
    content = {"media_id": video, "thumb_media_id": thumb, "title": "T", "description": "D"}
    body = {"touser": OPENID, "msgtype": "video", "video": content}
    assert errcode(sim.call("/cgi-bin/message/custom/send", body, token)) == 0
    body["video"] = {"media_id": video}  # thumb_media_id is optional
    assert errcode(sim.call("/cgi-bin/message/custom/send", body, token)) == 0
    body["video"] = {"media_id": video, "thumb_media_id": video}
    assert errcode(sim.call("/cgi-bin/message/custom/send", body, token)) == 40007


def test_mp3_duration_walks_the_frames() -> None:
    assert mp3_duration(mp3(30)) == pytest.approx(30, abs=0.03)
    id3 = b"ID3\x04\x00\x00\x00\x00\x00\x0a" + bytes(10)
    assert mp3_duration(id3 + mp3(2)) == pytest.approx(2, abs=0.03)
    assert mp3_duration(b"not audio at all") is None


@pytest.mark.parametrize(
    ("media_type", "filename", "data", "code"),
    [
        ("image", "a.gif", b"GIF89a\x10\x00\x10\x00" + bytes(20), 40005),
        ("image", "a.png", "demo.jpg", 40005),  # the name says PNG, the bytes JPEG
        ("image", "big.jpg", "demo.jpg+2MiB", 40009),
        ("voice", "a.wav", "demo.amr", 40005),
        ("voice", "long.mp3", mp3(61), 40010),
        ("voice", "big.amr", "demo.amr+2MiB", 40010),
        ("video", "clip.avi", "demo.mp4", 40005),
        ("video", "big.mp4", "demo.mp4+10MiB", 40011),
        ("thumb", "t.png", "demo.jpg", 40005),
        ("thumb", "t.jpg", "demo.jpg+64KiB", 40012),
        ("file", "a.jpg", "demo.jpg", 40004),
    ],
)
def test_upload_refusals(
    sim: Sim, media_type: str, filename: str, data: bytes | str, code: int
) -> None:
    if isinstance(data, str):
        name, _, padding = data.partition("+")
        extra = {"": 0, "2MiB": 2 * 1024 * 1024, "10MiB": 10 * 1024 * 1024, "64KiB": 65536}
        data = asset(name) + bytes(extra[padding])
        if name == "demo.amr" and padding:
            data = asset(name) + b"\x3c" * extra[padding]  # more (empty) AMR frames
    assert errcode(sim.upload(media_type, filename, data)) == code


def test_upload_without_the_media_part(sim: Sim) -> None:
    response = sim.http.post(
        "/cgi-bin/media/upload",
        params={"access_token": sim.token(), "type": "image"},
        files={"file": ("a.jpg", asset("demo.jpg"))},
    )
    assert response.json()["errcode"] == 41005


def test_upload_accepts_every_allowed_format(sim: Sim) -> None:
    token = sim.token()
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes.fromhex("0000001000000010080200000000")
    assert sim.upload("image", "a.png", png, token)["type"] == "image"
    assert sim.upload("voice", "a.mp3", mp3(59), token)["type"] == "voice"
    assert sim.upload("voice", "a.amr", asset("demo.amr"), token)["type"] == "voice"
    assert sim.upload("video", "a.mp4", asset("demo.mp4"), token)["type"] == "video"
    assert sim.control("GET", "stats")["uploads"] == 4
    media = sim.control("GET", "media")
    assert sorted(item["type"] for item in media.values()) == ["image", "video", "voice", "voice"]


# -- template messages ---------------------------------------------------------------


def template(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "touser": OPENID,
        "template_id": "TPL-ORDER",
        "data": {
            "first": {"value": "您的订单已发货", "color": "#173177"},
            "remark": {"value": "谢谢"},
        },
    }
    body.update(changes)
    return body


def test_template_send_returns_a_msgid_and_needs_no_window(sim: Sim) -> None:
    sim.control("PUT", f"users/{OPENID}", {"window_until": START - 1})
    answer = sim.call("/cgi-bin/message/template/send", template(url="https://e.x/o/1"))
    assert answer["errcode"] == 0 and answer["errmsg"] == "ok"
    assert isinstance(answer["msgid"], int)


@pytest.mark.parametrize(
    ("changes", "code"),
    [
        ({"template_id": "TPL-UNKNOWN"}, 40037),
        ({"data": {"first": {"value": "x"}}}, 47003),  # remark is required
        ({"data": {"first": "x", "remark": {"value": "y"}}}, 47003),
        ({"data": []}, 47001),
        ({"touser": "x"}, 40003),
        ({"client_msg_id": 7}, 47001),
    ],
)
def test_template_refusals(sim: Sim, changes: dict[str, Any], code: int) -> None:
    assert errcode(sim.call("/cgi-bin/message/template/send", template(**changes))) == code


def test_template_users_who_left_or_refuse(sim: Sim) -> None:
    sim.control("PUT", f"users/{OPENID}", {"refuses_templates": True})
    assert errcode(sim.call("/cgi-bin/message/template/send", template())) == 43101
    sim.control("PUT", f"users/{OPENID}", {"subscribed": False})
    assert errcode(sim.call("/cgi-bin/message/template/send", template())) == 43004


def test_client_msg_id_sends_once_within_ten_minutes(sim: Sim) -> None:
    token = sim.token()
    first = sim.call("/cgi-bin/message/template/send", template(client_msg_id="m0-1"), token)
    again = sim.call("/cgi-bin/message/template/send", template(client_msg_id="m0-1"), token)
    assert again["msgid"] == first["msgid"]
    other = sim.call(
        "/cgi-bin/message/template/send",
        template(client_msg_id="m0-1", touser=OTHER_OPENID),
        token,
    )
    assert other["msgid"] != first["msgid"]  # dedupe is per openid
    stats = sim.control("GET", "stats")
    assert stats["template_sent"] == 2 and stats["duplicates"] == 1
    sim.clock.advance(600)
    later = sim.call("/cgi-bin/message/template/send", template(client_msg_id="m0-1"), token)
    assert later["msgid"] not in (first["msgid"], other["msgid"])


# -- receipts, ledger, faults ----------------------------------------------------------


@pytest.fixture()
def receiver() -> Iterator[tuple[str, list[dict[str, Any]], threading.Event]]:
    pushes: list[dict[str, Any]] = []
    arrived = threading.Event()
    app = FastAPI()

    @app.post("/wechat/events")
    async def events(request: Request) -> Response:
        pushes.append({"query": dict(request.query_params), "body": await request.body()})
        arrived.set()
        return Response("success")

    with ServerThread(app) as server:
        yield f"{server.url}/wechat/events", pushes, arrived


def test_template_receipts_are_pushed_signed(
    start_sim: StartSim, receiver: tuple[str, list[dict[str, Any]], threading.Event]
) -> None:
    url, pushes, arrived = receiver
    sim = start_sim(receipt_url=url, receipt_token="server-token", original_id="gh_0123456789ab")
    sim.control("PUT", f"users/{OPENID}", {"receipt_status": "failed:user block"})
    msgid = sim.call("/cgi-bin/message/template/send", template())["msgid"]
    assert arrived.wait(10)
    [push] = pushes
    query = push["query"]
    expected = hashlib.sha1(
        "".join(sorted(["server-token", query["timestamp"], query["nonce"]])).encode()
    ).hexdigest()
    assert query["signature"] == expected and query["openid"] == OPENID
    event = {child.tag: child.text for child in ElementTree.fromstring(push["body"])}
    assert event == {
        "ToUserName": "gh_0123456789ab",
        "FromUserName": OPENID,
        "CreateTime": str(int(START)),
        "MsgType": "event",
        "Event": "TEMPLATESENDJOBFINISH",
        "MsgID": str(msgid),
        "Status": "failed:user block",
    }
    deadline = time.monotonic() + 10
    while sim.control("GET", "stats")["receipts_pushed"] != 1:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_a_receipt_can_be_pushed_on_demand(
    start_sim: StartSim, receiver: tuple[str, list[dict[str, Any]], threading.Event]
) -> None:
    url, pushes, _ = receiver
    sim = start_sim(receipt_url=url, receipt_token="server-token")
    answer = sim.control(
        "POST", "receipts", {"openid": OPENID, "msgid": 42, "status": "failed: system failed"}
    )
    assert answer == {"pushed": True}
    assert b"<Status><![CDATA[failed: system failed]]></Status>" in pushes[0]["body"]


def test_ledger_masks_the_secret_and_tokens(sim: Sim) -> None:
    token = sim.token()
    sim.http.get("/cgi-bin/token", params=CREDENTIALS)
    sim.text(token=token)
    ledger = sim.http.get("/_sandbox/requests").json()
    text = json.dumps(ledger)
    assert SECRET not in text and token not in text
    stable, classic, send = ledger
    assert stable["json"]["secret"] == "***" and stable["json"]["appid"] == APPID
    assert "secret=***" in classic["query"]
    assert send["query"] == "access_token=***"
    assert send["json"]["text"] == {"content": "hi"}


def test_fault_rules_apply(sim: Sim) -> None:
    sim.http.post(
        "/_sandbox/faults",
        json={"path": "custom/send", "status": 200, "body": {"errcode": -1}, "times": 1},
    ).raise_for_status()
    token = sim.token()
    assert sim.text(token=token) == -1
    assert sim.text(token=token) == 0


def test_the_sandbox_serves_the_configured_app_and_leaves_it_out_when_unconfigured() -> None:
    from fastapi.testclient import TestClient

    from dispatcher.config import Settings
    from dispatcher.errors import ConfigurationError
    from dispatcher.sandbox.skeleton import simulators
    from dispatcher.sandbox.wechat import create_wechat_app_from_settings

    [wechat] = [sim for sim in simulators() if sim.name == "WeChat"]
    assert (wechat.default_port, wechat.optional) == (9103, True)
    with pytest.raises(ConfigurationError, match="DISPATCHER_WECHAT_APPID"):
        wechat.from_settings(Settings())
    settings = Settings(
        wechat_appid="wx0a1b2c3d4e5f6a7b",
        wechat_secret="s" * 32,
        wechat_templates={"1001": "TPL-ORDER"},
    )
    client = TestClient(create_wechat_app_from_settings(settings))
    token = client.get(
        "/cgi-bin/token",
        params={
            "grant_type": "client_credential",
            "appid": "wx0a1b2c3d4e5f6a7b",
            "secret": "s" * 32,
        },
    ).json()["access_token"]
    send = "/cgi-bin/message/template/send"
    body = {"touser": "o" + "x" * 27, "data": {"first": {"value": "v"}}}
    known = client.post(
        send, params={"access_token": token}, json={**body, "template_id": "TPL-ORDER"}
    )
    unknown = client.post(
        send, params={"access_token": token}, json={**body, "template_id": "TPL-X"}
    )
    assert known.json()["errcode"] == 0 and unknown.json()["errcode"] == 40037
