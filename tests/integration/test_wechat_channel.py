"""One WeChat app's sender against the WeChat and Qiniu simulators over HTTP, with a real Redis
(the whole pipeline with worker processes: test_wechat_pipeline.py)."""

from __future__ import annotations

import json
import multiprocessing
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from dispatcher import keys
from dispatcher.channels.wechat_config import WeChatConfig, WindowFallback
from dispatcher.channels.wechat_outcome import WeChatPaused
from dispatcher.channels.wechat_send import WeChatSender
from dispatcher.errors import MediaError, ProviderError
from dispatcher.media.qiniu import QiniuClient
from dispatcher.media.resolve import resolve_media
from dispatcher.models import ImageInfo, Message, VideoInfo, VoiceInfo, parse_message
from dispatcher.sandbox.qiniu import seed_demo_objects
from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.wechat import create_wechat_app
from tests.conftest import QINIU_ACCESS_KEY, QINIU_BUCKET, QINIU_SECRET_KEY, Simulator

pytestmark = pytest.mark.integration

SECRET = "0123456789abcdef0123456789abcdef"
OPENID = "oSandboxUser0000000000000001"
TEMPLATES = {"1001": "TPL-ORDER", "1002": "TPL-MISSED"}


class WeChatSim(Simulator):
    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/_sandbox/wechat/{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.requests(path) if e["path"] == path]


@pytest.fixture()
def appid() -> str:
    return f"wx{uuid.uuid4().hex[:16]}"


@pytest.fixture()
def wechat(appid: str) -> Iterator[WeChatSim]:
    app = create_wechat_app(
        appid=appid, secret=SECRET, templates={"TPL-ORDER": ["first"], "TPL-MISSED": ["first"]}
    )
    with ServerThread(app) as server:
        yield WeChatSim(server.url, app)


MakeChannel = Callable[..., WeChatSender]


@pytest.fixture()
def make_channel(appid: str, wechat: WeChatSim, redis_client: redis.Redis) -> Iterator[MakeChannel]:
    channels: list[WeChatSender] = []

    def make(**options: Any) -> WeChatSender:
        config = WeChatConfig(
            appid=appid, secret=SECRET, base_url=wechat.url, templates=TEMPLATES, **options
        )
        channel = WeChatSender(config, redis_client)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        channel.close()


@pytest.fixture()
def qiniu(qiniu_sim: Simulator, redis_client: redis.Redis) -> Iterator[QiniuClient]:
    seed_demo_objects(qiniu_sim.app)
    for key in redis_client.scan_iter(match="dispatcher:media:*"):
        redis_client.delete(key)
    client = QiniuClient(
        access_key=QINIU_ACCESS_KEY,
        secret_key=QINIU_SECRET_KEY,
        bucket=QINIU_BUCKET,
        domain=qiniu_sim.url,
        up_host=qiniu_sim.url,
        rs_host=qiniu_sim.url,
    )
    yield client
    client.close()


def message(message_type: int, info: dict[str, Any], **extra: Any) -> Message:
    payload = {"messageType": message_type, "from": "svc", "to": OPENID, "messageInfo": info}
    return parse_message({**payload, **extra})


def resolved(msg: Message, qiniu: QiniuClient, redis_client: redis.Redis) -> Message:
    """What the delivery loop hands a channel: media fields filled from Qiniu."""
    info = msg.messageInfo
    assert isinstance(info, ImageInfo | VoiceInfo | VideoInfo)
    return msg.model_copy(update={"messageInfo": resolve_media(info, qiniu, redis_client)})


def uploaded_ids(wechat: WeChatSim) -> dict[str, str]:
    """media_id -> type of everything uploaded to the simulator."""
    return {media_id: item["type"] for media_id, item in wechat.control("GET", "media").items()}


def test_every_supported_type_is_sent_with_the_exact_body(
    make_channel: MakeChannel, wechat: WeChatSim, qiniu: QiniuClient, redis_client: redis.Redis,
    appid: str,
) -> None:  # fmt: skip
    channel = make_channel()
    sent = [
        channel.send("m0-text", message(1, {"textMessage": "你好，\\u4f60 \U0001f600"})),
        channel.send("m0-image", resolved(message(2, {"imageMessage": "demo.jpg"}), qiniu, redis_client)),
        channel.send("m0-voice", resolved(message(3, {"voiceMessage": "demo.amr"}), qiniu, redis_client)),
        channel.send(
            "m0-video",
            resolved(
                message(4, {"videoMessage": "demo.mp4", "thumbMessage": "demo.jpg", "title": "片"}),
                qiniu,
                redis_client,
            ),
        ),
        channel.send("m0-news", message(7, {"title": "新闻", "url": "https://e.x/n"})),
        channel.send(
            "m0-custom", message(8, {"title": "T", "url": "https://e.x/c", "picUrl": "https://e.x/p", "k": "v"})
        ),
        channel.send(
            "m0-template",
            message(9, {"textMessage": "fallback"}, ext={"template": {"templetId": 1001, "content": json.dumps({"first": "已发货", "remark": {"value": "谢谢", "color": "#173177"}}, ensure_ascii=False)}}),
        ),
    ]  # fmt: skip
    media = uploaded_ids(wechat)
    by_type = {kind: media_id for media_id, kind in media.items()}
    assert sorted(media.values()) == ["image", "thumb", "video", "voice"]
    uploads = wechat.calls("/cgi-bin/media/upload")
    assert [e["query"].split("type=")[1] for e in uploads] == ["image", "voice", "video", "thumb"]
    bodies = [e["json"] for e in wechat.calls("/cgi-bin/message/custom/send")]
    assert bodies == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "你好，\\u4f60 \U0001f600"}},
        {"touser": OPENID, "msgtype": "image", "image": {"media_id": by_type["image"]}},
        {"touser": OPENID, "msgtype": "voice", "voice": {"media_id": by_type["voice"]}},
        {
            "touser": OPENID,
            "msgtype": "video",
            "video": {"media_id": by_type["video"], "thumb_media_id": by_type["thumb"], "title": "片"},
        },
        {"touser": OPENID, "msgtype": "news", "news": {"articles": [{"title": "新闻", "url": "https://e.x/n"}]}},
        {
            "touser": OPENID,
            "msgtype": "news",
            "news": {"articles": [{"title": "T", "url": "https://e.x/c", "picurl": "https://e.x/p"}]},
        },
    ]  # fmt: skip
    [template] = [e["json"] for e in wechat.calls("/cgi-bin/message/template/send")]
    assert template == {
        "touser": OPENID,
        "template_id": "TPL-ORDER",
        "data": {"first": {"value": "已发货"}, "remark": {"value": "谢谢", "color": "#173177"}},
        "client_msg_id": "m0-template",
    }
    assert [r.provider_message_id is None for r in sent] == [True] * 6 + [False]
    msgid = sent[-1].provider_message_id
    assert msgid is not None
    assert redis_client.get(keys.wechat_template_msgid(appid, msgid)) == b"default:m0-template"
    assert wechat.control("GET", "stats")["tokens_issued"] == 1


def test_an_image_sent_twice_uploads_once(
    make_channel: MakeChannel, wechat: WeChatSim, qiniu: QiniuClient, redis_client: redis.Redis
) -> None:
    image = resolved(message(2, {"imageMessage": "demo.jpg"}), qiniu, redis_client)
    first = make_channel().send("m0-1", image)
    second = make_channel().send(
        "m0-2", image.model_copy(update={"to": "oSandboxUser0000000000000002"})
    )
    assert first.notes == ["image 'demo.jpg' uploaded to WeChat"] and second.notes == []
    assert len(wechat.calls("/cgi-bin/media/upload")) == 1
    sends = wechat.calls("/cgi-bin/message/custom/send")
    assert len(sends) == 2 and sends[0]["json"]["image"] == sends[1]["json"]["image"]


def test_expired_media_is_uploaded_again_once(
    make_channel: MakeChannel, wechat: WeChatSim, qiniu: QiniuClient, redis_client: redis.Redis
) -> None:
    channel = make_channel()
    voice = resolved(message(3, {"voiceMessage": "demo.amr"}), qiniu, redis_client)
    channel.send("m0-1", voice)
    wechat.control("POST", "expire-media")
    receipt = channel.send("m0-2", voice)
    assert "media uploaded again after errcode 40007" in receipt.notes
    assert len(wechat.calls("/cgi-bin/media/upload")) == 2
    sends = wechat.calls("/cgi-bin/message/custom/send")
    assert len(sends) == 3 and sends[1]["json"] == sends[0]["json"] != sends[2]["json"]


def test_image_over_wechats_limit_fails_without_an_upload(
    make_channel: MakeChannel, wechat: WeChatSim, qiniu_sim: Simulator, qiniu: QiniuClient,
    redis_client: redis.Redis,
) -> None:  # fmt: skip
    jpeg = qiniu_sim.app.state.qiniu.get("demo.jpg").data
    qiniu_sim.app.state.qiniu.put_bytes("big.jpg", jpeg + bytes(3 * 1024 * 1024), "image/jpeg")
    image = resolved(message(2, {"imageMessage": "big.jpg"}), qiniu, redis_client)
    with pytest.raises(MediaError) as raised:
        make_channel().send("m0-1", image)
    assert raised.value.code == "media_too_large" and not raised.value.retryable
    assert wechat.calls("/cgi-bin/media/upload") == []


def test_outside_the_window_without_fallback_fails_with_the_wechat_code(
    make_channel: MakeChannel, wechat: WeChatSim
) -> None:
    wechat.control("PUT", f"users/{OPENID}", {"window_until": 1.0})
    with pytest.raises(ProviderError) as raised:
        make_channel().send("m0-1", message(1, {"textMessage": "在吗"}))
    assert raised.value.code == "wechat_45015" and not raised.value.retryable
    assert wechat.calls("/cgi-bin/message/template/send") == []


def test_outside_the_window_with_fallback_sends_the_template(
    make_channel: MakeChannel, wechat: WeChatSim, redis_client: redis.Redis
) -> None:
    wechat.control("PUT", f"users/{OPENID}", {"remaining": 0})
    fallback = WindowFallback(template_id="TPL-MISSED", data={"first": "新消息：{text}"})
    receipt = make_channel(window_fallback=fallback).send(
        "m0-1", message(1, {"textMessage": "在吗"})
    )
    assert receipt.provider_message_id is not None
    assert receipt.notes == [
        "customer-service message refused with errcode 45047 (48-hour window); "
        "sent as template TPL-MISSED instead"
    ]
    [template] = [e["json"] for e in wechat.calls("/cgi-bin/message/template/send")]
    assert template == {
        "touser": OPENID,
        "template_id": "TPL-MISSED",
        "data": {"first": {"value": "新消息：在吗"}},
        "client_msg_id": "m0-1",
    }


def test_daily_quota_pauses_sends_without_calling_wechat(
    make_channel: MakeChannel, wechat: WeChatSim
) -> None:
    wechat.control("PUT", "quotas", {"daily": {"custom_send": 0}})
    channel = make_channel()
    text = message(1, {"textMessage": "hi"})
    with pytest.raises(WeChatPaused) as raised:
        channel.send("m0-1", text)
    assert raised.value.code == "wechat_45009" and raised.value.retryable
    assert raised.value.retry_after is not None and raised.value.retry_after > 60
    with pytest.raises(WeChatPaused):
        channel.send("m0-2", text)
    assert len(wechat.calls("/cgi-bin/message/custom/send")) == 1
    # Template sends have a quota of their own.
    template = message(
        9, {"textMessage": "x"}, ext={"template": {"templetId": 1001, "content": '{"first": "x"}'}}
    )
    assert channel.send("m0-3", template).provider_message_id is not None
    wechat.control("PUT", "quotas", {"daily": {"custom_send": 10}})
    channel.quotas.resume("custom_send")
    assert channel.send("m0-2", text).provider_message_id is None


def test_bad_secret_is_a_configuration_failure(
    wechat: WeChatSim, redis_client: redis.Redis, appid: str
) -> None:
    config = WeChatConfig(appid=appid, secret="wrong", base_url=wechat.url)
    channel = WeChatSender(config, redis_client)
    with pytest.raises(ProviderError) as raised:
        channel.send("m0-1", message(1, {"textMessage": "hi"}))
    assert raised.value.code == "wechat_40125" and not raised.value.retryable
    assert "wrong" not in str(raised.value) and SECRET not in str(raised.value)
    assert wechat.calls("/cgi-bin/message/custom/send") == []
    channel.close()


def _sender(
    redis_url: str, config: dict[str, Any], count: int, ready: Any, go: Any, results: Any
) -> None:
    client = redis.Redis.from_url(redis_url)
    channel = WeChatSender(WeChatConfig.model_validate(config), client)
    channel.tokens.get()  # hold the current token, as a busy worker does
    ready.release()
    go.wait(60)
    notes = []
    for number in range(count):
        text = message(1, {"textMessage": f"{number}"})
        notes.extend(channel.send(f"m0-{uuid.uuid4().hex[:8]}", text).notes)
    results.put(notes)
    channel.close()


def test_token_revoked_mid_run_is_refreshed_once_for_four_senders(
    make_channel: MakeChannel, wechat: WeChatSim, redis_url: str, appid: str
) -> None:
    make_channel().tokens.get()
    context = multiprocessing.get_context("spawn")
    ready, go, results = context.Semaphore(0), context.Event(), context.Queue()
    config = {"appid": appid, "secret": SECRET, "base_url": wechat.url}
    senders = [
        context.Process(target=_sender, args=(redis_url, config, 5, ready, go, results))
        for _ in range(4)
    ]
    for sender in senders:
        sender.start()
    try:
        for _ in senders:
            assert ready.acquire(timeout=120)
        wechat.control("POST", "revoke-tokens")
        go.set()
        notes = [results.get(timeout=120) for _ in senders]
    finally:
        for sender in senders:
            sender.join(30)
    assert all(sender.exitcode == 0 for sender in senders)
    assert len(wechat.calls("/cgi-bin/stable_token")) == 2  # the first token and one refresh
    assert sorted(len(n) for n in notes) == [1, 1, 1, 1]  # each sender refreshed once
    assert len(wechat.calls("/cgi-bin/message/custom/send")) == 4 * 5 + 4
    assert wechat.control("GET", "stats")["custom_sent"] == 20
