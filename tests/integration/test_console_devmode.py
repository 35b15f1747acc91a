"""``dispatcher dev`` prints the console's URL and a one-time sign-in link that works once."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.integration.test_devmode import DevProcess

pytestmark = pytest.mark.integration


@pytest.fixture()
def dev(tmp_path: Path) -> Iterator[DevProcess]:
    process = DevProcess(tmp_path)
    yield process
    process.kill_all()


def test_dev_banner_prints_the_console_and_a_one_time_link(dev: DevProcess) -> None:
    dev.wait_ready()
    base = f"http://127.0.0.1:{dev.api_port}"
    assert f"Console    {base}/console" in dev.output()
    links = re.findall(rf"{re.escape(base)}/console/login/once\?token=[\w-]+", dev.output())
    assert len(links) == 1
    with httpx.Client(timeout=10) as browser:
        signed_in = browser.get(links[0], follow_redirects=False)
        assert (
            signed_in.status_code == 303
            and "dispatcher_console=" in signed_in.headers["set-cookie"]
        )
        browser.cookies = signed_in.cookies
        live = browser.get(f"{base}/console/live/data")
        assert live.status_code == 200 and "counters" in live.json()
    again = httpx.get(links[0], timeout=10, follow_redirects=False)
    assert again.status_code == 403
