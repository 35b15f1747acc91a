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
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, ApiProcess

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


@pytest.fixture()
def api(worker_env: dict[str, str], tmp_path: Path) -> Iterator[ApiProcess]:
    clients = {
        ADMIN: {"secret": ADMIN_SECRET, "channels": [CHANNEL], "admin": True},
        SENDER: {"secret": SENDER_SECRET, "channels": [CHANNEL]},
    }
    env = {
        **worker_env,
        "DISPATCHER_CLIENTS": json.dumps(clients),
        "DISPATCHER_CONSOLE_PASSWORD": PASSWORD,
    }
    server = ApiProcess.start(env, tmp_path / "api.log")
    yield server
    server.stop()
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
