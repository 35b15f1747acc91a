"""Redis Sentinel and ``DISPATCHER_REDIS_MIN_REPLICAS`` against real servers on loopback
(docs/deployment.md, "Redis Sentinel"): the readiness probe, the API, the CLI and the
Python producer given only a ``redis+sentinel://`` URL, before and after a failover; a
submit answered 200 only once a replica acknowledged its record."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from dispatcher import keys
from dispatcher.api import create_app
from dispatcher.api.paths import SUBMIT, SUBMIT_BATCH
from dispatcher.config import Settings
from dispatcher.embedded import RedisServer
from dispatcher.errors import NotReplicated
from dispatcher.producer import Dispatcher
from tests.fault.harness import text_message, wait_until
from tests.sentinel import ReplicationLink, SentinelSet

pytestmark = pytest.mark.integration


def settings(url: str, **overrides: Any) -> Settings:
    return Settings(redis_url=url, auth_enabled=False, queue="sentinel-test", **overrides)


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DISPATCHER_REDIS_URL": url, "DISPATCHER_QUEUE": "sentinel-test"}
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture()
def sentinel_set(tmp_path: Path) -> Iterator[SentinelSet]:
    with SentinelSet(replicas=1, root=tmp_path / "sentinel") as found:
        yield found


def test_the_api_and_the_cli_follow_a_failover_of_the_sentinel_set(
    sentinel_set: SentinelSet,
) -> None:
    url = sentinel_set.url
    with TestClient(create_app(settings(url, redis_min_replicas=1))) as api:
        assert api.get("/readyz").status_code == 200
        assert api.post(SUBMIT, json=text_message("before")).status_code == 200
        sent = cli(url, "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "hi")
        assert sent.returncode == 0, sent.stderr

        old = sentinel_set.primary
        old.kill()
        wait_until(lambda: api.get("/readyz").status_code == 503, 10, "/readyz says Redis is down")
        wait_until(
            lambda: sentinel_set.primary_port() not in (None, old.port), 30, "a replica promoted"
        )
        wait_until(
            lambda: api.get("/readyz").status_code == 200, 10, "/readyz follows the failover"
        )
        # The one replica is the primary now: none is left to acknowledge a record.
        refused = api.post(SUBMIT, json=text_message("after"))
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"

    # Records confirmed on the replica survived the failover; the CLI reads them there.
    shown = cli(url, "status", "before")
    assert shown.returncode == 0 and '"state": "queued"' in shown.stdout, shown.stderr
    assert cli(url, "status", sent.stdout.strip()).returncode == 0


def test_a_submit_waits_for_a_replica_to_hold_its_record(tmp_path: Path) -> None:
    with RedisServer(data_dir=tmp_path / "primary") as primary:
        link = ReplicationLink(primary.port).start()
        behind = RedisServer(
            data_dir=tmp_path / "behind", extra_args=["--replicaof", "127.0.0.1", str(link.port)]
        ).start()
        wait_until(lambda: in_sync(behind), 30, "the replica in sync")
        config = settings(primary.url, redis_min_replicas=1, redis_min_replicas_timeout=0.5)
        with TestClient(create_app(config)) as api:
            assert api.post(SUBMIT, json=text_message("confirmed")).status_code == 200
            link.stall()  # the replica no longer receives the primary's writes
            batch = api.post(SUBMIT_BATCH, json={"messages": [text_message("inbatch")]})
            assert batch.json()["data"]["results"][0]["code"] == 503
            refused = api.post(SUBMIT, json=text_message("unconfirmed"))
            assert refused.status_code == 503
            assert refused.headers["Retry-After"] == "1"
            assert "nothing is promised" in refused.json()["message"]
            # Nothing promised, and here the record is kept on the primary. A retry by
            # another process (a connection that wrote nothing) is not confirmed either.
            producer = Dispatcher(config)
            assert producer.status("unconfirmed") is not None
            with pytest.raises(NotReplicated):
                producer.submit(text_message("unconfirmed"))
            assert isinstance(producer.submit_many([text_message("stalled")])[0], NotReplicated)

            replica_of = ["--replicaof", "127.0.0.1", str(primary.port)]
            with RedisServer(data_dir=tmp_path / "replica", extra_args=replica_of) as replica:
                wait_until(lambda: caught_up(primary, replica), 30, "a second replica in sync")
                # The same getMessageId again: its record now confirmed, 200 at last.
                assert api.post(SUBMIT, json=text_message("unconfirmed")).status_code == 200
                assert producer.submit(text_message("unconfirmed")) == "unconfirmed"
                again = api.post(SUBMIT_BATCH, json={"messages": [text_message("inbatch")]})
                assert again.json()["data"]["results"] == [{"getMessageId": "inbatch"}]
                assert producer.submit_many([text_message("many")]) == ["many"]
                with redis.Redis(port=replica.port) as client:
                    assert client.exists(keys.message(producer.ref("unconfirmed")))
            producer.close()
        behind.cleanup()
        link.close()


def in_sync(server: RedisServer) -> bool:
    with redis.Redis(port=server.port, decode_responses=True) as client:
        return bool(client.info("replication")["master_link_status"] == "up")


def caught_up(primary: RedisServer, replica: RedisServer) -> bool:
    """The primary counts ``replica`` online and acknowledging all it was sent."""
    with redis.Redis(port=primary.port) as client:
        info = client.info("replication")
    linked = [
        value
        for key, value in info.items()
        if key.startswith("slave") and isinstance(value, dict) and value["port"] == replica.port
    ]
    return (
        bool(linked)
        and linked[0]["state"] == "online"
        and (int(linked[0]["offset"]) >= int(info["master_repl_offset"]))
    )
