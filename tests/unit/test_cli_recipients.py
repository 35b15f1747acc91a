"""``dispatcher send`` with several ``--to`` and ``dispatcher message recipients``, in
process (straight to Redis) and through the signed HTTP API (``--api``)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest
from click.testing import CliRunner, Result

from dispatcher.cli import main
from dispatcher.ids import MessageRef
from dispatcher.producer import Dispatcher
from dispatcher.sandbox.server import ServerThread
from dispatcher.store.recipients import delivered, failed
from tests.unit.test_api_support import TEXT, Harness, make_harness, make_settings

TEXT_OPTIONS = ["--type", "text", "--from", "u1", "--text", "hi"]


@pytest.fixture()
def producer(redis_url: str) -> Iterator[tuple[Dispatcher, dict[str, str]]]:
    settings = make_settings(redis_url)
    env = {"DISPATCHER_REDIS_URL": redis_url, "DISPATCHER_QUEUE": settings.queue}
    dispatcher = Dispatcher(settings, namespace="c9")
    yield dispatcher, env
    dispatcher.redis.delete(settings.queue)
    dispatcher.close()


def lines(output: str) -> list[dict[str, str]]:
    return [json.loads(line) for line in output.splitlines()]


def test_send_takes_repeated_and_comma_separated_recipients(
    producer: tuple[Dispatcher, dict[str, str]],
) -> None:
    dispatcher, env = producer
    args = ["send", *TEXT_OPTIONS, "--client", "c9"]
    many = CliRunner().invoke(main, [*args, "--to", "a", "--to", "b, c"], env=env)
    assert many.exit_code == 0, many.output
    many_id = many.stdout.strip()
    assert dispatcher.stored_message(many_id)["to"] == ["a", "b", "c"]  # type: ignore[index]
    record = dispatcher.status(many_id)
    assert record is not None and record.public()["recipients"]["recipients"] == 3
    one = CliRunner().invoke(main, [*args, "--to", "u2"], env=env)
    assert one.exit_code == 0, one.output
    assert dispatcher.stored_message(one.stdout.strip())["to"] == "u2"  # type: ignore[index]
    twice = CliRunner().invoke(main, [*args, "--to", "a,a"], env=env)
    assert twice.exit_code == 1 and "to:" in twice.stderr, twice.output
    usage = " ".join(CliRunner().invoke(main, ["send", "--help"]).output.split())
    assert "repeat --to, or separate ids with commas (--to u2,u3)" in usage


def test_message_recipients_in_process_lists_and_filters(
    producer: tuple[Dispatcher, dict[str, str]],
) -> None:
    dispatcher, env = producer
    names = [f"r{i}" for i in range(1005)]
    message_id = dispatcher.submit({**TEXT, "to": names})
    ref = MessageRef("c9", message_id)
    dispatcher.store.recipients.record(ref, [(0, delivered("1029457500870543736"))])
    dispatcher.store.recipients.record(ref, [(1003, failed("refused:user_block"))])
    args = ["message", "recipients", message_id, "--client", "c9"]

    every = CliRunner().invoke(main, args, env=env)
    assert every.exit_code == 0, every.output
    shown = lines(every.stdout)
    assert [r["to"] for r in shown] == names  # past the first page of 1,000
    assert shown[0] == {
        "to": "r0",
        "state": "delivered",
        "providerMessageId": "1029457500870543736",
    }
    assert shown[1] == {"to": "r1", "state": "pending"}
    failed_only = CliRunner().invoke(main, [*args, "--state", "failed"], env=env)
    assert lines(failed_only.stdout) == [
        {"to": "r1003", "state": "failed", "error": "refused:user_block"}
    ]
    unknown = CliRunner().invoke(main, ["message", "recipients", uuid.uuid4().hex], env=env)
    assert unknown.exit_code == 1 and "no multi-recipient message" in unknown.stderr
    wrong = CliRunner().invoke(main, [*args, "--state", "lost"], env=env)
    assert wrong.exit_code == 2


def test_message_recipients_through_the_api(redis_url: str) -> None:
    harness: Harness = make_harness(redis_url)
    try:
        with ServerThread(harness.app) as server:
            response = harness.submit({**TEXT, "to": ["a", "b", "c"]})
            message_id = response.json()["data"]["getMessageId"]
            store = harness.app.state.runtime.dispatcher.store
            store.recipients.record(MessageRef("c1", message_id), [(1, delivered("42"))])

            def cli(client: str, secret: str, channel: str, *extra: str) -> Result:
                remote = ["--api", server.url, "--client", client, "--secret", secret]
                return CliRunner().invoke(
                    main,
                    ["message", "recipients", message_id, *remote, "--channel", channel, *extra],
                )

            pending = cli("c1", "secret-one", "ch1", "--state", "pending")
            assert pending.exit_code == 0, pending.output
            assert [r["to"] for r in lines(pending.stdout)] == ["a", "c"]
            admin = cli("ops", "secret-ops", "ops", "--owner", "c1", "--state", "delivered")
            assert lines(admin.stdout) == [
                {"to": "b", "state": "delivered", "providerMessageId": "42"}
            ]
            other = cli("c2", "secret-two", "ch2")
            assert other.exit_code == 1
            assert other.stdout == ""
    finally:
        harness.close()
