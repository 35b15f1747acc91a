"""docker-compose.yml and the Procfile describe the same deployment (no Docker engine here)."""

from __future__ import annotations

import os
import shlex
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[2]


def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def procfile() -> dict[str, list[str]]:
    entries = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            name, command = line.split(":", 1)
            expanded = os.path.expandvars(command.replace("${PORT:-8087}", "8087"))
            entries[name.strip()] = shlex.split(expanded)
    return entries


def test_compose_commands_are_the_procfile_commands() -> None:
    services = compose()["services"]
    processes = procfile()
    assert set(processes) == {"web", "worker"}
    assert services["api"]["command"] == processes["web"]
    assert services["worker"]["command"] == processes["worker"]


def test_compose_redis_keeps_data_and_never_evicts() -> None:
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    assert "redis-data:/data" in compose()["services"]["redis"]["volumes"]


def test_compose_services_have_healthchecks_and_workers_scale() -> None:
    services = compose()["services"]
    for name in ("redis", "api", "worker"):
        assert "test" in services[name]["healthcheck"], name
    assert "ports" not in services["worker"]  # --scale worker=N needs no port clash
    assert services["worker"]["depends_on"]["redis"]["condition"] == "service_healthy"
    assert services["sandbox"]["profiles"] == ["sandbox"]


def test_compose_rabbitmq_profile_is_the_broker_only_when_asked_for() -> None:
    services = compose()["services"]
    rabbitmq = services["rabbitmq"]
    assert rabbitmq["profiles"] == ["rabbitmq"]
    assert "rabbitmq-data:/var/lib/rabbitmq" in rabbitmq["volumes"]
    assert "test" in rabbitmq["healthcheck"]
    assert "RABBITMQ_DEFAULT_PASS" in " ".join(rabbitmq["command"])  # no guest login
    for name in ("api", "worker"):
        # Without the profile the broker URL is empty, and the broker is the store's Redis.
        assert (
            services[name]["environment"]["DISPATCHER_BROKER_URL"] == "${DISPATCHER_BROKER_URL:-}"
        )
        assert services[name]["depends_on"]["rabbitmq"] == {
            "condition": "service_healthy",
            "required": False,
        }


def test_every_service_is_built_from_the_one_dockerfile() -> None:
    services = compose()["services"]
    assert {services[name]["build"] for name in ("api", "worker", "sandbox")} == {"."}
    assert services["flower"]["build"]["context"] == "."
    assert (ROOT / "Dockerfile").read_text().count("FROM ") == 1


def test_compose_flower_runs_on_dispatchers_app_behind_a_password_on_loopback() -> None:
    flower = compose()["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    assert flower["build"]["args"]["EXTRAS"] in extras
    script = flower["command"][-1].replace("$$", "$")  # as compose hands it to sh
    assert "exec celery -A dispatcher.worker flower" in script
    assert all(port.startswith("127.0.0.1:") for port in flower["ports"])
    environment = flower["environment"]
    assert not [k for k in environment if "EASEMOB" in k or "QINIU" in k or "CLIENTS" in k]
    refused = subprocess.run(
        ["sh", "-c", script],
        env={"PATH": os.environ["PATH"], "FLOWER_BASIC_AUTH": ""},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1
    assert "FLOWER_BASIC_AUTH=user:password" in refused.stderr


def test_compose_sandbox_is_on_an_internal_network_publishes_nothing_and_gets_fake_credentials() -> (
    None
):
    spec = compose()
    sandbox = spec["services"]["sandbox"]
    assert "ports" not in sandbox
    assert sandbox["networks"] == ["sandbox"]
    assert spec["networks"]["sandbox"] == {"internal": True}
    for name in ("api", "worker"):  # they can reach it
        assert "sandbox" in spec["services"][name]["networks"], name
    environment = sandbox["environment"]
    assert environment is not spec["x-dispatcher-env"]
    assert not [v for v in environment.values() if "${" in str(v)], environment
    credentials = {k: v for k, v in environment.items() if "EASEMOB" in k or "QINIU" in k}
    assert len(credentials) == 7
    assert all(str(v).startswith("sandbox-") for v in credentials.values()), credentials
    assert "DISPATCHER_CLIENTS" not in environment


def test_compose_sentinel_profile_adds_replicas_and_three_sentinels_of_the_redis_service() -> None:
    services = compose()["services"]
    sentinels = [services[f"sentinel-{n}"] for n in (1, 2, 3)]
    replicas = [services[f"redis-replica-{n}"] for n in (1, 2)]
    for service in (*sentinels, *replicas):
        assert service["profiles"] == ["sentinel"]
        assert "test" in service["healthcheck"]
    for replica in replicas:
        command = replica["command"]
        assert command[command.index("--replicaof") + 1 :][:2] == ["redis", "6379"]
        assert command[command.index("--appendonly") + 1] == "yes"
        assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
    # The master name of the URL the README gives: the one the sentinels monitor.
    assert all("sentinel monitor dispatcher redis 6379 2" in s["command"][2] for s in sentinels)
    for name in ("api", "worker"):
        environment = services[name]["environment"]
        assert (
            environment["DISPATCHER_REDIS_URL"] == "${DISPATCHER_REDIS_URL:-redis://redis:6379/0}"
        )
        assert "DISPATCHER_REDIS_MIN_REPLICAS" in environment
        assert services[name]["depends_on"]["sentinel-1"]["required"] is False
