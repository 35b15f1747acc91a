"""How the message center picks a channel (dispatcher/routing.py, docs/channels.md)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest

from dispatcher.config import Settings
from dispatcher.errors import ConfigurationError, InvalidMessage
from dispatcher.models import parse_message
from dispatcher.producer import Dispatcher
from dispatcher.routing import Routing, route

OPENID = "oSandboxUser0000000000000001"
TEXT: dict[str, Any] = {
    "messageType": 1,
    "from": "svc",
    "to": "u2",
    "messageInfo": {"textMessage": "hi"},
}
LOCATION: dict[str, Any] = {
    "messageType": 5,
    "from": "svc",
    "to": OPENID,
    "messageInfo": {"latitude": 39.9, "longitude": 116.4, "address": "Beijing"},
}


def routing(**config: Any) -> Routing:
    return Routing.model_validate(config)


def chosen(config: Routing | None, **body: Any) -> str:
    return route(config, parse_message({**TEXT, **body})).channel.name


def test_without_routing_the_lowest_channel_type_that_carries_the_type_is_chosen() -> None:
    assert chosen(None) == "easemob"
    assert chosen(None, channelType=2) == "easemob", "a hint no rule allows is set aside"
    assert route(None, parse_message({**TEXT, "channelType": 2})).hint_ignored


def test_the_first_matching_rule_wins_and_the_default_takes_the_rest() -> None:
    config = routing(
        default="easemob",
        rules=[
            {"channel": "wechat", "to": r"o[A-Za-z0-9_-]{27}"},
            {"channel": "easemob", "message_types": [1]},
            {"channel": "wechat", "ext": {"chatChannel": "wx", "isEnd": None}},
        ],
    )
    assert chosen(config, to=OPENID) == "wechat"
    assert chosen(config, to=OPENID + "x") == "easemob", "the whole recipient must match"
    assert chosen(config, to="u2") == "easemob"
    news = {"messageType": 7, "messageInfo": {"title": "t", "url": "https://e.x/n"}}
    assert chosen(config, **news, ext={"chatChannel": "wx", "isEnd": "1"}) == "wechat"
    assert chosen(config, **news, ext={"chatChannel": "wx"}) == "easemob", "isEnd is required"
    assert chosen(config, **news, ext={"chatChannel": "em", "isEnd": "1"}) == "easemob"


def test_a_hint_is_honoured_only_where_a_matching_rule_names_its_channel() -> None:
    config = routing(
        rules=[
            {"channel": "easemob", "to": "u.*"},
            {"channel": "wechat", "to": "u.*", "message_types": [1, 7]},
        ]
    )
    assert chosen(config) == "easemob", "unhinted: the first matching rule"
    assert chosen(config, channelType=2) == "wechat", "a matching rule allows WeChat"
    assert chosen(config, channelType=1) == "easemob"
    assert chosen(config, to="v2", channelType=2) == "easemob", "no rule matches: the default"
    image = {"messageType": 2, "messageInfo": {"imageMessage": "a.jpg"}}
    decision = route(config, parse_message({**TEXT, **image, "channelType": 2}))
    assert decision.channel.name == "easemob" and decision.hint_ignored


def test_a_type_the_chosen_channel_cannot_carry_is_refused_naming_both() -> None:
    config = routing(rules=[{"channel": "wechat", "to": "o.*"}])
    with pytest.raises(InvalidMessage) as refused:
        route(config, parse_message(LOCATION))
    [error] = refused.value.errors
    assert error.field == "messageType"
    assert "messageType 5 (location)" in error.error and "wechat channel" in error.error


def test_rules_are_checked_when_read() -> None:
    with pytest.raises(ValueError, match="regular expression"):
        routing(rules=[{"channel": "wechat", "to": "("}])
    with pytest.raises(ValueError):
        routing(rules=[{"channel": "wechat", "recipient": "o.*"}])
    with pytest.raises(ValueError):
        routing(rules=[{"channel": "wechat", "message_types": []}])


@pytest.fixture()
def make_dispatcher() -> Iterator[Any]:
    made: list[Dispatcher] = []

    def make(**settings: Any) -> Dispatcher:
        dispatcher = Dispatcher(Settings(**settings), client=fakeredis.FakeRedis())
        made.append(dispatcher)
        return dispatcher

    yield make
    for dispatcher in made:
        dispatcher.close()


WECHAT_APP = {"wechat_appid": "wx0123456789abcdef", "wechat_secret": "s" * 32}


def test_each_client_has_its_own_routing_and_the_rest_share_the_global_one(
    make_dispatcher: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    clients = {
        "shop": {"secret": "x", "routing": {"default": "wechat"}},
        "crm": {"secret": "y"},
    }
    monkeypatch.setenv("DISPATCHER_CLIENTS", json.dumps(clients))
    monkeypatch.setenv("DISPATCHER_ROUTING", json.dumps({"default": "easemob"}))
    dispatcher = make_dispatcher(**WECHAT_APP)
    text = parse_message({**TEXT, "to": OPENID})
    assert dispatcher.route(text, "shop").name == "wechat"
    assert dispatcher.route(text, "crm").name == "easemob"
    assert dispatcher.route(text, None).name == "easemob"
    assert dispatcher.route(text, "unknown").name == "easemob"


def test_a_location_for_wechat_is_refused_at_submit_and_nothing_is_stored(
    make_dispatcher: Any,
) -> None:
    dispatcher = make_dispatcher(routing={"default": "wechat"}, **WECHAT_APP)
    with pytest.raises(InvalidMessage) as refused:
        dispatcher.submit({**LOCATION, "getMessageId": "m0loc"})
    assert "wechat" in str(refused.value) and "messageType 5" in str(refused.value)
    assert dispatcher.redis.keys("*") == []


def test_routing_to_an_unknown_channel_stops_the_producer(make_dispatcher: Any) -> None:
    with pytest.raises(ConfigurationError, match="pigeon"):
        make_dispatcher(routing={"default": "pigeon"})
