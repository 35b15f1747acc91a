"""``dispatcher send --file`` straight to Redis (no API): lines in batches, every refused
line named with its number and fields, exit 1 when any was refused."""

from __future__ import annotations

import io
import json
import uuid
from pathlib import Path

from click.testing import CliRunner

from dispatcher.cli import main
from dispatcher.cli_send_file import describe, read_lines
from dispatcher.errors import InvalidMessage, RateLimited
from dispatcher.ids import MessageRef
from dispatcher.producer import Dispatcher
from tests.unit.test_api_support import TEXT, make_settings


def test_read_lines_numbers_lines_and_refuses_what_is_no_object() -> None:
    source = io.StringIO('{"a": 1}\n\n[1]\n{oops\n')
    lines = list(read_lines(source))
    assert [number for number, _ in lines] == [1, 3, 4]
    assert lines[0][1] == {"a": 1}
    assert isinstance(lines[1][1], InvalidMessage) and isinstance(lines[2][1], InvalidMessage)
    assert describe(3, lines[1][1]) == ["line 3: body: must be a JSON object"]
    assert describe(9, RateLimited("c1", 2.0)) == ["line 9: rate limited; send it again after 2 s"]


def test_send_file_to_redis_in_batches(redis_url: str, tmp_path: Path) -> None:
    settings = make_settings(redis_url)
    run = uuid.uuid4().hex[:8]
    bodies = [json.dumps({**TEXT, "getMessageId": f"s{run}x{i}"}) for i in range(7)]
    bodies[4] = json.dumps({**TEXT, "messageType": 99})
    source = tmp_path / "m.jsonl"
    source.write_text("\n".join(bodies), encoding="utf-8")
    env = {"DISPATCHER_REDIS_URL": redis_url, "DISPATCHER_QUEUE": settings.queue}
    args = ["send", "--file", str(source), "--batch-size", "3", "--client", "c9"]

    result = CliRunner().invoke(main, args, env=env)

    assert result.exit_code == 1, result.output
    assert "line 5: messageType:" in result.stderr
    assert "6 accepted, 1 refused" in result.stderr
    printed = [line.split("\t") for line in result.stdout.splitlines()]
    assert printed == [[str(i + 1), f"s{run}x{i}"] for i in range(7) if i != 4]
    producer = Dispatcher(settings)
    try:
        assert producer.status(MessageRef("c9", f"s{run}x6")) is not None
        assert producer.status(MessageRef("c9", f"s{run}x4")) is None
    finally:
        producer.redis.delete(settings.queue)
        producer.close()


def test_send_file_takes_no_message_options_and_a_sane_batch_size(tmp_path: Path) -> None:
    source = tmp_path / "m.jsonl"
    source.write_text(json.dumps(TEXT), encoding="utf-8")
    mixed = CliRunner().invoke(main, ["send", "--file", str(source), "--to", "u2"])
    assert mixed.exit_code == 2 and "--file" in mixed.output
    huge = CliRunner().invoke(main, ["send", "--file", str(source), "--batch-size", "501"])
    assert huge.exit_code == 2 and "1 to 500" in huge.output
    nothing = CliRunner().invoke(main, ["send"])
    assert nothing.exit_code == 2 and "--type, --from and --to are required" in nothing.output
