"""``dispatcher worker -h`` is dispatcher's own help; Celery's options still pass through."""

from __future__ import annotations

import re
from typing import Any

import pytest
from click.testing import CliRunner

from dispatcher.cli import main


@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_worker_help_describes_dispatchers_worker(flag: str) -> None:
    result = CliRunner().invoke(main, ["worker", flag], prog_name="dispatcher")
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert text.startswith("Usage: dispatcher worker")
    for expected in (
        "DISPATCHER_WORKER_POOL",
        "DISPATCHER_WORKER_CONCURRENCY",
        "threads, 32",
        "two worker processes per CPU core",
        "-P, --pool",
        "-c, --concurrency",
        "--celery-help",
    ):
        assert expected in text, expected
    assert "celery --app" not in text and "Start worker instance" not in text


def test_worker_help_is_listed_like_every_other_command() -> None:
    result = CliRunner().invoke(main, ["-h"], prog_name="dispatcher")
    assert result.exit_code == 0
    assert re.search(r"\n  worker\s+Run a delivery worker", result.output), result.output


def test_celery_help_prints_celerys_worker_options() -> None:
    result = CliRunner().invoke(main, ["worker", "--celery-help"])
    assert result.exit_code == 0, result.output
    assert "--autoscale" in result.output and "--max-tasks-per-child" in result.output


def test_celery_options_pass_through_to_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from dispatcher.worker import app

    started: list[list[str]] = []
    monkeypatch.setattr(app, "worker_main", lambda argv: started.append(list(argv)))
    monkeypatch.setitem(app.conf, "worker_pool", app.conf.get("worker_pool"))
    args = ["-P", "solo", "-c", "3", "--without-gossip", "-Q", "other"]
    result: Any = CliRunner().invoke(main, ["worker", *args])
    assert result.exit_code == 0, result.output
    assert started == [["worker", *args]]
    assert app.conf["worker_pool"] == "solo"
