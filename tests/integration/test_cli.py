"""The command line, run as a user would: subprocesses against real Redis, worker, simulators."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher import keys
from dispatcher.ids import MessageRef
from dispatcher.sandbox.qiniu import seed_demo_objects
from tests.conftest import wait_for_state

pytestmark = pytest.mark.integration

ASSETS = Path(__file__).resolve().parents[2] / "dispatcher" / "sandbox" / "assets"


def run(env: dict[str, str], *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check and result.returncode != 0:
        raise AssertionError(f"{args} exited {result.returncode}: {result.stderr}")
    return result


def test_upload_then_send_a_local_video_in_two_steps(
    worker_env: dict[str, str],
    dispatcher: Any,
    easemob: Any,
    qiniu_sim: Any,
    start_worker: Any,
    tmp_path: Path,
) -> None:
    start_worker()
    video = tmp_path / "holiday.mp4"
    video.write_bytes((ASSETS / "demo.mp4").read_bytes())
    key = run(worker_env, "upload", str(video)).stdout.strip()
    assert key.endswith(".mp4")
    message_id = run(
        worker_env, "send", "--type", "video", "--from", "u1", "--to", "u2", "--video", key
    ).stdout.strip()
    record = wait_for_state(dispatcher, message_id)
    assert record.state == "delivered", record.history
    shown = json.loads(run(worker_env, "status", message_id).stdout)
    assert shown["state"] == "delivered" and shown["getMessageId"] == message_id


def test_send_names_every_broken_field_and_exits_nonzero(worker_env: dict[str, str]) -> None:
    result = run(
        worker_env,
        "send",
        "--type",
        "video",
        "--from",
        "u1",
        "--to",
        "u2",
        "--video",
        "clip.avi",
        check=False,
    )
    assert result.returncode != 0
    assert "messageInfo.videoMessage" in result.stderr


def test_status_of_an_unknown_id_exits_1(worker_env: dict[str, str]) -> None:
    result = run(worker_env, "status", "nosuchid", check=False)
    assert result.returncode == 1
    assert "unknown getMessageId" in result.stderr


def test_send_to_several_then_list_each_recipients_outcome(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    run_id = uuid.uuid4().hex[:8]
    names = [f"cli{run_id}x{i}" for i in range(3)]
    failing = f"{easemob.url}/_sandbox/easemob/failing-targets"
    httpx.post(failing, json={"targets": {names[1]: "user blocked"}}, timeout=10).raise_for_status()
    try:
        start_worker()
        message_id = run(
            worker_env, "send", "--type", "text", "--from", "u1", "--text", "hi all",
            "--to", names[0], "--to", f"{names[1]},{names[2]}",
        ).stdout.strip()  # fmt: skip
        record = wait_for_state(dispatcher, message_id, {"partially_delivered", "delivered"})
    finally:
        httpx.post(failing, json={"targets": {}}, timeout=10).raise_for_status()
    assert record.state == "partially_delivered", record.history
    shown = [json.loads(line) for line in run(worker_env, "message", "recipients", message_id).stdout.splitlines()]  # fmt: skip
    assert [(r["to"], r["state"]) for r in shown] == [
        (names[0], "delivered"),
        (names[1], "failed"),
        (names[2], "delivered"),
    ]
    assert shown[0]["providerMessageId"].isdigit() and shown[1]["error"].startswith("refused:")
    only_failed = run(worker_env, "message", "recipients", message_id, "--state", "failed")
    assert [json.loads(line)["to"] for line in only_failed.stdout.splitlines()] == [names[1]]
    single = run(worker_env, "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "hi")
    one = run(worker_env, "message", "recipients", single.stdout.strip(), check=False)
    assert one.returncode == 1 and "no multi-recipient message" in one.stderr


def test_dlq_list_and_replay_round_trip(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any, qiniu_sim: Any, start_worker: Any
) -> None:
    seed_demo_objects(qiniu_sim.app)
    start_worker(max_attempts="2")
    easemob.fault(path="/messages", status=503, body={"error": "down"}, times=2)
    message_id = run(
        worker_env, "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "hi"
    ).stdout.strip()
    assert wait_for_state(dispatcher, message_id).state == "dead"
    listed = [json.loads(line) for line in run(worker_env, "dlq", "list").stdout.splitlines()]
    [entry] = [e for e in listed if e["getMessageId"] == message_id]
    assert entry["lastError"]["retryable"] is True
    shown = json.loads(run(worker_env, "status", message_id).stdout)
    # One time format in CLI output: ISO 8601 in UTC, as status prints.
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", entry["diedAt"]), entry
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z", shown["updatedAt"]), shown
    died = datetime.fromisoformat(entry["diedAt"])
    assert abs((died - datetime.fromisoformat(shown["updatedAt"])).total_seconds()) < 5
    replayed = run(worker_env, "dlq", "replay", message_id)
    assert "replayed 1 of 1" in replayed.stdout
    assert wait_for_state(dispatcher, message_id).state == "delivered"
    again = run(worker_env, "dlq", "replay", message_id, check=False)
    assert again.returncode == 1 and "not replayed" in again.stderr


def test_celery_inspect_ping_answers_for_a_running_worker(
    worker_env: dict[str, str], start_worker: Any
) -> None:
    start_worker()
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "dispatcher.worker",
            "inspect",
            "ping",
            "--timeout",
            "5",
        ],
        env={**os.environ, **worker_env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "pong" in result.stdout


def test_send_and_status_through_a_remote_signed_api(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    from dispatcher.api.app import create_app
    from dispatcher.config import Settings
    from dispatcher.sandbox.server import ServerThread
    from tests.conftest import settings_from_env

    start_worker()
    clients = {"shop": {"secret": "s3cret-shop", "channels": ["web"]}}
    settings = settings_from_env(worker_env).model_copy(
        update={"clients": Settings(clients=clients).clients}
    )
    remote = ["--client", "shop", "--secret", "s3cret-shop", "--channel", "web"]
    with ServerThread(create_app(settings)) as api:
        message_id = run(
            worker_env,
            "send",
            "--api",
            api.url,
            *remote,
            "--type",
            "text",
            "--from",
            "u1",
            "--to",
            "u2",
            "--text",
            "hi",
        ).stdout.strip()
        # The message is shop's: in its namespace.
        assert wait_for_state(dispatcher, MessageRef("shop", message_id)).state == "delivered"
        # Signed v2: the server guarded the request's (client, nonce).
        assert list(dispatcher.redis.scan_iter(match=keys.replay_guard("shop", "*")))
        shown = json.loads(run(worker_env, "status", "--api", api.url, *remote, message_id).stdout)
        assert shown["state"] == "delivered" and shown["client"] == "shop"
        wrong = run(
            worker_env, "status", "--api", api.url, "--client", "shop", "--secret", "nope", "--channel", "web",
            message_id, check=False,
        )  # fmt: skip
        assert wrong.returncode != 0 and "401" in wrong.stderr


def test_worker_pool_named_on_the_command_line_wins_over_the_configured_one(
    worker_env: dict[str, str], dispatcher: Any, easemob: Any
) -> None:
    """Celery takes an explicit ``--pool prefork`` for its default; ours must not."""
    env = {**os.environ, **worker_env, "DISPATCHER_WORKER_POOL": "threads"}
    process = subprocess.Popen(
        [sys.executable, "-m", "dispatcher.cli", "worker", "--pool", "prefork", "-c", "1"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        message_id = dispatcher.submit(
            {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}
        )
        record = wait_for_state(dispatcher, message_id)
        assert record.state == "delivered", record.history
    finally:
        process.terminate()
        output, _ = process.communicate(timeout=30)
    assert "concurrency: 1 (prefork)" in output, output[-2000:]
