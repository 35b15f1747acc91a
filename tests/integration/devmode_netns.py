"""``dispatcher dev`` on a machine of its own: a network namespace where port 6379 is ours.

Run inside a fresh network namespace (only a loopback, nothing listening), so
the scenario owns 127.0.0.1:6379 and dev mode's default ports whatever else
runs on the machine. With ``--machine-redis`` a Redis answers on 6379, as on a
developer's machine that has one; without it nothing does. The scenario starts
``dispatcher dev`` with no ``DISPATCHER_*`` variables, sends two messages (one
through the API, one straight to Redis with the banner's export line), waits
for both to be delivered, stops dev mode, and prints one JSON object: what the
banner said, the deliveries, and what the Redis on 6379 saw. ``--tour FILE``
also runs the README's tour (its first ``sh`` block after "A tour in dev mode")
and reports each command's exit code.

    python -m tests.integration.devmode_netns --workdir DIR [--machine-redis] [--tour README.md]

:func:`command` wraps such a call in ``unshare``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import redis

from dispatcher.embedded import RedisServer, find_server_binary

ROOT = Path(__file__).resolve().parents[2]
MACHINE_PORT = 6379


def command(*args: str) -> list[str]:
    """``python -m tests.integration.devmode_netns ARGS`` in a network namespace of its own."""
    unshare = ["unshare", "--net"] + ([] if os.geteuid() == 0 else ["--map-root-user"])
    inner = [sys.executable, "-m", "tests.integration.devmode_netns", *args]
    return [*unshare, "--", "sh", "-c", 'ip link set lo up && exec "$@"', "netns", *inner]


def dispatcher_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dispatcher.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def machine_view(client: redis.Redis) -> dict[str, Any]:
    """What the Redis on 6379 has seen: connections, keys per database, writes."""
    return {
        "connections_received": int(client.info("stats")["total_connections_received"]),
        "keyspace": {db: info["keys"] for db, info in client.info("keyspace").items()},
        "changes": int(client.info("persistence")["rdb_changes_since_last_save"]),
        "clients": len(client.client_list()),
    }


def wait_for(predicate: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(f"{what} not within {timeout}s")


def run(workdir: Path, machine_redis: bool, tour: Path | None) -> dict[str, Any]:
    machine: RedisServer | None = None
    watch: redis.Redis | None = None
    if machine_redis:
        # As the machine's Redis is started: no AOF, no snapshots.
        machine = RedisServer(
            port=MACHINE_PORT, data_dir=workdir / "machine-redis", appendonly=False,
            binary=find_server_binary(),
        ).start()  # fmt: skip
        watch = redis.Redis(port=MACHINE_PORT, single_connection_client=True)
        machine_before = machine_view(watch)
    env = {k: v for k, v in os.environ.items() if not k.startswith("DISPATCHER_")}
    env.update(XDG_DATA_HOME=str(workdir / "data"), PYTHONUNBUFFERED="1")
    log_path = workdir / "dev.log"
    with log_path.open("wb") as log:
        dev = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "dev"],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    result: dict[str, Any] = {}
    try:
        wait_for(
            lambda: (
                dev.poll() is not None
                or (
                    "dispatcher dev is up" in log_path.read_text()
                    and " ready." in log_path.read_text()
                )
            ),
            120,
            "dispatcher dev up",
        )
        output = log_path.read_text()
        if dev.poll() is not None:
            raise RuntimeError(f"dispatcher dev exited:\n{output[-3000:]}")
        export = re.search(r"^\s*export (DISPATCHER_REDIS_URL=\S+)$", output, re.M)
        assert export is not None, output
        result["export"] = export.group(1)
        result["redis_line"] = next(
            line.strip() for line in output.splitlines() if "Redis  " in line
        )
        local = {**env, "DISPATCHER_REDIS_URL": export.group(1).split("=", 1)[1]}
        sent = [
            dispatcher_cli(
                "send", "--api", "http://127.0.0.1:8087",
                "--type", "text", "--from", "u1", "--to", "u2", "--text", "through the API",
                env=env,
            ),
            dispatcher_cli(
                "send", "--type", "text", "--from", "u1", "--to", "u2", "--text", "straight",
                env=local,
            ),
        ]  # fmt: skip
        for reply in sent:
            assert reply.returncode == 0, reply.stderr
        ids = [reply.stdout.strip() for reply in sent]

        def states() -> list[str] | None:
            found = [
                json.loads(dispatcher_cli("status", i, env=local).stdout)["state"] for i in ids
            ]
            return found if all(state == "delivered" for state in found) else None

        result["delivered"] = wait_for(states, 60, "both messages delivered")
        if tour is not None:
            result["tour"] = run_tour(tour, local, workdir)
    finally:
        dev.send_signal(signal.SIGTERM)
        try:
            dev.wait(30)
        except subprocess.TimeoutExpired:
            dev.kill()
            dev.wait()
        result["dev_exit"] = dev.returncode
        if watch is not None and machine is not None:
            result["machine_before"] = machine_before
            result["machine_after"] = machine_view(watch)
            watch.close()
            machine.cleanup()
    return result


def tour_commands(readme: Path) -> list[str]:
    """The README tour's commands, one per entry (with their continuation lines; no comments)."""
    text = readme.read_text()
    section = text[text.index("## A tour in dev mode") :]
    block = section[section.index("```sh\n") + 6 :]
    block = block[: block.index("```")]
    commands, current = [], ""
    for line in block.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line + "\n"
        if not line.endswith("\\"):
            commands.append(current)
            current = ""
    return commands


def run_tour(readme: Path, env: dict[str, str], workdir: Path) -> list[dict[str, Any]]:
    """Each tour command in one bash session (its variables carry over), with exit code."""
    env = {**env, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"}
    script = ["set +e"]
    for index, text in enumerate(tour_commands(readme)):
        script += [f"echo '@@ {index} start'", text, f'echo "@@ {index} exit $?"']
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        env=env, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        timeout=600,
    )  # fmt: skip
    steps: list[dict[str, Any]] = []
    for index, text in enumerate(tour_commands(readme)):
        part = done.stdout.split(f"@@ {index} start\n", 1)[1].split(f"@@ {index} exit ", 1)
        steps.append(
            {"command": text, "exit": int(part[1].split("\n", 1)[0]), "output": part[0][-2000:]}
        )
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, required=True)
    parser.add_argument("--machine-redis", action="store_true")
    parser.add_argument("--tour", type=Path)
    args = parser.parse_args()
    print(json.dumps(run(args.workdir, args.machine_redis, args.tour)))


if __name__ == "__main__":
    main()
