"""Channels are plug-ins: a module that exports CHANNEL is all a new channel needs
(docs/extending.md, "Adding a channel"); the message is parsed once, at the boundary."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest

import dispatcher.channels
from dispatcher import delivery, models
from dispatcher.channels import Origin, open_channels, registry
from dispatcher.channels.easemob import build_body
from dispatcher.config import Settings
from dispatcher.errors import InvalidMessage
from dispatcher.models import Message, MessageType, parse_message
from dispatcher.store import StatusStore
from tests.conftest import ref

EXTRA_CHANNEL = """
from dispatcher.channels.base import ChannelSpec, Receipt


class Pigeon:
    name = "pigeon"
    sent: list[tuple[str, object]] = []

    def __init__(self, settings, client):
        pass

    def send(self, message_id, message, *, prepaid=False, origin=None):
        Pigeon.sent.append((message_id, message, origin))
        return Receipt("coo-1")

    def rate_prepay(self):
        return None

    def close(self):
        pass


CHANNEL = ChannelSpec(
    name="pigeon",
    channel_type=77,
    carries=frozenset({1}),
    media=frozenset(),
    configured=lambda settings: True,
    check_size=lambda settings, message_id, message, client: None,
    open=Pigeon,
)
"""

TEXT = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}


@pytest.fixture()
def pigeon_installed(tmp_path: Path) -> Iterator[None]:
    """A channel module dropped next to the others, and nothing else changed."""
    (tmp_path / "pigeon.py").write_text(EXTRA_CHANNEL)
    dispatcher.channels.__path__.append(str(tmp_path))
    registry.cache_clear()
    yield
    dispatcher.channels.__path__.remove(str(tmp_path))
    registry.cache_clear()


def test_easemob_registers_itself_as_channel_type_one_for_every_message_type() -> None:
    easemob = registry().get("easemob")
    assert easemob.channel_type == 1
    assert easemob.carries == {int(t) for t in MessageType}
    assert easemob.media == {2, 3, 4}
    assert registry().channel_types == {1: "easemob", 2: "wechat"}


def test_wechat_registers_itself_as_channel_type_two_for_what_wechat_can_carry() -> None:
    wechat = registry().get("wechat")
    assert wechat.channel_type == 2
    assert wechat.carries == {1, 2, 3, 4, 7, 8, 9}  # no location, pass-through, extension
    assert wechat.media == {2, 3, 4}
    assert wechat.routes is not None
    assert not wechat.configured(Settings())
    assert wechat.configured(Settings(wechat_appid="wx1", wechat_secret="s"))


def test_a_channel_module_alone_adds_a_channel(pigeon_installed: None) -> None:
    assert registry().channel_types == {1: "easemob", 2: "wechat", 77: "pigeon"}
    assert parse_message({**TEXT, "channelType": 77}).messageType is MessageType.TEXT
    with pytest.raises(InvalidMessage) as refused:
        parse_message({**TEXT, "channelType": 78})
    assert [e.field for e in refused.value.errors] == ["channelType"]
    opened = open_channels(Settings(), fakeredis.FakeRedis())
    assert set(opened) == {"pigeon"}, "an unconfigured channel is not opened"


def test_the_worker_delivers_through_the_channel_recorded_at_submit(
    pigeon_installed: None,
) -> None:
    store = StatusStore(fakeredis.FakeRedis())
    message = parse_message(TEXT)
    store.submit.create(
        store.submit.prepare(ref("m0bird"), message, channel="pigeon", client="shop")
    )
    channels = open_channels(Settings(), store.redis)

    outcome = delivery.attempt(
        ref("m0bird"), settings=Settings(), store=store, channels=channels, resolve_media=None
    )

    assert outcome.state == "delivered"
    sent = channels["pigeon"].sent  # type: ignore[attr-defined]
    assert [(mid, m.stored()) for mid, m, _ in sent] == [("m0bird", message.stored())]
    origin = sent[0][2]
    assert isinstance(origin, Origin) and (origin.ref, origin.client) == (ref("m0bird"), "shop")
    record = store.read.get(ref("m0bird"))
    assert record is not None and record.providerMessageId == "coo-1"


def test_the_stored_message_rebuilds_the_same_message_without_validating_again(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bodies: list[dict[str, Any]] = [
        {**TEXT, "ext": {"em_apns_ext": {"t": "x"}, "isEnd": "1", "getType": 2}},
        {
            "messageType": 10,
            "from": "u1",
            "to": "12345",
            "messageInfo": {"textMessage": "fallback"},
            "ext": {"expandMsg": {"MsgType": "order/paid", "Content": "{}", "extra": 1}},
        },
        {
            "messageType": 8,
            "from": "u1",
            "to": "u2",
            "messageInfo": {"title": "t", "url": "https://e.example/x", "shop": "s"},
        },
        {
            "messageType": 5,
            "from": "u1",
            "to": "u2",
            "messageInfo": {"latitude": 39.9, "longitude": 116.4, "address": "Beijing"},
        },
    ]
    parsed = [parse_message(body) for body in bodies]

    def no_second_parse(*_: Any, **__: Any) -> Message:
        raise AssertionError("validated again")

    monkeypatch.setattr(models, "parse_message", no_second_parse)
    monkeypatch.setattr(Message, "model_validate", no_second_parse)
    for message in parsed:
        again = Message.from_stored(message.stored())
        assert again.fingerprint() == message.fingerprint()
        assert build_body("m0x", again) == build_body("m0x", message)
        assert type(again.messageInfo) is type(message.messageInfo)


def test_a_stored_message_that_does_not_read_is_invalid_not_a_crash() -> None:
    for stored in ("{", "[]", '{"messageType": 99}', '{"messageType": 1, "from": "a"}'):
        with pytest.raises(InvalidMessage):
            Message.from_stored(stored)


def test_a_wechat_message_goes_through_its_clients_app_or_else_the_global_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dispatcher.channels.wechat import app_for
    from dispatcher.errors import ConfigurationError

    monkeypatch.setenv("DISPATCHER_WECHAT_APPID", "wxglobal")
    monkeypatch.setenv("DISPATCHER_WECHAT_SECRET", "global-secret")
    monkeypatch.setenv("DISPATCHER_WECHAT_QUOTA_RESUME_TIME", "01:30")
    monkeypatch.setenv(
        "DISPATCHER_WECHAT_WINDOW_FALLBACK", '{"template_id": "T", "data": {"first": "{text}"}}'
    )
    monkeypatch.setenv(
        "DISPATCHER_CLIENTS",
        '{"shop": {"secret": "x", "wechat": {"appid": "wxshop", "secret": "shop-secret"}},'
        ' "crm": {"secret": "y"}}',
    )
    settings = Settings()
    assert app_for(settings, "shop").appid == "wxshop"
    assert app_for(settings, "shop").window_fallback is None, "a client's block stands alone"
    shared = app_for(settings, "crm")
    assert (shared.appid, str(shared.quota_resume_time)) == ("wxglobal", "01:30:00")
    assert shared.window_fallback is not None and shared.window_fallback.template_id == "T"
    assert app_for(settings, None).appid == "wxglobal"
    monkeypatch.delenv("DISPATCHER_WECHAT_APPID")
    with pytest.raises(ConfigurationError, match="no WeChat app for client 'crm'"):
        app_for(Settings(), "crm")
