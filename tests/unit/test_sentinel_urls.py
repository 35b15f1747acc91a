"""``redis+sentinel://`` URLs: what they name, kombu's form of them, and the clients built
from them (dispatcher/sentinel.py, dispatcher/connections.py)."""

from __future__ import annotations

import pytest
from redis.sentinel import SentinelManagedConnection

from dispatcher.broker import BrokerKind, broker_kind, make_celery, publishes_to_store
from dispatcher.config import Settings
from dispatcher.connections import probe_client, redis_client
from dispatcher.sentinel import SentinelTarget, kombu_broker, sentinel_target

URL = "redis+sentinel://:s3cret@10.0.0.1:26379,10.0.0.2,[::1]:26380/orders/2"


def test_a_sentinel_url_names_the_sentinels_the_master_and_the_database() -> None:
    assert sentinel_target(URL) == SentinelTarget(
        sentinels=(("10.0.0.1", 26379), ("10.0.0.2", 26379), ("::1", 26380)),
        service="orders",
        db=2,
        password="s3cret",
    )
    assert sentinel_target("redis+sentinel://h:1/m") == SentinelTarget((("h", 1),), "m")
    assert "s3cret" not in repr(sentinel_target(URL))
    assert sentinel_target("redis://127.0.0.1:6379/0") is None


@pytest.mark.parametrize(
    "url",
    [
        "redis+sentinel://h:1",
        "redis+sentinel:///m/0",
        "redis+sentinel://h:port/m/0",
        "redis+sentinel://h:1/m/zero",
        "redis+sentinel://h:1/m/0/extra",
    ],
)
def test_a_malformed_sentinel_url_is_refused_without_naming_the_password(url: str) -> None:
    with pytest.raises(ValueError, match="redis\\+sentinel") as refused:
        sentinel_target(url.replace("://", "://:hunter2@"))
    assert "hunter2" not in str(refused.value)


def test_kombu_gets_its_list_of_sentinels_and_the_master_name() -> None:
    url, options = kombu_broker(URL)
    assert url == (
        "sentinel://:s3cret@10.0.0.1:26379/2;sentinel://:s3cret@10.0.0.2:26379/2;"
        "sentinel://:s3cret@[::1]:26380/2"
    )
    assert options == {"master_name": "orders"}
    assert kombu_broker("redis://h:6379/0") == ("redis://h:6379/0", {})


def test_celery_uses_the_sentinel_transport_and_still_enqueues_in_the_create_script() -> None:
    settings = Settings(redis_url=URL)
    assert broker_kind(URL) is BrokerKind.REDIS
    celery = make_celery(settings)
    assert celery.conf.broker_transport == "dispatcher.broker:SentinelBrokerTransport"
    assert celery.conf.broker_transport_options["master_name"] == "orders"
    assert publishes_to_store(celery, settings)


def test_clients_of_a_sentinel_url_connect_through_the_sentinels() -> None:
    settings = Settings(redis_url=URL)
    for client in (redis_client(settings), probe_client(URL, 1.0)):
        pool = client.connection_pool
        assert pool.connection_class is SentinelManagedConnection
        assert pool.connection_kwargs["db"] == 2
        assert pool.service_name == "orders"  # type: ignore[attr-defined]
        client.close()
