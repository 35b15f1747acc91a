"""Property-based checks: hypothesis on the models and on raw request bodies, and
schemathesis against ``/openapi.json``. No input gives a 5xx or an exception other than
InvalidMessage. Bounded so they run in the normal test run."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from dispatcher.config import Settings
from dispatcher.errors import InvalidMessage
from dispatcher.models import INFO_MODELS, Message, parse_message
from dispatcher.producer import Dispatcher
from tests.unit.test_api_support import Harness, make_harness

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

json_scalars = (
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)

# Bodies near the real shape, so the checks behind the envelope are reached too.
info_fields = sorted({name for model in INFO_MODELS.values() for name in model.model_fields})
near_messages = st.fixed_dictionaries(
    {
        "messageType": st.integers(-1, 12) | json_scalars,
        "from": st.text(max_size=8) | json_scalars,
        "to": st.from_regex(r"\d{1,18}", fullmatch=True) | st.text(max_size=8),
        "messageInfo": st.dictionaries(
            st.sampled_from(info_fields), json_scalars | st.text(max_size=30), max_size=5
        )
        | json_values,
    },
    optional={
        "ext": st.dictionaries(
            st.sampled_from(["chatType", "getType", "template", "expandMsg", "x"]),
            json_values,
            max_size=3,
        ),
        "getMessageId": st.text(max_size=70),
        "targetType": st.sampled_from(["users", "chatgroups", "chatrooms", "x"]),
        "channelType": json_scalars,
    },
)

_dispatcher = Dispatcher(Settings(qiniu_domain="http://media.example.com"))


@FUZZ
@given(payload=json_values | near_messages)
def test_parse_message_only_ever_raises_invalid_message(payload: Any) -> None:
    try:
        message = parse_message(payload, media_domain="http://media.example.com")
    except InvalidMessage as exc:
        assert exc.errors and all(e.field and e.error for e in exc.errors)
    else:
        assert isinstance(message, Message)
        json.dumps(message.to_payload(), ensure_ascii=False).encode()


@FUZZ
@given(payload=near_messages)
def test_validate_with_size_check_only_ever_raises_invalid_message(payload: Any) -> None:
    try:
        _dispatcher.validate(payload)
    except InvalidMessage as exc:
        assert exc.errors


@pytest.fixture(scope="module")
def open_api(redis_url: str) -> Iterator[Harness]:
    """Auth off, so generated requests reach validation and the Redis steps."""
    harness = make_harness(
        redis_url, auth_enabled=False, qiniu_domain="http://media.example.com", submit_burst=100_000
    )
    yield harness
    harness.close()


raw_bodies = (
    st.binary(max_size=300)
    | json_values.map(lambda v: json.dumps(v).encode())
    | near_messages.map(lambda v: json.dumps(v, ensure_ascii=False).encode())
)


@FUZZ
@given(body=raw_bodies)
def test_no_raw_body_gets_a_5xx_or_a_shape_other_than_the_envelope(
    open_api: Harness, body: bytes
) -> None:
    response = open_api.http.post("/sender/v1/handleBasicMessage", content=body)
    assert response.status_code in (200, 400, 413), response.text
    envelope = response.json()
    assert envelope["code"] == response.status_code
    if response.status_code != 200:
        assert envelope["data"]["errors"]


@FUZZ
@given(body=raw_bodies)
def test_no_status_query_gets_a_5xx(open_api: Harness, body: bytes) -> None:
    response = open_api.http.post("/sender/v1/messages/status", content=body)
    assert response.status_code in (200, 400, 413), response.text


# ---------------------------------------------------------------------------
# schemathesis
#
# Each operation of /openapi.json runs as a Hypothesis test of its own, built from
# schemathesis' strategies (its documented API for use with @given). Its pytest
# plugin is not used: it breaks with each pytest release that changes node internals.

OPERATION_RUN = settings(
    max_examples=50,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


@pytest.fixture(scope="module")
def api_schema(open_api: Harness) -> Any:
    return schemathesis.openapi.from_asgi("/openapi.json", open_api.app)


def _case_strategies(schema: Any, operation: APIOperation) -> st.SearchStrategy[Any]:
    """The schema's own examples, then valid and invalid (negative) generated requests."""
    generated = [operation.as_strategy(generation_mode=mode) for mode in GenerationMode]
    return st.one_of(*schema.get_strategies_from_examples(operation), *generated)


def test_openapi_operations_never_answer_5xx_and_match_their_documentation(
    api_schema: Any,
) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    labels = {operation.label for operation in operations}
    assert "POST /sender/v1/handleBasicMessage" in labels, labels
    for operation in operations:

        @OPERATION_RUN
        @given(case=_case_strategies(api_schema, operation))
        def call_and_validate(case: Any) -> None:
            case.call_and_validate(checks=CHECKS)

        try:
            call_and_validate()
        except Exception as exc:
            raise AssertionError(f"{operation.label}: {exc}") from exc
