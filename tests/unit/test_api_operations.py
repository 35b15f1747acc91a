"""Operations endpoints (/healthz, /readyz, /metrics, /openapi.json, /docs), FastAPI's own
errors in the envelope, and the settings hand-over of ``run_api``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from dispatcher import keys
from dispatcher.api.app import settings_environment
from dispatcher.config import Settings
from dispatcher.embedded import free_port
from dispatcher.store import LATENCY_BUCKETS_MS
from dispatcher.store.durations import ATTEMPT_BUCKETS_MS
from tests.conftest import stats_keys
from tests.unit.test_api_support import TEXT, Harness, envelope_ok, field_errors, make_harness


@pytest.fixture()
def api(redis_url: str) -> Iterator[Harness]:
    harness = make_harness(redis_url)
    yield harness
    harness.close()


def scrape(api: Harness) -> dict[str, float]:
    """Every sample of /metrics by name and labels, after parsing with Prometheus's parser."""
    response = api.http.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples: dict[str, float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(sample.labels.items()))
            samples[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return samples


def test_healthz_answers_200_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/healthz")
    assert response.status_code == 200
    assert envelope_ok(response)["data"] == {"status": "ok"}


def test_readyz_answers_200_when_redis_and_broker_answer(api: Harness) -> None:
    response = api.http.get("/readyz")
    assert response.status_code == 200
    data = envelope_ok(response)["data"]
    assert (data["redis"], data["broker"]) == ("ok", "ok")
    assert isinstance(data["warnings"], list)  # tests/integration/test_persistence_warning.py


def test_readyz_answers_503_naming_the_broker_when_it_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = api.http.get("/readyz")
        assert response.status_code == 503
        envelope = envelope_ok(response)
        assert envelope["data"] == {"redis": "ok", "broker": "unreachable"}
        assert "broker" in envelope["message"]
    finally:
        api.close()


def test_api_with_a_rabbitmq_broker_starts_and_says_when_it_is_down(redis_url: str) -> None:
    # The broker is probed over AMQP, not as a Redis (tests/integration/test_rabbitmq_broker.py
    # has the broker up).
    api = make_harness(redis_url, broker_url=f"amqp://guest:guest@127.0.0.1:{free_port()}//")
    try:
        started = time.monotonic()
        response = api.http.get("/readyz")
        assert time.monotonic() - started < 5
        assert response.status_code == 503
        assert envelope_ok(response)["data"] == {"redis": "ok", "broker": "unreachable"}
        samples = scrape(api)
        assert samples["dispatcher_broker_up"] == 0
        assert samples["dispatcher_redis_up"] == 1
    finally:
        api.close()


def test_readyz_answers_503_when_redis_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        response = api.http.get("/readyz")
        assert response.status_code == 503
        assert envelope_ok(response)["data"]["redis"] == "unreachable"
    finally:
        api.close()


def test_metrics_counters_move_with_submit_traffic(api: Harness) -> None:
    before = scrape(api)
    assert api.submit(TEXT).status_code == 200
    assert api.submit(TEXT).status_code == 200
    assert api.submit(TEXT, client="c2").status_code == 200
    assert api.submit(b"{").status_code == 400
    assert api.submit(TEXT, secret="wrong").status_code == 401
    assert api.submit(TEXT, client="nobody").status_code == 401
    after = scrape(api)

    def moved(sample: str) -> float:
        return after[sample] - before[sample]

    assert moved("dispatcher_submitted_total") == 6
    assert moved("dispatcher_accepted_total{client=c1}") == 2
    assert moved("dispatcher_accepted_total{client=c2}") == 1
    assert moved("dispatcher_rejected_total{client=c1,reason=invalid}") == 1
    # A refused signature names no client: the claimed names never become labels.
    assert moved("dispatcher_rejected_total{client=-,reason=unauthorized}") == 2
    assert not [name for name in after if "nobody" in name]
    assert after["dispatcher_rejected_total{client=c1,reason=rate_limited}"] == 0
    queue = api.settings.queue
    assert after[f"dispatcher_queue_depth{{queue={queue}}}"] == 3
    assert moved("dispatcher_in_flight") == 3


def test_submits_refused_by_a_clients_rate_limit_are_counted_for_that_client(
    redis_url: str,
) -> None:
    api = make_harness(redis_url, submit_rate_per_second=0.01, submit_burst=1)
    try:
        assert api.submit(TEXT, client="c2").status_code == 200
        assert api.submit(TEXT, client="c2").status_code == 429
        samples = scrape(api)
    finally:
        api.close()
    assert samples["dispatcher_rejected_total{client=c2,reason=rate_limited}"] == 1
    assert samples["dispatcher_rejected_total{client=c1,reason=rate_limited}"] == 0


def test_the_oldest_queued_message_ages_until_a_worker_takes_it(api: Harness) -> None:
    queue = api.settings.queue
    age = f"dispatcher_queue_oldest_age_seconds{{queue={queue}}}"
    assert scrape(api)[age] == 0  # empty queue
    submitted = time.monotonic()
    assert api.submit(TEXT).status_code == 200
    assert api.submit(TEXT).status_code == 200
    deadline = submitted + 30
    while (seen := scrape(api)[age]) < 1.0:
        assert time.monotonic() < deadline, f"the age stayed at {seen}"
        time.sleep(0.1)
    # Redis's clock against ours: the first message is no older than the time since it was sent.
    assert seen <= time.monotonic() - submitted + 0.5


def test_metrics_report_the_fleet_counters_kept_in_redis(api: Harness) -> None:
    api.redis.delete(*stats_keys())
    api.redis.hset(
        keys.counters_shard().stats,
        mapping={
            "state:delivered": 7,
            "state:failed": 2,
            "state:dead": 1,
            "state:retrying": 5,
            "provider:429": 4,
            "provider:503": 1,
            "rejected:undecodable": 3,
            "recovered": 6,
            "latency:count": 7,
            "latency:sum_ms": 2100,
            f"latency:le:{LATENCY_BUCKETS_MS[0]}": 1,
            f"latency:le:{LATENCY_BUCKETS_MS[-1]}": 7,
            "attempt:easemob:count": 9,
            "attempt:easemob:sum_ms": 1800,
            f"attempt:easemob:le:{ATTEMPT_BUCKETS_MS[0]}": 2,
            f"attempt:easemob:le:{ATTEMPT_BUCKETS_MS[-1]}": 9,
            "attempt:wechat:count": 1,
            "attempt:wechat:sum_ms": 40,
        },
    )
    try:
        samples = scrape(api)
    finally:
        api.redis.delete(*stats_keys())
    assert samples["dispatcher_delivered_total"] == 7
    assert samples["dispatcher_failed_total"] == 2
    assert samples["dispatcher_dead_total"] == 1
    assert samples["dispatcher_retries_total"] == 5
    assert samples["dispatcher_provider_errors_total{status=429}"] == 4
    assert samples["dispatcher_provider_errors_total{status=503}"] == 1
    assert samples["dispatcher_queue_messages_dropped_total{reason=undecodable}"] == 3
    assert samples["dispatcher_recovered_total"] == 6
    assert samples["dispatcher_delivery_latency_seconds_count"] == 7
    assert samples["dispatcher_delivery_latency_seconds_sum"] == pytest.approx(2.1)
    first = f"dispatcher_delivery_latency_seconds_bucket{{le={LATENCY_BUCKETS_MS[0] / 1000}}}"
    assert samples[first] == 1
    assert samples["dispatcher_delivery_latency_seconds_bucket{le=+Inf}"] == 7
    attempts = "dispatcher_attempt_duration_seconds"
    assert samples[f"{attempts}_count{{channel=easemob}}"] == 9
    assert samples[f"{attempts}_sum{{channel=easemob}}"] == pytest.approx(1.8)
    fastest = f"le={ATTEMPT_BUCKETS_MS[0] / 1000}"
    assert samples[f"{attempts}_bucket{{channel=easemob,{fastest}}}"] == 2
    assert samples[f"{attempts}_bucket{{channel=easemob,le=+Inf}}"] == 9
    assert samples[f"{attempts}_count{{channel=wechat}}"] == 1
    assert samples[f"{attempts}_bucket{{channel=wechat,{fastest}}}"] == 0
    assert samples["dispatcher_redis_up"] == 1


def test_metrics_report_redis_memory_and_the_ratio_that_refuses_submits(redis_url: str) -> None:
    api = make_harness(redis_url, memory_refuse_ratio=0.85)
    try:
        samples = scrape(api)
        info = api.redis.info("memory")
    finally:
        api.close()
    used = samples["dispatcher_redis_memory_used_bytes{role=store}"]
    assert 0 < used <= 2 * info["used_memory"]
    assert samples["dispatcher_redis_memory_max_bytes{role=store}"] == info["maxmemory"]
    assert samples["dispatcher_redis_memory_refuse_ratio"] == 0.85
    assert "dispatcher_redis_memory_used_bytes{role=broker}" not in samples  # the same Redis


def test_metrics_leave_the_backlog_out_when_a_separate_broker_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, broker_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        samples = scrape(api)
    finally:
        api.close()
    assert samples["dispatcher_redis_up"] == 1
    assert samples["dispatcher_broker_up"] == 0
    assert not [name for name in samples if name.startswith("dispatcher_queue_")]
    assert samples["dispatcher_redis_memory_used_bytes{role=store}"] > 0
    assert "dispatcher_in_flight" in samples


def test_metrics_still_scrape_when_redis_is_down(redis_url: str) -> None:
    api = make_harness(redis_url, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    try:
        assert api.submit(TEXT).status_code == 503
        samples = scrape(api)
    finally:
        api.close()
    assert samples["dispatcher_redis_up"] == 0
    assert samples["dispatcher_broker_up"] == 0
    assert samples["dispatcher_rejected_total{client=c1,reason=unavailable}"] == 1
    assert "dispatcher_delivered_total" not in samples
    assert "dispatcher_redis_memory_used_bytes{role=store}" not in samples


def test_each_app_has_its_own_metrics_registry(redis_url: str) -> None:
    first, second = make_harness(redis_url), make_harness(redis_url)
    try:
        assert first.submit(TEXT).status_code == 200
        assert scrape(first)["dispatcher_submitted_total"] == 1
        assert scrape(second)["dispatcher_submitted_total"] == 0
    finally:
        first.close()
        second.close()


def test_openapi_documents_the_real_submit_body_and_the_envelopes(api: Harness) -> None:
    response = api.http.get("/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    submit = schema["paths"]["/sender/v1/handleBasicMessage"]["post"]
    body = submit["requestBody"]["content"]["application/json"]["schema"]
    assert body == {"$ref": "#/components/schemas/SubmitRequest"}
    components = schema["components"]["schemas"]
    variants = [v["$ref"].rsplit("/", 1)[1] for v in components["SubmitRequest"]["oneOf"]]
    assert len(variants) == 10
    video = components["SubmitVideo"]
    assert video["properties"]["messageType"]["const"] == 4
    assert video["properties"]["messageInfo"] == {"$ref": "#/components/schemas/VideoInfo"}
    assert {"messageType", "from", "to", "messageInfo"} <= set(video["required"])
    assert "videoMessage" in components["VideoInfo"]["required"]
    assert set(submit["responses"]) == {"200", "400", "401", "403", "409", "413", "429", "503"}
    params = {p["name"]: p for p in submit["parameters"]}
    assert {"apiVersion", "client", "channel", "version", "timestamp", "nonce", "sign"} == set(
        params
    )
    assert params["sign"]["required"] is True
    assert "HTTPValidationError" not in components
    assert "StatusRecord" in components
    assert "/sender/v1/messages/{getMessageId}" in schema["paths"]
    assert "/sender/v1/messages/status" in schema["paths"]


def test_docs_page_is_served(api: Harness) -> None:
    response = api.http.get("/docs")
    assert response.status_code == 200
    assert "swagger" in response.text.lower()


def test_unknown_route_is_404_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/sender/v1/nothing-here")
    assert response.status_code == 404
    assert envelope_ok(response)["data"] is None


def test_wrong_method_is_405_in_the_envelope(api: Harness) -> None:
    response = api.http.get("/sender/v1/handleBasicMessage")
    assert response.status_code == 405
    assert envelope_ok(response)["message"]
    assert "POST" in response.headers["allow"]


def test_request_validation_errors_use_the_envelope_not_fastapis_shape(api: Harness) -> None:
    path = "/sender/v1/messages/" + "x" * 65
    response = api.http.get(path, params=api.params(method="GET", path=path))
    assert response.status_code == 400
    assert "detail" not in response.json()
    assert "getMessageId" in field_errors(response)


def test_settings_survive_the_hand_over_to_uvicorn_workers(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Settings.model_validate(
        {
            "clients": {"c1": {"secret": "s3cret", "channels": ["a", "b"], "admin": True}},
            "auth_enabled": False,
            "easemob_client_secret": "easemob-secret",
            "submit_rate_per_second": 12.5,
            "queue": "q1",
            "qiniu_domain": "media.example.com",
        }
    )
    env = settings_environment(original)
    for name in list(Settings.model_fields):
        monkeypatch.delenv(f"DISPATCHER_{name.upper()}", raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    rebuilt = Settings()
    assert rebuilt.clients["c1"].secret.get_secret_value() == "s3cret"
    assert rebuilt.clients["c1"].channels == ["a", "b"] and rebuilt.clients["c1"].admin
    assert rebuilt.easemob_client_secret is not None
    assert rebuilt.easemob_client_secret.get_secret_value() == "easemob-secret"
    for name in Settings.model_fields:
        if name not in ("clients", "easemob_client_secret"):
            assert getattr(rebuilt, name) == getattr(original, name), name
