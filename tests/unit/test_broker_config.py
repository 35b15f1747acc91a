"""The Celery configuration per broker (docs/deployment.md): Redis as before; RabbitMQ with
quorum queues for every queue, publisher confirms, late acks and a fixed prefetch."""

from __future__ import annotations

import uuid

import pytest
import redis

from dispatcher.broker import (
    AHEAD_HEADER,
    BrokerKind,
    DispatcherConsumer,
    broker_is_store,
    broker_kind,
    make_celery,
)
from dispatcher.config import Settings
from dispatcher.enqueue import DELIVER_TASK, ref_in
from tests.conftest import ref

AMQP = "amqp://guest:guest@127.0.0.1:5672/dispatcher"


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", BrokerKind.REDIS),
        ("rediss://cache.example:6380/0", BrokerKind.REDIS),
        ("redis+socket:///run/redis/redis.sock", BrokerKind.REDIS),
        ("amqp://u:p@rabbit:5672/vhost", BrokerKind.AMQP),
        ("amqps://u:p@rabbit:5671/vhost", BrokerKind.AMQP),
        ("pyamqp://u:p@rabbit//", BrokerKind.AMQP),
    ],
)
def test_broker_kind_follows_the_url_scheme(url: str, kind: BrokerKind) -> None:
    assert broker_kind(url) is kind


def test_an_unsupported_broker_is_refused_with_the_supported_schemes() -> None:
    with pytest.raises(ValueError, match=r"unsupported broker URL scheme 'sqs'.*amqp://"):
        make_celery(Settings(broker_url="sqs://key:secret@"))


def test_the_broker_is_the_store_only_when_the_urls_are_the_same() -> None:
    assert broker_is_store(Settings())
    assert broker_is_store(Settings(broker_url="redis://127.0.0.1:6379/0"))
    assert not broker_is_store(Settings(broker_url="redis://127.0.0.1:6379/1"))
    assert not broker_is_store(Settings(broker_url=AMQP))


def test_rabbitmq_declares_every_queue_as_a_quorum_queue() -> None:
    app = make_celery(Settings(broker_url=AMQP, queue="deliveries"))
    queues = app.amqp.queues
    assert queues["deliveries"].queue_arguments == {"x-queue-type": "quorum"}
    assert queues["deliveries"].durable
    # A queue another task is routed to (or a worker is given with -Q) is quorum too,
    # so producers and workers always declare it with the same arguments.
    assert queues["webhooks"].queue_arguments == {"x-queue-type": "quorum"}
    # With no -Q a worker consumes every queue in the configuration.
    assert "deliveries" in queues.consume_from and "webhooks" in queues.consume_from


def test_rabbitmq_publishes_with_confirms_and_acks_late_with_a_fixed_prefetch() -> None:
    conf = make_celery(Settings(broker_url=AMQP)).conf
    assert conf.broker_transport_options["confirm_publish"] is True
    assert "visibility_timeout" not in conf.broker_transport_options  # the Redis broker's
    assert conf.task_acks_late and conf.task_reject_on_worker_lost
    assert conf.worker_prefetch_multiplier == 1
    assert conf.broker_heartbeat > 0
    assert conf.task_queue_max_priority is None  # quorum queues keep no priorities


def test_the_redis_broker_keeps_its_transport_and_classic_lists() -> None:
    conf = make_celery(Settings(visibility_timeout=120)).conf
    assert conf.broker_transport == "dispatcher.broker:BrokerTransport"
    assert conf.broker_transport_options["visibility_timeout"] == 120
    assert conf.task_default_queue_type == "classic"


def test_the_worker_leaves_out_celerys_delayed_delivery_topology() -> None:
    steps = DispatcherConsumer.Blueprint.default_steps
    assert not [step for step in steps if "delayed_delivery" in step]
    assert any(step.endswith(":Tasks") for step in steps)


def test_a_task_published_ahead_is_next_in_line_on_the_redis_broker(redis_url: str) -> None:
    queue = f"ahead-{uuid.uuid4().hex[:8]}"
    celery = make_celery(Settings(redis_url=redis_url, queue=queue))
    client = redis.Redis.from_url(redis_url)
    try:
        for name in ("first", "second"):
            celery.send_task(DELIVER_TASK, (ref(name).member,), queue=queue)
        celery.send_task(
            DELIVER_TASK, (ref("recovered").member,), queue=queue, headers={AHEAD_HEADER: True}
        )
        # Consumers pop from the right: the recovered task comes before the backlog.
        order = [ref_in(entry) for entry in reversed(client.lrange(queue, 0, -1))]
        assert [r.id for r in order if r is not None] == ["recovered", "first", "second"]
    finally:
        client.delete(queue)
        client.close()
