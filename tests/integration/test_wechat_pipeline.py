"""WeChat end to end (issue: the seed's second channel): submit -> routing -> real worker
processes -> the WeChat and Qiniu simulators over HTTP, on a real Redis; receipts pushed
back to the API. Each test has its own WeChat app (appid), so tokens, limiters, quotas and
media ids never leak between tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pytest
import redis

from dispatcher import Dispatcher, keys
from dispatcher.api.app import create_app
from dispatcher.config import Settings
from dispatcher.sandbox.qiniu import seed_demo_objects
from dispatcher.sandbox.server import ServerThread
from dispatcher.sandbox.wechat import create_wechat_app
from tests.conftest import Simulator, WorkerProcess, wait_for_state
from tests.unit.test_api_support import make_harness

pytestmark = pytest.mark.integration

SECRET = "0123456789abcdef0123456789abcdef"
OPENID = "oSandboxUser0000000000000001"
TEMPLATES = {"1001": "TPL-ORDER", "1002": "TPL-MISSED"}
# Recipients that look like OpenIDs go to WeChat; everything else stays on Easemob.
ROUTING = {"default": "easemob", "rules": [{"channel": "wechat", "to": "o[A-Za-z0-9_-]{27}"}]}


class WeChatSim(Simulator):
    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = httpx.request(
            method, f"{self.url}/_sandbox/wechat/{path}", json=body, timeout=10
        )
        response.raise_for_status()
        return response.json()

    def calls(self, path: str) -> list[dict[str, Any]]:
        return [e for e in self.requests(path) if e["path"] == path]


class Center:
    """The service as configured for one test: its settings, a producer, and worker starts."""

    def __init__(
        self, env: dict[str, str], settings: dict[str, Any], start: Callable[..., WorkerProcess]
    ) -> None:
        self.values = settings
        from_env = {k.removeprefix("DISPATCHER_").lower(): v for k, v in env.items()}
        self.settings = Settings(**{**from_env, **settings})
        self.dispatcher = Dispatcher(self.settings)
        self._start = start

    def workers(self, count: int = 1, **extra: str) -> list[WorkerProcess]:
        overrides = {
            name: json.dumps(value) if isinstance(value, dict | list) else str(value)
            for name, value in self.values.items()
        }
        return [self._start(**overrides, **extra) for _ in range(count)]

    def submit(self, body: dict[str, Any], client: str | None = None) -> str:
        return self.dispatcher.submit({"from": "svc", "to": OPENID, **body}, client=client)

    def delivered(self, message_id: str, timeout: float = 60) -> Any:
        record = wait_for_state(self.dispatcher, message_id, timeout=timeout)
        assert record.state == "delivered", record.history
        return record


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


@pytest.fixture()
def center(
    worker_env: dict[str, str],
    start_worker: Callable[..., WorkerProcess],
    appid: str,
    wechat: WeChatSim,
    qiniu_sim: Simulator,
    redis_client: redis.Redis,
) -> Iterator[Callable[..., Center]]:
    seed_demo_objects(qiniu_sim.app)
    for key in redis_client.scan_iter(match=keys.media_cache("*", "*")):
        redis_client.delete(key)
    made: list[Center] = []

    def make(**settings: Any) -> Center:
        values = {
            "wechat_appid": appid,
            "wechat_secret": SECRET,
            "wechat_base_url": wechat.url,
            "wechat_templates": TEMPLATES,
            "routing": ROUTING,
            **settings,
        }
        made.append(Center(worker_env, values, start_worker))
        return made[-1]

    yield make
    for center in made:
        center.dispatcher.close()


def template(templet_id: int, content: dict[str, Any]) -> dict[str, Any]:
    return {
        "messageType": 9,
        "messageInfo": {"textMessage": "fallback text"},
        "ext": {"template": {"templetId": templet_id, "content": json.dumps(content)}},
    }


def test_every_supported_type_is_delivered_to_wechat_with_the_exact_body(
    center: Callable[..., Center], wechat: WeChatSim, appid: str, redis_client: redis.Redis
) -> None:
    service = center()
    service.workers(2)
    bodies = {
        "text": {"messageType": 1, "messageInfo": {"textMessage": "你好 \U0001f600"}},
        "image": {"messageType": 2, "messageInfo": {"imageMessage": "demo.jpg"}},
        "voice": {"messageType": 3, "messageInfo": {"voiceMessage": "demo.amr"}},
        "video": {
            "messageType": 4,
            "messageInfo": {"videoMessage": "demo.mp4", "thumbMessage": "demo.jpg", "title": "片"},
        },
        "news": {"messageType": 7, "messageInfo": {"title": "新闻", "url": "https://e.x/n"}},
        "custom": {
            "messageType": 8,
            "messageInfo": {"title": "T", "url": "https://e.x/c", "picUrl": "https://e.x/p"},
        },
        "template": template(
            1001, {"first": "已发货", "remark": {"value": "谢谢", "color": "#173177"}}
        ),
    }
    ids = {}
    for name, body in bodies.items():  # one at a time: the ledger's order is the test's
        ids[name] = service.submit(body)
        record = service.delivered(ids[name])
        assert record.channel == "wechat"
    media = {item["type"]: mid for mid, item in wechat.control("GET", "media").items()}
    assert sorted(media) == ["image", "thumb", "video", "voice"]
    sent = [e["json"] for e in wechat.calls("/cgi-bin/message/custom/send")]
    assert sent == [
        {"touser": OPENID, "msgtype": "text", "text": {"content": "你好 \U0001f600"}},
        {"touser": OPENID, "msgtype": "image", "image": {"media_id": media["image"]}},
        {"touser": OPENID, "msgtype": "voice", "voice": {"media_id": media["voice"]}},
        {
            "touser": OPENID,
            "msgtype": "video",
            "video": {"media_id": media["video"], "thumb_media_id": media["thumb"], "title": "片"},
        },
        {"touser": OPENID, "msgtype": "news", "news": {"articles": [{"title": "新闻", "url": "https://e.x/n"}]}},
        {
            "touser": OPENID,
            "msgtype": "news",
            "news": {"articles": [{"title": "T", "url": "https://e.x/c", "picurl": "https://e.x/p"}]},
        },
    ]  # fmt: skip
    [raw] = [e for e in wechat.calls("/cgi-bin/message/template/send")]
    assert raw["json"] == {
        "touser": OPENID,
        "template_id": "TPL-ORDER",
        "data": {"first": {"value": "已发货"}, "remark": {"value": "谢谢", "color": "#173177"}},
        "client_msg_id": ids["template"],
    }
    record = service.delivered(ids["template"])
    msgid = record.providerMessageId
    assert msgid is not None
    member = redis_client.get(keys.wechat_template_msgid(appid, msgid))
    assert member == f"default:{ids['template']}".encode()
    assert wechat.control("GET", "stats")["tokens_issued"] == 1


def test_an_image_sent_twice_is_uploaded_once(
    center: Callable[..., Center], wechat: WeChatSim
) -> None:
    service = center()
    service.workers(2)
    image = {"messageType": 2, "messageInfo": {"imageMessage": "demo.jpg"}}
    first = service.submit(image)
    service.delivered(first)
    second = service.submit({**image, "to": "oSandboxUser0000000000000002"})
    record = service.delivered(second)
    assert len(wechat.calls("/cgi-bin/media/upload")) == 1
    sends = wechat.calls("/cgi-bin/message/custom/send")
    assert [s["json"]["image"] for s in sends] == [sends[0]["json"]["image"]] * 2
    assert not any("uploaded" in (e.detail or "") for e in record.history)


def test_a_token_revoked_mid_run_is_refreshed_once_by_four_worker_processes(
    center: Callable[..., Center], wechat: WeChatSim
) -> None:
    service = center()
    service.workers(4, worker_concurrency="4")
    text = {"messageType": 1, "messageInfo": {"textMessage": "before"}}
    for message_id in [service.submit(text) for _ in range(16)]:
        service.delivered(message_id)
    assert len(wechat.calls("/cgi-bin/stable_token")) == 1
    wechat.control("POST", "revoke-tokens")
    after = [
        service.submit({"messageType": 1, "messageInfo": {"textMessage": f"after {n}"}})
        for n in range(40)
    ]
    records = [service.delivered(message_id) for message_id in after]
    assert len(wechat.calls("/cgi-bin/stable_token")) == 2, "exactly one refresh"
    refreshed = [
        r for r in records if any("token refreshed" in (e.detail or "") for e in r.history)
    ]
    assert 1 <= len(refreshed) <= 16, "only sends that met the revoked token refreshed"
    assert wechat.control("GET", "stats")["custom_sent"] == 16 + 40
    assert all(r.attempts == 1 for r in records), "a refresh is part of the attempt"


def test_outside_the_window_fallback_template_when_configured_else_failed_with_the_code(
    center: Callable[..., Center], wechat: WeChatSim, appid: str
) -> None:
    fallback = {"template_id": "TPL-MISSED", "data": {"first": "新消息：{text}"}}
    clients = {
        # "shop" opted in to the fallback on its own block of the same app; "crm" did not.
        "shop": {
            "secret": "shop-secret",
            "wechat": {
                "appid": appid,
                "secret": SECRET,
                "base_url": wechat.url,
                "templates": TEMPLATES,
                "window_fallback": fallback,
            },
        },
        "crm": {"secret": "crm-secret"},
    }
    service = center(clients=clients)
    service.workers(1)
    wechat.control("PUT", f"users/{OPENID}", {"window_until": 1.0})
    text = {"messageType": 1, "messageInfo": {"textMessage": "在吗"}}
    failed = wait_for_state(service.dispatcher, service.submit(text, client="crm"))
    assert failed.state == "failed" and failed.lastError is not None
    assert failed.lastError.code == "wechat_45015" and not failed.lastError.retryable
    assert failed.attempts == 1
    sent_as_template = service.delivered(service.submit(text, client="shop"))
    assert sent_as_template.providerMessageId is not None
    assert any(
        "refused with errcode 45015 (48-hour window); sent as template TPL-MISSED instead"
        in (e.detail or "")
        for e in sent_as_template.history
    )
    [body] = [e["json"] for e in wechat.calls("/cgi-bin/message/template/send")]
    assert body["data"] == {"first": {"value": "新消息：在吗"}}
    assert body["client_msg_id"] == sent_as_template.getMessageId


def test_quota_exhaustion_pauses_sends_until_the_resume_time_without_using_attempts(
    center: Callable[..., Center], wechat: WeChatSim
) -> None:
    zone = "Asia/Shanghai"
    resume = datetime.now(ZoneInfo(zone)) + timedelta(seconds=40)
    service = center(
        wechat_quota_resume_time=resume.time().replace(microsecond=0).isoformat(),
        wechat_timezone=zone,
        max_attempts=1,  # a counted retry would make the message dead
    )
    wechat.control("PUT", "quotas", {"daily": {"custom_send": 2}})
    service.workers(2)

    def submit(count: int) -> list[str]:
        return [
            service.submit({"messageType": 1, "messageInfo": {"textMessage": f"n{n}"}})
            for n in range(count)
        ]

    def settle(ids: list[str], delivered: int) -> list[Any]:
        deadline = time.monotonic() + 30
        while True:
            records = [service.dispatcher.status(m) for m in ids]
            states = [r.state if r else None for r in records]
            if (
                states.count("delivered") == delivered
                and states.count("retrying") == len(ids) - delivered
            ):
                return [r for r in records if r is not None and r.state == "retrying"]
            assert time.monotonic() < deadline, states
            time.sleep(0.1)

    first = submit(6)
    waiting = settle(first, delivered=2)
    calls = len(wechat.calls("/cgi-bin/message/custom/send"))
    assert wechat.control("GET", "quotas")["custom_send"]["used"] == 2 < calls  # and 45009s
    # Paused: later messages wait without calling WeChat at all.
    later = submit(2)
    waiting += settle(later, delivered=0)
    assert len(wechat.calls("/cgi-bin/message/custom/send")) == calls
    assert all(r.attempts == 0 for r in waiting), "a pause uses up no attempt"
    assert all(r.lastError is not None and r.lastError.retryable for r in waiting)
    assert {r.lastError.code for r in waiting} <= {"wechat_45009", "wechat_quota_paused"}

    wechat.control("PUT", "quotas", {"daily": {"custom_send": 100}})  # WeChat's new day
    records = [service.delivered(r.getMessageId, timeout=120) for r in waiting]
    assert all(r.deliveredAt.timestamp() >= resume.timestamp() - 1 for r in records), (
        "nothing was sent before the resume time"
    )
    assert all(r.attempts == 1 for r in records)
    assert wechat.control("GET", "stats")["custom_sent"] == 8, "nothing lost, nothing twice"


def test_a_location_routed_to_wechat_is_refused_at_submit_and_nothing_is_stored(
    redis_url: str, appid: str
) -> None:
    api = make_harness(
        redis_url, wechat_appid=appid, wechat_secret=SECRET, routing=ROUTING, auth_enabled=False
    )
    try:
        before = set(api.redis.keys("dispatcher:{*"))
        body = {
            "messageType": 5,
            "from": "svc",
            "to": OPENID,
            "messageInfo": {"latitude": 39.9, "longitude": 116.4, "address": "Beijing"},
        }
        answer = api.http.post("/sender/v1/handleBasicMessage", json=body)
        assert answer.status_code == 400
        [error] = answer.json()["data"]["errors"]
        assert error["field"] == "messageType"
        assert "messageType 5 (location)" in error["error"] and "wechat" in error["error"]
        assert set(api.redis.keys("dispatcher:{*")) == before
        assert api.redis.llen(api.settings.queue) == 0
        # The same location to an Easemob user is accepted: the route, not the type, refused it.
        accepted = api.http.post("/sender/v1/handleBasicMessage", json={**body, "to": "u2"})
        assert accepted.status_code == 200
    finally:
        api.close()


def test_template_receipts_pushed_by_wechat_are_recorded_on_the_message(
    center: Callable[..., Center], appid: str
) -> None:
    token = "server-token-" + uuid.uuid4().hex[:8]
    service = center(wechat_server_token=token)
    with ServerThread(create_app(service.settings)) as api:
        pushing = create_wechat_app(
            appid=appid,
            secret=SECRET,
            templates=["TPL-ORDER"],
            receipt_url=f"{api.url}/sender/v1/wechat/{appid}/events",
            receipt_token=token,
        )
        with ServerThread(pushing) as sim:
            service.values["wechat_base_url"] = sim.url
            service.workers(1)
            message_id = service.submit(template(1001, {"first": "到了"}))
            service.delivered(message_id)
            deadline = time.monotonic() + 30
            notes: list[str] = []
            while time.monotonic() < deadline and not notes:
                record = service.dispatcher.status(message_id)
                notes = [e.detail for e in record.history if "receipt" in (e.detail or "")]
                time.sleep(0.1)
    assert notes == ["WeChat template receipt: success"]
