"""``dispatcher dev``: Redis, both simulators, the API and a worker, in one process group.

Children (embedded Redis, the worker) get a parent-death signal, so a SIGKILL
of this process leaves nothing behind; Ctrl-C or SIGTERM stops them in order.
"""

from __future__ import annotations

import json
import os
import secrets
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from dispatcher.config import Settings, unsafe_dev_mode
from dispatcher.embedded import RedisServer, die_with_parent, port_is_free, redis_answers
from dispatcher.logs import configure_logging
from dispatcher.sandbox.server import ServerThread

DEV_EASEMOB = {
    "DISPATCHER_EASEMOB_ORG": "dev-org",
    "DISPATCHER_EASEMOB_APP": "dev-app",
    "DISPATCHER_EASEMOB_CLIENT_ID": "dev-client-id",
    "DISPATCHER_EASEMOB_CLIENT_SECRET": "dev-client-secret",
}
DEV_QINIU = {
    "DISPATCHER_QINIU_ACCESS_KEY": "dev-access-key",
    "DISPATCHER_QINIU_SECRET_KEY": "dev-secret-key",
    "DISPATCHER_QINIU_BUCKET": "dev-bucket",
}
DEV_REDIS_PORT = 6390  # stable across runs, so the AOF's messages come back on the same URL
DEV_RETRIES = {"DISPATCHER_MAX_ATTEMPTS": "4", "DISPATCHER_BACKOFF_CAP": "2"}
DEV_CLIENT = "dev"
DEV_CHANNEL = "dev"


def data_dir() -> Path:
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "dispatcher"


def _has_all(settings: Settings, names: list[str]) -> bool:
    return all(getattr(settings, name) for name in names)


def run_dev(
    *, api_port: int, easemob_port: int, qiniu_port: int, concurrency: int, auth: bool
) -> None:
    from dispatcher.api.app import create_app
    from dispatcher.console import dev_banner_line
    from dispatcher.sandbox.easemob import create_easemob_app_from_settings
    from dispatcher.sandbox.qiniu import create_qiniu_app_from_settings, seed_demo_objects

    configured = Settings()
    configure_logging(configured.log_level, configured.log_format)
    if refusal := unsafe_dev_mode(configured, auth=auth):
        sys.exit(refusal)
    env: dict[str, str] = {}
    notes: list[str] = []

    redis_server: RedisServer | None = None
    if redis_answers(configured.redis_url):
        notes.append(f"Redis      {configured.redis_url} (configured)")
    else:
        redis_server = RedisServer(
            port=DEV_REDIS_PORT if port_is_free(DEV_REDIS_PORT) else None,
            data_dir=data_dir() / "redis",
            appendonly=True,
        ).start()
        env["DISPATCHER_REDIS_URL"] = redis_server.url
        notes.append(f"Redis      {redis_server.url} (embedded, AOF in {redis_server.data_dir})")

    real_easemob = _has_all(
        configured, ["easemob_org", "easemob_app", "easemob_client_id", "easemob_client_secret"]
    )
    if not real_easemob:
        env.update(DEV_EASEMOB)
        env["DISPATCHER_EASEMOB_BASE_URL"] = f"http://127.0.0.1:{easemob_port}"
    real_qiniu = _has_all(
        configured, ["qiniu_access_key", "qiniu_secret_key", "qiniu_bucket", "qiniu_domain"]
    )
    if not real_qiniu:
        env.update(DEV_QINIU)
        qiniu_url = f"http://127.0.0.1:{qiniu_port}"
        env.update(
            DISPATCHER_QINIU_DOMAIN=qiniu_url,
            DISPATCHER_QINIU_UP_HOST=qiniu_url,
            DISPATCHER_QINIU_RS_HOST=qiniu_url,
        )

    # Shorter retries than production so a dead letter shows up in seconds;
    # explicit settings win.
    for name, value in DEV_RETRIES.items():
        if name not in os.environ:
            env[name] = value
    notes.append(
        f"Retries    {os.environ.get('DISPATCHER_MAX_ATTEMPTS', DEV_RETRIES['DISPATCHER_MAX_ATTEMPTS'])} attempts, "
        f"backoff cap {os.environ.get('DISPATCHER_BACKOFF_CAP', DEV_RETRIES['DISPATCHER_BACKOFF_CAP'])} s (dev mode)"
    )

    secret = secrets.token_hex(16)
    if auth:
        env["DISPATCHER_AUTH_ENABLED"] = "true"
        env["DISPATCHER_CLIENTS"] = json.dumps(
            {DEV_CLIENT: {"secret": secret, "channels": [DEV_CHANNEL]}}
        )
    else:
        env["DISPATCHER_AUTH_ENABLED"] = "false"
    os.environ.update(env)
    settings = Settings()

    servers: list[ServerThread] = []
    worker: subprocess.Popen[bytes] | None = None
    stop = threading.Event()

    def request_stop(signum: int, _frame: Any) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        if not real_easemob:
            servers.append(
                ServerThread(create_easemob_app_from_settings(settings), port=easemob_port).start()
            )
            notes.append(
                f"Easemob    simulator http://127.0.0.1:{easemob_port}  (ledger: /_sandbox/requests)"
            )
        else:
            notes.append(
                f"Easemob    {settings.easemob_base_url} (real credentials from the environment)"
            )
        if not real_qiniu:
            qiniu_app = create_qiniu_app_from_settings(settings)
            demo_keys = seed_demo_objects(qiniu_app)
            servers.append(ServerThread(qiniu_app, port=qiniu_port).start())
            notes.append(
                f"Qiniu      simulator http://127.0.0.1:{qiniu_port}  (demo objects: {', '.join(demo_keys)})"
            )
        else:
            notes.append(
                f"Qiniu      {settings.qiniu_domain} (real credentials from the environment)"
            )

        worker = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "dispatcher.worker",
                "worker",
                "--pool",
                "threads",
                "-c",
                str(concurrency),
                "-l",
                settings.log_level,
                "-n",
                f"dev-{os.getpid()}@%h",
                "--without-mingle",
                "--without-gossip",
            ],
            env=os.environ.copy(),
            preexec_fn=die_with_parent,
        )
        notes.append(f"Worker     pid {worker.pid}, {concurrency} threads")
        servers.append(ServerThread(create_app(settings), port=api_port).start())
        notes.insert(0, f"API        http://127.0.0.1:{api_port}  (docs: /docs)")
        notes.insert(1, dev_banner_line(settings, f"http://127.0.0.1:{api_port}"))
        _banner(notes, api_port, auth, secret, settings.redis_url)

        while not stop.wait(0.5):
            if worker.poll() is not None:
                print(f"worker exited with code {worker.returncode}; stopping", file=sys.stderr)
                break
    finally:
        print("\nstopping dispatcher dev ...", file=sys.stderr)
        if worker is not None and worker.poll() is None:
            worker.terminate()
            try:
                worker.wait(15)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        for server in reversed(servers):
            server.stop()
        if redis_server is not None:
            redis_server.stop()
        print("stopped.", file=sys.stderr)


def _banner(notes: list[str], api_port: int, auth: bool, secret: str, redis_url: str) -> None:
    from dispatcher.api.paths import SUBMIT
    from dispatcher.api.signing import compute_sign

    base = f"http://127.0.0.1:{api_port}"
    body = json.dumps(
        {
            "messageType": 4,
            "from": "u000193f6f02e01764a0f869be49a2be21e01",
            "to": "148992289019003396",
            "messageInfo": {"videoMessage": "demo.mp4", "thumbMessage": "demo.jpg"},
        },
        separators=(",", ":"),
    )
    query = {"apiVersion": "01", "client": DEV_CLIENT, "channel": DEV_CHANNEL, "version": "2.0"}
    if auth:  # signature v2: this sign is good once, for the next five minutes
        query.update(timestamp=str(int(time.time())), nonce=secrets.token_hex(8))
    query["sign"] = (
        compute_sign(secret, "POST", SUBMIT, query, body.encode()) if auth else "unsigned"
    )
    query_text = "&".join(f"{k}={v}" for k, v in query.items())
    lines = ["", "dispatcher dev is up", *(f"  {note}" for note in notes), ""]
    if auth:
        lines += [
            f"  Signature checks ON. Dev client: --client {DEV_CLIENT} --secret {secret} --channel {DEV_CHANNEL}",
        ]
    else:
        lines += [
            "  !!! Signature checks are OFF (dev mode). Run `dispatcher dev --auth` to turn them on. !!!",
        ]
    remote = f"--api {base}"
    if auth:
        remote += f" --client {DEV_CLIENT} --secret {secret} --channel {DEV_CHANNEL}"
    lines += [
        "",
        "Try it:",
        f"  curl -s -X POST {shlex.quote(base + '/sender/v1/handleBasicMessage?' + query_text)} \\",
        f"       -H 'Content-Type: application/json' -d {shlex.quote(body)}",
        f"  dispatcher send {remote} --type text --from u1 --to u2 --text 'hello'",
        f"  dispatcher status {remote} <getMessageId>",
        "",
        "Local commands in another shell (dlq, reaper, send/status without --api):",
        f"  export DISPATCHER_REDIS_URL={redis_url}",
        "",
        "Ctrl-C stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)
