"""The banner ``dispatcher dev`` prints once everything is up: where each part runs, and
commands to try (a signed curl when signature checks are on)."""

from __future__ import annotations

import json
import secrets
import shlex
import time

from dispatcher.devmode_env import DEV_CHANNEL, DEV_CLIENT, DEV_OPENID


def print_banner(notes: list[str], api_port: int, auth: bool, secret: str, redis_url: str) -> None:
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
        f"  dispatcher send {remote} --type text --from u1 --to {DEV_OPENID} --text 'hello'"
        "   # WeChat",
        f"  dispatcher status {remote} <getMessageId>",
        "",
        "Local commands in another shell (dlq, reaper, send/status without --api):",
        f"  export DISPATCHER_REDIS_URL={redis_url}",
        "",
        "Ctrl-C (or SIGTERM) stops everything.",
        "",
    ]
    print("\n".join(lines), flush=True)
