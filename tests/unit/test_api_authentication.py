"""Authentication over the API: nothing about a request is judged before its caller is
known."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dispatcher.api.paths import DEAD_LETTERS, SUBMIT
from tests.unit.test_api_support import Harness, field_errors, make_harness


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url, qiniu_domain="http://media.example.com")
    yield harness
    harness.close()


@pytest.mark.parametrize(
    ("method", "path", "query"),
    [
        ("GET", DEAD_LETTERS, {"limit": "abc"}),
        ("GET", DEAD_LETTERS, {"offset": "-x"}),
        ("GET", "/sender/v1/messages/not-an-id!", {}),
        ("GET", "/sender/v1/messages/" + "x" * 65, {}),
        ("POST", SUBMIT, {}),
    ],
)
def test_unauthenticated_malformed_requests_get_401_not_400(
    api: Harness, method: str, path: str, query: dict[str, str]
) -> None:
    params = {"client": "c1", "channel": "ch1", "sign": "0" * 64, **query}
    response = api.http.request(method, path, params=params, content=b"{not json")
    assert response.status_code == 401, response.text


def test_an_authenticated_operator_gets_the_400_for_a_bad_limit(api: Harness) -> None:
    response = api.http.get(DEAD_LETTERS, params=api.params(b"", client="ops", limit="abc"))
    assert response.status_code == 400
    assert "limit" in field_errors(response)
