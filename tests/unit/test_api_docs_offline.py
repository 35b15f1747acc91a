"""/docs works without internet: the page and every file it references come from the API."""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from dispatcher.api.app import create_app
from dispatcher.sandbox.server import ServerThread
from tests.unit.test_api_support import make_settings


class References(HTMLParser):
    """Every URL a page makes the browser fetch: scripts, stylesheets, icons."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        url = values.get("src") if tag == "script" else None
        if tag == "link":
            url = values.get("href")
        if tag == "img":
            url = values.get("src")
        if url:
            self.urls.append(url)


@pytest.fixture()
def served_api(redis_url: str) -> Iterator[str]:
    with ServerThread(create_app(make_settings(redis_url))) as server:
        yield server.url


def test_docs_page_and_every_asset_it_references_are_served_by_the_api(served_api: str) -> None:
    page = httpx.get(f"{served_api}/docs", timeout=10)
    assert page.status_code == 200
    parser = References()
    parser.feed(page.text)
    # The OpenAPI document Swagger UI loads is named in the page's script.
    spec = re.search(r"url:\s*'([^']+)'", page.text)
    assert spec is not None, page.text
    urls = [*parser.urls, spec.group(1)]
    assert len(urls) >= 4, urls  # stylesheet, icon, script bundle, OpenAPI document

    kinds: dict[str, str] = {}
    for url in urls:
        absolute = urljoin(f"{served_api}/docs", url)
        assert urlsplit(absolute).netloc == urlsplit(served_api).netloc, (
            f"{url} is fetched from another host: the page would break offline"
        )
        answer = httpx.get(absolute, timeout=10)
        assert answer.status_code == 200, (url, answer.status_code)
        assert len(answer.content) > 100, url
        kinds[urlsplit(absolute).path] = answer.headers["content-type"].split(";")[0]
    assert "application/json" in kinds.values()
    assert "text/css" in kinds.values()
    assert "image/png" in kinds.values()
    scripts = [path for path, kind in kinds.items() if kind.endswith("javascript")]
    assert scripts, kinds
    bundle = httpx.get(f"{served_api}{scripts[0]}", timeout=10).text
    assert "SwaggerUIBundle" in bundle and "swagger-ui" in bundle


def test_docs_oauth_redirect_page_is_served(served_api: str) -> None:
    answer = httpx.get(f"{served_api}/docs/oauth2-redirect", timeout=10)
    assert answer.status_code == 200
    assert "<script" in answer.text


def test_with_docs_switched_off_their_assets_are_not_served(redis_url: str) -> None:
    settings = make_settings(redis_url, api_docs=False)
    with ServerThread(create_app(settings)) as server:
        for path in ("/docs", "/docs/assets/swagger-ui-bundle.js", "/openapi.json"):
            assert httpx.get(f"{server.url}{path}", timeout=10).status_code == 404, path
