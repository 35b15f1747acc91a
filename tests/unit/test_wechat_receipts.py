"""WeChat's template receipts: signature, safe XML, and the note in the message's history."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.channels.wechat_receipts import EVENTS, parse_event, signature, verified
from dispatcher.models import parse_message
from dispatcher.sandbox.wechat import receipt_xml
from dispatcher.sandbox.wechat import signature as simulator_signature
from dispatcher.store import StatusStore
from tests.conftest import ref
from tests.unit.test_api_support import Harness, make_harness, unique_id

APPID = "wx0a1b2c3d4e5f6a7b"
TOKEN = "receipt-token-for-tests"
OPENID = "oSandboxUser0000000000000001"


def signed(token: str = TOKEN, timestamp: int | None = None, nonce: str = "4711") -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"signature": signature(token, stamp, nonce), "timestamp": stamp, "nonce": nonce}


def test_signature_is_wechats_sorted_sha1_and_must_be_fresh() -> None:
    # The simulator signs as WeChat does: both sides agree.
    assert signature(TOKEN, "1700000000", "42") == simulator_signature(TOKEN, "1700000000", "42")
    now = time.time()
    good = signed(timestamp=int(now))
    assert verified(TOKEN, good, window=300, now=now)
    assert not verified("another-token", good, window=300, now=now)
    assert not verified(TOKEN, {**good, "nonce": "4712"}, window=300, now=now)
    assert not verified(TOKEN, signed(timestamp=int(now) - 301), window=300, now=now)
    assert not verified(TOKEN, {**good, "timestamp": "soon"}, window=300, now=now)
    assert not verified(TOKEN, {}, window=300, now=now)


def test_the_receipt_event_is_read_and_other_events_are_ignored() -> None:
    body = receipt_xml("gh_x", OPENID, 200228332, "failed: system failed", 1)
    receipt = parse_event(body)
    assert receipt is not None
    assert (receipt.openid, receipt.msgid, receipt.status) == (
        OPENID,
        "200228332",
        "failed: system failed",
    )
    subscribe = b"<xml><MsgType>event</MsgType><Event>subscribe</Event></xml>"
    assert parse_event(subscribe) is None


@pytest.mark.parametrize(
    "body",
    [
        b"not xml",
        b"<xml><Event>TEMPLATESENDJOBFINISH</Event><Status>success</Status></xml>",
        # an entity expansion bomb, and an external entity: refused, never expanded
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]>'
        b"<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID><Status>&b;</Status></xml>",
        b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
        b"<xml><Event>TEMPLATESENDJOBFINISH</Event><MsgID>1</MsgID><Status>&e;</Status></xml>",
    ],
)
def test_malformed_or_dangerous_xml_is_refused(body: bytes) -> None:
    with pytest.raises(ValueError):
        parse_event(body)


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(
        redis_url,
        wechat_appid=APPID,
        wechat_secret="s" * 32,
        wechat_server_token=TOKEN,
    )
    yield harness
    harness.close()


def delivered_template(api: Harness, msgid: int) -> Any:
    """A delivered WeChat message whose template msgid the sender indexed."""
    store = StatusStore(api.redis)
    message_id = unique_id()
    message = parse_message(
        {"messageType": 1, "from": "svc", "to": OPENID, "messageInfo": {"textMessage": "hi"}}
    )
    store.submit.create(store.submit.prepare(ref(message_id), message, channel="wechat"))
    lease = store.lease.begin(ref(message_id), "w1", 30)
    store.lease.mark_delivered(lease, str(msgid), "delivered via wechat")  # type: ignore[arg-type]
    api.redis.set(keys.wechat_template_msgid(APPID, str(msgid)), ref(message_id).member)
    return message_id


def post_event(api: Harness, body: bytes, params: dict[str, str], appid: str = APPID) -> Any:
    return api.http.post(
        EVENTS.format(appid=appid),
        params=params,
        content=body,
        headers={"Content-Type": "text/xml"},
    )


def test_a_signed_receipt_is_noted_in_the_history_once(api: Harness) -> None:
    message_id = delivered_template(api, 900001)
    body = receipt_xml("gh_x", OPENID, 900001, "failed:user block", int(time.time()))
    answer = post_event(api, body, signed())
    assert answer.status_code == 200 and answer.text == "success"
    again = post_event(api, body, signed(nonce="4712"))  # WeChat's retry of the same push
    assert again.status_code == 200 and again.text == "success"
    record = record_of(api, message_id)
    assert record.state.value == "delivered"
    notes = [e.detail for e in record.history if e.detail and "receipt" in e.detail]
    assert notes == ["WeChat template receipt: failed:user block"]


def test_unsigned_stale_or_foreign_pushes_change_nothing(api: Harness) -> None:
    message_id = delivered_template(api, 900002)
    body = receipt_xml("gh_x", OPENID, 900002, "success", int(time.time()))
    assert post_event(api, body, signed(token="guessed")).status_code == 403
    assert post_event(api, body, signed(timestamp=int(time.time()) - 3600)).status_code == 403
    assert post_event(api, body, signed(), appid="wxunknown").status_code == 404
    assert post_event(api, b"<xml", signed()).status_code == 400
    record = record_of(api, message_id)
    assert not [e for e in record.history if e.detail and "receipt" in e.detail]


def test_wechats_url_check_echoes_echostr_only_when_signed(api: Harness) -> None:
    url = EVENTS.format(appid=APPID)
    assert api.http.get(url, params={**signed(), "echostr": "e123"}).text == "e123"
    assert api.http.get(url, params={**signed(token="x"), "echostr": "e123"}).status_code == 403


def record_of(api: Harness, message_id: str) -> Any:
    record = StatusStore(api.redis).read.get(ref(message_id))
    assert record is not None
    return record
