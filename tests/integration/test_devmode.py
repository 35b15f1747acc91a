"""``dispatcher dev`` and the Procfile, started and stopped as an operator would."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from dispatcher.embedded import free_port
from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def closed_port() -> int:
    port = free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def descendants(pid: int) -> set[int]:
    found: set[int] = set()
    pending = [pid]
    while pending:
        parent = pending.pop()
        for task in Path(f"/proc/{parent}/task").glob("*"):
            try:
                children = (task / "children").read_text().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    pending.append(child)
    return found


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def wait_gone(pids: set[int], timeout: float = 20.0) -> set[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        left = {pid for pid in pids if alive(pid)}
        if not left:
            return set()
        time.sleep(0.1)
    return {pid for pid in pids if alive(pid)}


class DevProcess:
    def __init__(self, tmp_path: Path) -> None:
        self.api_port = free_port()
        self.log_path = tmp_path / "dev.log"
        env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
        env.update(
            DISPATCHER_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",  # "no Redis running"
            XDG_DATA_HOME=str(tmp_path / "data"),
            PYTHONUNBUFFERED="1",
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dispatcher.cli",
                "dev",
                "--port",
                str(self.api_port),
                "--easemob-port",
                str(free_port()),
                "--qiniu-port",
                str(free_port()),
                "--concurrency",
                "4",
            ],
            env=env,
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if "dispatcher dev is up" in out and " ready." in out:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"dispatcher dev exited:\n{out[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"dispatcher dev not ready:\n{self.output()[-3000:]}")

    def printed_curl(self) -> str:
        lines = self.output().splitlines()
        start = next(
            i for i, line in enumerate(lines) if line.strip().startswith("curl -s -X POST")
        )
        return lines[start].strip().rstrip("\\") + " " + lines[start + 1].strip()

    def kill_all(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture()
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    process = DevProcess(tmp_path)
    yield process
    process.kill_all()


def test_dev_without_redis_starts_embedded_valkey_and_the_printed_curl_is_delivered(
    dev: DevProcess,
) -> None:
    dev.wait_ready()
    out = dev.output()
    assert "(embedded, AOF in" in out
    assert "Signature checks are OFF" in out
    reply = subprocess.run(
        ["bash", "-c", dev.printed_curl()], capture_output=True, text=True, timeout=30
    )
    envelope = json.loads(reply.stdout)
    assert envelope["code"] == 200, envelope
    message_id = envelope["data"]["getMessageId"]
    deadline = time.monotonic() + 30
    record: dict[str, Any] = {}
    while time.monotonic() < deadline:
        status = httpx.get(
            f"http://127.0.0.1:{dev.api_port}/sender/v1/messages/{message_id}",
            params={"client": "dev", "channel": "dev", "sign": "unsigned"},
            timeout=10,
        ).json()
        record = status.get("data") or {}
        if record.get("state") == "delivered":
            break
        time.sleep(0.2)
    assert record.get("state") == "delivered", record


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_dev_leaves_no_process_behind(dev: DevProcess, how: signal.Signals) -> None:
    dev.wait_ready()
    children = descendants(dev.process.pid)
    assert len(children) >= 2, "expected at least the embedded Redis and the worker"
    os.kill(dev.process.pid, how)
    dev.process.wait(timeout=30)
    assert wait_gone(children) == set()


def test_procfile_web_and_worker_deliver_under_honcho(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, **worker_env, "PORT": str(port), "DISPATCHER_AUTH_ENABLED": "false"}
    log = (tmp_path / "honcho.log").open("wb")
    honcho = subprocess.Popen(
        [sys.executable, "-m", "honcho", "start", "-f", str(ROOT / "Procfile")],
        env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        body = {
            "messageType": 1,
            "from": "u1",
            "to": "u2",
            "messageInfo": {"textMessage": "via Procfile"},
        }
        reply = httpx.post(
            f"{base}/sender/v1/handleBasicMessage",
            params={
                "apiVersion": "01",
                "client": "any",
                "channel": "any",
                "version": "2.0",
                "sign": "x",
            },
            json=body,
            timeout=10,
        ).json()
        assert reply["code"] == 200, reply
        message_id = reply["data"]["getMessageId"]
        state = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and state != "delivered":
            state = (
                httpx.get(f"{base}/sender/v1/messages/{message_id}", timeout=5).json().get("data")
                or {}
            ).get("state")
            time.sleep(0.2)
        assert state == "delivered", (tmp_path / "honcho.log").read_text()[-3000:]
    finally:
        children = descendants(honcho.pid)
        honcho.send_signal(signal.SIGTERM)
        try:
            honcho.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(honcho.pid, signal.SIGKILL)
            honcho.wait()
    assert wait_gone(children) == set()
    text = (tmp_path / "honcho.log").read_text()
    assert re.search(r"web\.1\s+\|", text) and re.search(r"worker\.1\s+\|", text)


def test_dev_refuses_to_run_without_auth_in_front_of_real_easemob_credentials(
    tmp_path: Path,
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(
        DISPATCHER_REDIS_URL=f"redis://127.0.0.1:{closed_port()}/0",
        DISPATCHER_EASEMOB_ORG="acme",
        DISPATCHER_EASEMOB_APP="chat",
        DISPATCHER_EASEMOB_CLIENT_ID="YXA6-real-looking",
        DISPATCHER_EASEMOB_CLIENT_SECRET="real-looking-secret",
        XDG_DATA_HOME=str(tmp_path / "data"),
    )
    command = [sys.executable, "-m", "dispatcher.cli", "dev", "--port", str(free_port())]
    process = subprocess.Popen(
        command, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, start_new_session=True,
    )  # fmt: skip
    try:
        output, _ = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        raise AssertionError(f"dispatcher dev started anyway:\n{output[-3000:]}") from None
    assert process.returncode != 0
    assert "refusing to start" in output and "Easemob" in output
    assert "dispatcher dev --auth" in output and "DISPATCHER_DEV_ALLOW_NO_AUTH" in output
    assert "real-looking-secret" not in output
    assert "dispatcher dev is up" not in output
