"""Request signatures (docs/security.md): the pure functions, the authenticator, then the
API's 401 answers."""

from __future__ import annotations

import logging
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dispatcher import keys
from dispatcher.api.auth import Authenticator
from dispatcher.api.paths import SUBMIT
from dispatcher.api.signing import (
    canonical_request,
    canonical_string,
    compute_legacy_sign,
    compute_sign,
    sign_matches,
    unsignable,
)
from dispatcher.config import Settings
from dispatcher.errors import Unauthorized
from dispatcher.ids import DEFAULT_NAMESPACE
from tests.unit.test_api_support import TEXT, Harness, body_of, envelope_ok, make_harness, unique_id

ROOT = Path(__file__).resolve().parents[2]
PARAMS = {"apiVersion": "01", "client": "c1", "channel": "ch1"}
# Reference values computed with `openssl dgst -<alg> -hmac s3cret` over the canonical strings.
OPENSSL_V2_SHA256 = "31cc2d6045cd1d4bd9c41cae359299ac8b4562837486a6912c5cf75885f9dd50"
OPENSSL_V2_MD5 = "d05d1f2116e3c1a0dbbde7b8fb77684e"
OPENSSL_V1_SHA256 = "495ddfe3e4da3acab537ba3c86b76e2768e23fe213330f336e8535caf96f4eb4"
OPENSSL_V1_MD5 = "e386d8bf278bc6bd174bab653267d6e6"


# ---------------------------------------------------------------------------
# Pure


def test_canonical_request_is_method_path_sorted_query_and_raw_body_one_per_line() -> None:
    params = [("version", "2.0"), ("sign", "ignored"), ("client", "c1"), ("apiVersion", "01")]
    body = b'{"x": "\xe4\xbd\xa0"}'
    assert canonical_request("post", "/sender/v1/x", params, body) == (
        b"POST\n/sender/v1/x\napiVersion=01&client=c1&version=2.0\n" + body
    )


def test_canonical_request_of_a_get_ends_with_the_query_line() -> None:
    assert canonical_request("GET", "/p", {}, b"") == b"GET\n/p\n\n"


def test_v2_signs_match_openssl() -> None:
    body = b'{"a":1}'
    assert compute_sign("s3cret", "POST", SUBMIT, PARAMS, body) == OPENSSL_V2_SHA256
    assert compute_sign("s3cret", "POST", SUBMIT, PARAMS, body, "md5") == OPENSSL_V2_MD5


def test_v1_signs_match_openssl() -> None:
    params = {"client": "c1", "channel": "ch1"}
    assert canonical_string(params, b'{"a":1}') == b'channel=ch1&client=c1\n{"a":1}'
    assert compute_legacy_sign("s3cret", params, b'{"a":1}') == OPENSSL_V1_SHA256
    assert compute_legacy_sign("s3cret", params, b'{"a":1}', "md5") == OPENSSL_V1_MD5


@pytest.mark.parametrize("sign", [OPENSSL_V1_SHA256, OPENSSL_V1_MD5])
def test_sign_matches_accepts_either_length(sign: str) -> None:
    assert sign_matches(b"s3cret", b'channel=ch1&client=c1\n{"a":1}', sign)


@pytest.mark.parametrize(
    "sign",
    [OPENSSL_V1_SHA256[:-1] + "0", OPENSSL_V1_SHA256[:40], OPENSSL_V1_MD5 + "00", "", "é" * 64],
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


# ---------------------------------------------------------------------------
# The authenticator, without Redis

NOW = 1_700_000_000


def _authenticator(**flags: Any) -> Authenticator:
    settings = Settings.model_validate(
        {"clients": {"c1": {"secret": "s", "channels": ["ch1"], **flags}}}
    )
    return Authenticator(settings)


def _query(
    timestamp: int | None = NOW,
    nonce: str | None = "n1",
    *,
    method: str = "POST",
    path: str = SUBMIT,
    body: bytes = b"",
    legacy: bool = False,
) -> list[tuple[str, str]]:
    params = {"client": "c1", "channel": "ch1"}
    if timestamp is not None:
        params["timestamp"] = str(timestamp)
    if nonce is not None:
        params["nonce"] = nonce
    if legacy:
        sign = compute_legacy_sign("s", params, body)
    else:
        sign = compute_sign("s", method, path, params, body)
    return [*params.items(), ("sign", sign)]


def _refusal(authenticator: Authenticator, query: list[tuple[str, str]], **where: Any) -> str:
    with pytest.raises(Unauthorized) as refused:
        authenticator.authenticate(
            where.get("method", "POST"), where.get("path", SUBMIT), query, b"", now=NOW
        )
    assert refused.value.message == "authentication failed"
    return refused.value.reason


@pytest.mark.parametrize("skew", [-300, 300, 0])
def test_timestamp_on_the_window_edge_is_accepted(skew: int) -> None:
    caller = _authenticator().authenticate("POST", SUBMIT, _query(NOW + skew), b"", now=NOW)
    assert caller.client == "c1"


@pytest.mark.parametrize("skew", [-301, 301])
def test_timestamp_past_the_window_is_refused(skew: int) -> None:
    assert "window" in _refusal(_authenticator(), _query(NOW + skew))


def test_the_replay_guard_is_the_client_and_nonce_and_lasts_until_the_request_goes_stale() -> None:
    caller = _authenticator().authenticate("POST", SUBMIT, _query(NOW + 300, "abc"), b"", now=NOW)
    assert caller.guard == keys.replay_guard("c1", "abc")
    assert caller.guard_ttl_ms >= 600_000
    stale_soon = _authenticator().authenticate("POST", SUBMIT, _query(NOW - 290), b"", now=NOW)
    assert 10_000 <= stale_soon.guard_ttl_ms <= 12_000


@pytest.mark.parametrize(
    ("method", "path"),
    [("GET", SUBMIT), ("POST", "/sender/v1/dead-letters/replay"), ("POST", SUBMIT + "/")],
)
def test_a_sign_is_good_only_for_its_method_and_path(method: str, path: str) -> None:
    reason = _refusal(_authenticator(), _query(), method=method, path=path)
    assert "does not match" in reason


@pytest.mark.parametrize(
    ("timestamp", "nonce"),
    [(None, "n1"), (NOW, None), (None, None)],
    ids=["no-ts", "no-nonce", "none"],
)
def test_v2_needs_timestamp_and_nonce(timestamp: int | None, nonce: str | None) -> None:
    assert "timestamp and nonce" in _refusal(_authenticator(), _query(timestamp, nonce))


@pytest.mark.parametrize("nonce", ["", "a" * 129, "a b", "a:b", "ü"])
def test_malformed_nonce_is_refused(nonce: str) -> None:
    assert "nonce" in _refusal(_authenticator(), _query(NOW, nonce))


def test_v1_sign_is_refused_unless_the_client_is_legacy() -> None:
    assert "does not match" in _refusal(_authenticator(), _query(None, None, legacy=True))
    caller = _authenticator(legacy_signing=True).authenticate(
        "POST", SUBMIT, _query(None, None, legacy=True), b"", now=NOW
    )
    assert caller.client == "c1" and caller.guard is None


def test_legacy_request_with_timestamp_but_no_nonce_is_guarded_by_its_sign() -> None:
    query = _query(NOW, None, legacy=True)
    caller = _authenticator(legacy_signing=True).authenticate("POST", SUBMIT, query, b"", now=NOW)
    assert caller.guard == keys.replay_guard("c1", f"sign:{dict(query)['sign']}")


def test_legacy_client_may_sign_v2_too() -> None:
    caller = _authenticator(legacy_signing=True).authenticate(
        "POST", SUBMIT, _query(), b"", now=NOW
    )
    assert caller.guard == keys.replay_guard("c1", "n1")


def test_md5_is_accepted_only_from_clients_configured_for_it() -> None:
    params = {"client": "c1", "channel": "ch1", "timestamp": str(NOW), "nonce": "n1"}
    query = [*params.items(), ("sign", compute_sign("s", "POST", SUBMIT, params, b"", "md5"))]
    assert "MD5" in _refusal(_authenticator(), query)
    assert _authenticator(md5=True).authenticate("POST", SUBMIT, query, b"", now=NOW).client == "c1"


def test_unknown_client_and_wrong_channel_are_refused_after_the_sign_is_checked() -> None:
    params = {"client": "c9", "channel": "ch1", "timestamp": str(NOW), "nonce": "n1"}
    query = [*params.items(), ("sign", compute_sign("s", "POST", SUBMIT, params, b""))]
    assert _refusal(_authenticator(), query) == "unknown client"
    params = {"client": "c1", "channel": "ch9", "timestamp": str(NOW), "nonce": "n1"}
    query = [*params.items(), ("sign", compute_sign("s", "POST", SUBMIT, params, b""))]
    assert "channel" in _refusal(_authenticator(), query)


def test_auth_disabled_takes_the_client_at_its_word_and_shows_everything() -> None:
    caller = Authenticator(Settings(auth_enabled=False)).authenticate(
        "POST", SUBMIT, [("client", "anyone")], b"junk"
    )
    assert caller.client == "anyone" and caller.sees_everything
    # Nobody is anybody: every caller shares the in-process producers' namespace.
    assert caller.namespace == DEFAULT_NAMESPACE


def test_auth_disabled_warns_loudly_at_start(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        Authenticator(Settings(auth_enabled=False)).warn_about_configuration()
    assert any(
        "AUTH IS DISABLED" in r.getMessage() and r.levelno == logging.WARNING
        for r in caplog.records
    )


def test_a_misspelt_client_flag_is_a_configuration_error() -> None:
    with pytest.raises(ValueError, match="legacy_signin"):
        Settings.model_validate(
            {"clients": {"c1": {"secret": "s", "channels": ["a"], "legacy_signin": True}}}
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
        "sign for another path": api.params(body, path="/sender/v1/messages/status"),
        "sign for another method": api.params(body, method="PUT"),
        "stale timestamp": api.params(body, timestamp=now - 301),
        "timestamp far in the future": api.params(body, timestamp=now + 301),
        "timestamp not a number": api.params(body, timestamp="soon"),  # type: ignore[arg-type]
        "no timestamp": api.params(body, timestamp=None),
        "no nonce": api.params(body, nonce=None),
        "seed's v1 sign from a v2 client": api.params(
            body, timestamp=None, nonce=None, legacy=True
        ),
        "md5 from a client not configured for it": api.params(body, algorithm="md5"),
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
    "sign for another path",
    "sign for another method",
    "stale timestamp",
    "timestamp far in the future",
    "timestamp not a number",
    "no timestamp",
    "no nonce",
    "seed's v1 sign from a v2 client",
    "md5 from a client not configured for it",
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
    assert envelope["message"] == "authentication failed"
    assert api.queued() == before
    assert not api.has_record(message_id)


def test_duplicated_client_parameter_is_refused(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = body_of(TEXT)
    params = [*api.params(body).items(), ("client", "c2")]
    with caplog.at_level(logging.INFO):
        response = api.http.post(SUBMIT, params=params, content=body)
    assert response.status_code == 401
    assert any("more than once" in r.getMessage() for r in caplog.records)


def test_replayed_nonce_gets_401_and_queues_nothing_more(api: Harness) -> None:
    message_id = unique_id()
    body = body_of(_with_id(message_id))
    params = api.params(body)
    first = api.submit(body, params=params)
    assert first.status_code == 200, first.text
    queued = api.queued()
    replay = api.submit(body, params=params)
    assert replay.status_code == 401
    assert replay.json()["message"] == "authentication failed"
    assert api.queued() == queued
    guard = keys.replay_guard("c1", params["nonce"])
    assert 0 < api.redis.pttl(guard) <= (2 * api.settings.signature_window + 2) * 1000


def test_the_same_nonce_with_a_new_sign_is_still_a_replay(api: Harness) -> None:
    """The guard is (client, nonce): a second request re-using a nonce is refused even when
    its body, and so its sign, differ."""
    nonce = uuid.uuid4().hex
    assert api.submit(_with_id(unique_id()), nonce=nonce).status_code == 200
    second = unique_id()
    assert api.submit(_with_id(second), nonce=nonce).status_code == 401
    assert not api.has_record(second)


def test_md5_client_is_accepted_with_md5(api: Harness) -> None:
    params = api.params(body_of(TEXT), client="old", algorithm="md5")
    assert len(params["sign"]) == 32
    response = api.submit(TEXT, params=params)
    assert response.status_code == 200, response.text
    assert api.has_record(response.json()["data"]["getMessageId"])


def test_unsigned_garbage_gets_401_not_400(api: Harness) -> None:
    """Without a valid sign nobody learns how the body would have been judged."""
    response = api.submit(b"not json", params={"client": "c1", "channel": "ch1", "sign": "0" * 64})
    assert response.status_code == 401


def test_refusals_log_the_reason_but_never_the_secret_or_the_sign(
    api: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    body = body_of(TEXT)
    params = api.params(body, secret="wrong-secret")
    with caplog.at_level(logging.DEBUG):
        assert api.submit(body, params=params).status_code == 401
        assert api.submit(body, params=api.params(body, channel="ch2")).status_code == 401
    text = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("dispatcher"))
    assert "401" in text and "does not match" in text and "channel is not allowed" in text
    assert params["sign"] not in text
    assert "secret-one" not in text and "wrong-secret" not in text


# ---------------------------------------------------------------------------
# The worked examples in the docs


def _worked_example(path: Path) -> dict[str, str]:
    text = path.read_text(encoding="utf-8")
    found = {
        name: re.search(rf"^{name}='(.*)'$", text, re.MULTILINE)
        for name in ("METHOD", "URL_PATH", "QUERY", "BODY", "SECRET")
    }
    assert all(found.values()), (path, found)
    return {name: match.group(1) for name, match in found.items() if match}


@pytest.mark.parametrize("page", ["docs/security.md", "README.md"])
def test_worked_signing_example_reproduces_with_our_signer(page: str) -> None:
    example = _worked_example(ROOT / page)
    text = (ROOT / page).read_text(encoding="utf-8")
    params = [(n, v) for n, _, v in (p.partition("=") for p in example["QUERY"].split("&"))]
    body = example["BODY"].encode()
    sign = compute_sign(example["SECRET"], example["METHOD"], example["URL_PATH"], params, body)
    canonical = canonical_request(example["METHOD"], example["URL_PATH"], params, body)
    assert (
        canonical
        == "\n".join(
            [example["METHOD"], example["URL_PATH"], example["QUERY"], example["BODY"]]
        ).encode()
    )  # the query is already sorted
    assert f"= {sign}" in text  # openssl's output line, as printed on the page
    assert f"&sign={sign}" in text or page == "README.md"


@pytest.mark.parametrize("page", ["docs/security.md", "README.md"])
def test_worked_signing_example_reproduces_with_openssl(page: str) -> None:
    """The page's own shell lines, run as they stand, print the sign the page shows."""
    text = (ROOT / page).read_text(encoding="utf-8")
    block = re.search(r"```sh\n(METHOD=.*?)```", text, re.DOTALL)
    assert block, page
    script = block.group(1)
    printed = re.findall(r"^# .*= ([0-9a-f]{64})$", script, re.MULTILINE)
    assert printed, script
    out = subprocess.run(["bash", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout.split()[-1] == printed[0]
