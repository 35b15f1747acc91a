"""Browser tests: Debian's headless chromium driven by Playwright against a real
``dispatcher api`` process, a real worker process and the simulators.

Each test leaves a screenshot in ``artifacts/screenshots/`` (git-ignored; CI keeps it as
an artifact). Playwright never downloads a browser here: it launches the system's
``chromium`` (``DISPATCHER_TEST_CHROMIUM`` names another binary).
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT

SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("DISPATCHER_TEST_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ADMIN, ADMIN_SECRET = "ops", "ops-console-secret-2b7c"
SENDER, SENDER_SECRET, CHANNEL = "shop", "shop-secret-8e1d", "web"
PASSWORD = "console-password-c41f"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).parent == Path(__file__).parent:
            item.add_marker(pytest.mark.browser)
            item.add_marker(pytest.mark.integration)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ApiProcess:
    """``dispatcher api`` in a child process of its own."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture()
def api(worker_env: dict[str, str], tmp_path: Path) -> Iterator[ApiProcess]:
    port = free_port()
    clients = {
        ADMIN: {"secret": ADMIN_SECRET, "channels": [CHANNEL], "admin": True},
        SENDER: {"secret": SENDER_SECRET, "channels": [CHANNEL]},
    }
    env = {
        **os.environ,
        **worker_env,
        "DISPATCHER_CLIENTS": json.dumps(clients),
        "DISPATCHER_CONSOLE_PASSWORD": PASSWORD,
    }
    log_path = tmp_path / "api.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dispatcher.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
            env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    server = ApiProcess(f"http://127.0.0.1:{port}", process, log_path)
    deadline = time.monotonic() + 60
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"dispatcher api exited:\n{server.log()[-3000:]}")
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"dispatcher api not up in 60 s:\n{server.log()[-3000:]}")
        time.sleep(0.1)
    yield server
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    assert PASSWORD not in server.log() and ADMIN_SECRET not in server.log()


@pytest.fixture(scope="module")
def chromium() -> Iterator[Any]:
    # Module scope: Playwright's sync API keeps an event loop running in this thread while
    # it is open, which asyncio.run() in later tests of the session would trip over.
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        raise RuntimeError(
            f"{CHROMIUM} not found: install Debian's chromium (apt-get install chromium) "
            "or set DISPATCHER_TEST_CHROMIUM"
        )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture()
def page(chromium: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh browser context (no cookies) at a laptop's size; screenshot at the end."""
    context = chromium.new_context(viewport={"width": 1366, "height": 900})
    context.set_default_timeout(20_000)
    page = context.new_page()
    yield page
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"), full_page=True)
    context.close()


def sign_in(page: Any, api: ApiProcess, client: str = ADMIN, secret: str = ADMIN_SECRET) -> None:
    """Open a console page, land on the sign-in form, sign in with the keyboard."""
    page.goto(f"{api.url}/console/messages")
    assert "/console/login" in page.url
    page.get_by_label("Admin client id").fill(client)
    page.get_by_label("Secret or console password").fill(secret)
    page.get_by_label("Secret or console password").press("Enter")
    page.wait_for_url(re.compile(r".*/console/messages$"))
