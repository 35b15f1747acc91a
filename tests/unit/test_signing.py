"""Request signatures (SPEC §3.4): the pure functions, then the API's 401 answers."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.api.auth import Authenticator
from dispatcher.api.signing import canonical_string, compute_sign, sign_matches, unsignable
from dispatcher.config import Settings
from dispatcher.errors import Unauthorized
from tests.unit.test_api_support import TEXT, Harness, body_of, envelope_ok, make_harness, unique_id

# Reference values computed with `openssl dgst -<alg> -hmac s3cret` over the canonical string.
OPENSSL_SHA256 = "495ddfe3e4da3acab537ba3c86b76e2768e23fe213330f336e8535caf96f4eb4"
OPENSSL_MD5 = "e386d8bf278bc6bd174bab653267d6e6"


# ---------------------------------------------------------------------------
# Pure


def test_canonical_string_is_sorted_query_without_sign_newline_raw_body() -> None:
    params = [("version", "2.0"), ("sign", "ignored"), ("client", "c1"), ("apiVersion", "01")]
    body = b'{"x": "\xe4\xbd\xa0"}'
    assert canonical_string(params, body) == b"apiVersion=01&client=c1&version=2.0\n" + body


def test_canonical_string_of_no_parameters_and_no_body_is_a_newline() -> None:
    assert canonical_string({}, b"") == b"\n"


def test_sha256_sign_matches_openssl() -> None:
    sign = compute_sign("s3cret", {"client": "c1", "channel": "ch1"}, b'{"a":1}')
    assert sign == OPENSSL_SHA256


def test_md5_sign_matches_openssl() -> None:
    sign = compute_sign("s3cret", {"client": "c1", "channel": "ch1"}, b'{"a":1}', "md5")
    assert sign == OPENSSL_MD5


@pytest.mark.parametrize("sign", [OPENSSL_SHA256, OPENSSL_MD5])
def test_sign_matches_accepts_either_length(sign: str) -> None:
    assert sign_matches(b"s3cret", b'channel=ch1&client=c1\n{"a":1}', sign)


@pytest.mark.parametrize(
    "sign",
    [OPENSSL_SHA256[:-1] + "0", OPENSSL_SHA256[:40], OPENSSL_MD5 + "00", "", "é" * 64],
)
def test_sign_matches_refuses_anything_else(sign: str) -> None:
    assert not sign_matches(b"s3cret", b'channel=ch1&client=c1\n{"a":1}', sign)


@pytest.mark.parametrize(
    ("name", "value"),
    [("a", "1&b=2"), ("a=b", "c"), ("", "x"), ("a", "line\nbreak"), ("a&b", "c")],
)
def test_parameters_that_would_make_the_canonical_string_ambiguous_are_unsignable(
    name: str, value: str
) -> None:
    assert unsignable(name, value)


def test_ordinary_parameters_are_signable() -> None:
    assert unsignable("channel", "eba920d452d34adb8f2badb08b9e69bb") is None
    assert unsignable("note", "a=b c/d?é") is None


def _authenticator(**overrides: Any) -> Authenticator:
    settings = Settings.model_validate(
        {"clients": {"c1": {"secret": "s", "channels": ["ch1"]}}, **overrides}
    )
    return Authenticator(settings)


def _query(timestamp: int | None, body: bytes = b"") -> list[tuple[str, str]]:
    params = {"client": "c1", "channel": "ch1"}
    if timestamp is not None:
        params["timestamp"] = str(timestamp)
    return [*params.items(), ("sign", compute_sign("s", params, body))]


@pytest.mark.parametrize("skew", [-300, 300, 0])
def test_timestamp_on_the_window_edge_is_accepted(skew: int) -> None:
    now = 1_700_000_000
    caller = _authenticator().authenticate(_query(now + skew), b"", now=now)
    assert caller.client == "c1"


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_past_the_window_is_refused(skew: int) -> None:
    now = 1_700_000_000
    with pytest.raises(Unauthorized, match="window"):
        _authenticator().authenticate(_query(now + skew), b"", now=now)


def test_replay_guard_lasts_until_the_sign_goes_stale() -> None:
    """A sign dated in the future stays valid until timestamp + window: guard it that long."""
    now = 1_700_000_000
    caller = _authenticator().authenticate(_query(now + 300), b"", now=now)
    assert caller.guard is not None
    assert caller.guard_ttl_ms >= 600_000
    stale_soon = _authenticator().authenticate(_query(now - 290), b"", now=now)
    assert 10_000 <= stale_soon.guard_ttl_ms <= 12_000


def test_without_timestamp_there_is_no_replay_guard() -> None:
    assert _authenticator().authenticate(_query(None), b"").guard is None


def test_auth_disabled_takes_the_client_at_its_word_and_shows_everything() -> None:
    caller = _authenticator(auth_enabled=False).authenticate([("client", "anyone")], b"junk")
    assert caller.client == "anyone"
    assert caller.can_see("someone-else")


def test_auth_disabled_warns_loudly_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        _authenticator(auth_enabled=False).warn_about_configuration()
    assert any(
        "AUTH IS DISABLED" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


# ---------------------------------------------------------------------------
# Over the API


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def _with_id(message_id: str) -> dict[str, Any]:
    return {**TEXT, "getMessageId": message_id}


def _refusals(api: Harness, message_id: str) -> dict[str, Any]:
    body = body_of(_with_id(message_id))
    other_body = body_of(_with_id(message_id + "x"))
    now = int(time.time())
    return {
        "wrong sign (other secret)": api.params(body, secret="not-the-secret"),
        "sign for another body": {**api.params(other_body)},
        "stale timestamp": api.params(body, timestamp=now - 301),
        "timestamp far in the future": api.params(body, timestamp=now + 301),
        "timestamp not a number": api.params(body, timestamp="soon"),  # type: ignore[arg-type]
        "unknown client": api.params(body, client="intruder", secret="whatever", channel="ch1"),
        "channel not allowed": api.params(body, channel="ch2"),
        "another client's channel": api.params(body, client="c1", channel="ops"),
        "missing sign": {k: v for k, v in api.params(body).items() if k != "sign"},
        "missing client": {k: v for k, v in api.params(body).items() if k != "client"},
        "uppercase sign": {**api.params(body), "sign": api.params(body)["sign"].upper()},
        "sign of 40 hex": {**api.params(body), "sign": api.params(body)["sign"][:40]},
    }


REFUSALS = [
    "wrong sign (other secret)",
    "sign for another body",
    "stale timestamp",
    "timestamp far in the future",
    "timestamp not a number",
    "unknown client",
    "channel not allowed",
    "another client's channel",
    "missing sign",
    "missing client",
    "uppercase sign",
    "sign of 40 hex",
]


@pytest.mark.parametrize("case", REFUSALS)
def test_badly_signed_submit_gets_401_and_leaves_nothing(api: Harness, case: str) -> None:
    message_id = unique_id()
    params = _refusals(api, message_id)[case]
    before = api.queued()
    response = api.submit(_with_id(message_id), params=params)
    assert response.status_code == 401, response.text
    envelope = envelope_ok(response)
    assert envelope["data"] is None
    assert envelope["message"]
    assert api.queued() == before
    assert not api.has_record(message_id)


def test_duplicated_client_parameter_is_refused(api: Harness) -> None:
    body = body_of(TEXT)
    params = [*api.params(body).items(), ("client", "c2")]
    response = api.http.post("/sender/v1/handleBasicMessage", params=params, content=body)
    assert response.status_code == 401
    assert "more than once" in response.json()["message"]


def test_replayed_request_gets_401_and_queues_nothing_more(api: Harness) -> None:
    message_id = unique_id()
    body = body_of(_with_id(message_id))
    params = api.params(body)
    first = api.submit(body, params=params)
    assert first.status_code == 200, first.text
    queued = api.queued()
    replay = api.submit(body, params=params)
    assert replay.status_code == 401
    assert "replay" in replay.json()["message"]
    assert api.queued() == queued
    guard = keys.replay_guard("c1", params["sign"])
    assert 0 < api.redis.pttl(guard) <= (2 * api.settings.signature_window + 2) * 1000


@pytest.mark.parametrize("algorithm", ["sha256", "md5"])
def test_both_hmac_lengths_are_accepted(api: Harness, algorithm: Any) -> None:
    params = api.params(body_of(TEXT), algorithm=algorithm)
    assert len(params["sign"]) == (64 if algorithm == "sha256" else 32)
    response = api.submit(TEXT, params=params)
    assert response.status_code == 200, response.text
    assert api.has_record(response.json()["data"]["getMessageId"])


def test_unsigned_garbage_gets_401_not_400(api: Harness) -> None:
    """Without a valid sign nobody learns how the body would have been judged."""
    response = api.submit(b"not json", params={"client": "c1", "channel": "ch1", "sign": "0" * 64})
    assert response.status_code == 401


def test_seed_style_request_without_timestamp_can_be_resent_idempotently(api: Harness) -> None:
    """No timestamp, no replay guard: a legacy caller retrying the same bytes gets the same id."""
    message_id = unique_id()
    body = body_of(_with_id(message_id))
    params = api.params(body, timestamp=None)
    assert "timestamp" not in params
    first = api.submit(body, params=params)
    again = api.submit(body, params=params)
    assert first.status_code == again.status_code == 200
    assert first.json()["data"] == again.json()["data"] == {"getMessageId": message_id}
    assert api.queued() == 1


def test_refusals_never_log_the_secret_or_a_whole_sign(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = body_of(TEXT)
    params = api.params(body, secret="wrong-secret")
    with caplog.at_level(logging.DEBUG):
        assert api.submit(body, params=params).status_code == 401
        assert api.submit(body, params={**api.params(body), "channel": "ch2"}).status_code == 401
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dispatcher"))
    assert "401" in text
    assert params["sign"] not in text
    assert "secret-one" not in text and "wrong-secret" not in text


DOCS = Path(__file__).resolve().parents[2] / "docs" / "api.md"


def test_worked_example_in_the_docs_reproduces() -> None:
    """docs/api.md's bytes, run through our signer, give the signs the page prints."""
    text = DOCS.read_text(encoding="utf-8")
    body = re.search(r"^BODY='(.*)'$", text, re.MULTILINE).group(1).encode()  # type: ignore[union-attr]
    query = re.search(r"^QUERY='(.*)'$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    params = [(name, value) for name, _, value in (p.partition("=") for p in query.split("&"))]
    assert canonical_string(params, body) == query.encode() + b"\n" + body  # already sorted
    sha256 = compute_sign("demo-secret-do-not-use", params, body)
    md5 = compute_sign("demo-secret-do-not-use", params, body, "md5")
    assert f"HMAC-SHA256: {sha256}" in text
    assert f"HMAC-MD5:    {md5}" in text
    assert f"&sign={sha256}" in text
    assert f"Body ({len(body)} bytes" in text
    assert f"body; {len(query) + 1 + len(body)} bytes" in text
