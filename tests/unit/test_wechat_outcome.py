"""What each WeChat errcode means for the sender (pure)."""

from __future__ import annotations

from datetime import UTC, datetime, time

import httpx
import pytest

from dispatcher.channels.wechat_outcome import (
    Action,
    WeChatPaused,
    classify,
    day_of,
    error_for,
    next_resume,
    seconds_to_next_minute,
    transport_error,
)

NOW = datetime(2024, 3, 1, 15, 59, 30, tzinfo=UTC).timestamp()  # 23:59:30 in Beijing


@pytest.mark.parametrize(
    ("errcode", "action"),
    [
        (0, Action.DELIVERED),
        (-1, Action.RETRY),
        (40001, Action.REFRESH_TOKEN),
        (40014, Action.REFRESH_TOKEN),
        (42001, Action.REFRESH_TOKEN),
        (40007, Action.REUPLOAD_MEDIA),
        (45009, Action.QUOTA),
        (45011, Action.FREQUENCY),
        (45015, Action.WINDOW),
        (45047, Action.WINDOW),
        (40003, Action.RECIPIENT),
        (43004, Action.RECIPIENT),
        (43019, Action.RECIPIENT),
        (48002, Action.RECIPIENT),
        (43101, Action.RECIPIENT),
        (44002, Action.MALFORMED),
        (47001, Action.MALFORMED),
        (40008, Action.MALFORMED),
        (45002, Action.MALFORMED),
        (45008, Action.MALFORMED),
        (40033, Action.MALFORMED),
        (40037, Action.MALFORMED),
        (40009, Action.MALFORMED),
        (48001, Action.CONFIGURATION),
        (48004, Action.CONFIGURATION),
        (40164, Action.CONFIGURATION),
        (40125, Action.CONFIGURATION),
        (40013, Action.CONFIGURATION),
        (61234, Action.RETRY),  # unknown: never lose a message to a code we do not know
    ],
)
def test_classification(errcode: int, action: Action) -> None:
    assert classify(errcode) is action


@pytest.mark.parametrize(
    ("errcode", "retryable"),
    [(-1, True), (61234, True), (45011, True), (45015, False), (43004, False), (40001, False),
     (40007, False), (40033, False), (48001, False)],
)  # fmt: skip
def test_errors_are_retryable_only_when_another_attempt_can_help(
    errcode: int, retryable: bool
) -> None:
    error = error_for(errcode, "text hint: [x] rid: y", "custom_send", now=NOW)
    assert error.retryable is retryable
    assert error.code == f"wechat_{errcode}"
    assert f"errcode {errcode}" in error.message and "custom_send" in error.message


def test_frequency_waits_for_the_next_minute() -> None:
    error = error_for(45011, "minute quota", "custom_send", now=NOW)
    assert error.retry_after == pytest.approx(31.0)
    assert seconds_to_next_minute(60.0 * 100) == pytest.approx(61.0)


def test_quota_is_a_pause_until_the_resume_time() -> None:
    resume = next_resume(NOW, time(0, 5), "Asia/Shanghai")
    assert resume - NOW == pytest.approx(5 * 60 + 30)
    error = error_for(45009, "daily quota", "template_send", now=NOW, resume_at=resume)
    assert isinstance(error, WeChatPaused)
    assert error.retryable and error.retry_after == pytest.approx(330)


def test_next_resume_is_always_ahead() -> None:
    at_resume = datetime(2024, 3, 1, 16, 5, tzinfo=UTC).timestamp()  # 00:05 Beijing
    assert next_resume(at_resume, time(0, 5), "Asia/Shanghai") == at_resume + 86400
    assert next_resume(at_resume - 1, time(0, 5), "Asia/Shanghai") == at_resume


def test_quota_day_is_beijings() -> None:
    assert day_of(NOW, "Asia/Shanghai") == "20240301"
    assert day_of(NOW + 31, "Asia/Shanghai") == "20240302"


def test_errcode_zero_is_not_an_error() -> None:
    with pytest.raises(ValueError):
        error_for(0, "ok", "custom_send", now=NOW)


def test_errmsg_is_cut_short() -> None:
    assert len(error_for(-1, "x" * 5000, "custom_send", now=NOW).message) < 300


def test_transport_errors() -> None:
    request = httpx.Request("POST", "https://api.weixin.qq.com/cgi-bin/message/custom/send")
    unreachable = transport_error(httpx.ConnectError("refused", request=request), "custom_send")
    assert unreachable.retryable and not unreachable.ambiguous
    lost = transport_error(httpx.ReadTimeout("slow", request=request), "custom_send")
    assert lost.retryable and lost.ambiguous
    assert "access_token" not in lost.message
