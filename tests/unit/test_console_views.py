"""The message page's pieces without servers: secrets masked, sections only for data a
record has, durations between timeline steps, and the pages render with that data."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import Field

from dispatcher.console.render import Pages, duration
from dispatcher.console.sessions import Session
from dispatcher.console.views import MASK, extras, mask_secrets, message_view, offered_actions
from dispatcher.record import HistoryEntry, State, StatusRecord

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


class FutureRecord(StatusRecord):
    """A record as later work extends it (webhook attempts, per-recipient results)."""

    readAt: datetime | None = None
    webhookAttempts: list[dict[str, Any]] = Field(default_factory=list)
    recipients: list[dict[str, Any]] = Field(default_factory=list)


def record(cls: type[StatusRecord] = StatusRecord, **extra: Any) -> StatusRecord:
    history = [
        HistoryEntry(state=State.QUEUED, at=T0),
        HistoryEntry(state=State.PROCESSING, at=T0 + timedelta(milliseconds=120)),
        HistoryEntry(state=State.DELIVERED, at=T0 + timedelta(seconds=3, milliseconds=120)),
    ]
    return cls(
        getMessageId="m1",
        state=State.DELIVERED,
        messageType=1,
        **{"from": "u1"},
        to="u2",
        targetType="users",
        channel="easemob",
        createdAt=T0,
        updatedAt=T0,
        providerMessageId="p1",
        history=history,
        **extra,
    )


STORED = {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": "hi"}}


def test_secrets_are_masked_in_values_urls_and_nested_data() -> None:
    masked = mask_secrets(
        {
            "client_secret": "s3",
            "Authorization": "Bearer x",
            "nested": [{"apiKey": "k"}, {"password": ""}],
            "url": "https://cdn.example/a.jpg?e=1700000000&token=AK:sig",
            "note": "visible",
        }
    )
    assert (
        masked["client_secret"] == masked["Authorization"] == masked["nested"][0]["apiKey"] == MASK
    )
    assert masked["nested"][1]["password"] == ""  # nothing to hide
    assert "AK:sig" not in masked["url"] and "e=1700000000" in masked["url"]
    assert masked["note"] == "visible"


def test_sections_for_extra_data_appear_only_when_the_record_has_it() -> None:
    assert extras(record()) == ([], [])
    assert extras(record(FutureRecord)) == ([], [])

    rich = record(
        FutureRecord,
        readAt=T0,
        webhookAttempts=[
            {"endpoint": "https://hook.example", "status": 200, "secret": "whsec_x"},
            {"endpoint": "https://hook.example", "status": 503, "error": "down"},
        ],
        recipients=[{"to": f"u{i}", "state": "delivered"} for i in range(250)],
    )
    values, tables = extras(rich)
    assert [title for title, _ in values] == ["Read at"]
    # The record's own ``recipients`` (a fan-out's counts) comes first: order by title.
    webhook, recipients = sorted(tables, key=lambda table: table.title, reverse=True)
    assert webhook.title == "Webhook attempts"
    assert webhook.columns == ["endpoint", "status", "secret", "error"]
    assert webhook.rows[0] == ["https://hook.example", "200", MASK, ""]
    assert len(recipients.rows) == 200 and recipients.more == 50


def test_timeline_steps_carry_the_time_since_the_step_before() -> None:
    view = message_view(record(), STORED, None)
    assert [s.since_previous for s in view.steps] == [None, 0.12, 3.0]
    assert view.steps[-1].since_start == 3.12
    assert view.provider_ids == ["p1"]
    assert view.provider_request is not None and '"getMessageId": "m1"' in view.provider_request
    assert [duration(s) for s in (0.12, 3.04, 192, 7500, 90000)] == [
        "120 ms", "3.0 s", "3 min 12 s", "2 h 5 min", "1 d 1 h",
    ]  # fmt: skip


def test_media_figures_left_to_the_worker_are_named_not_invented() -> None:
    stored = {"messageType": 2, "from": "u1", "to": "u2", "messageInfo": {"imageMessage": "a.jpg"}}
    view = message_view(record(), stored, None)
    assert view.provider_request is not None
    assert view.provider_request.count("filled in from Qiniu") == 3  # url, width, height
    assert view.provider_note and "filled in by the worker" in view.provider_note
    gone = message_view(record(), None, None)
    assert gone.provider_request is None and "expired" in (gone.provider_note or "")


def test_the_page_offers_only_what_can_still_be_done_with_the_message() -> None:
    offered = {
        state: offered_actions(record().model_copy(update={"state": state})) for state in State
    }
    assert offered[State.DEAD] == ["replay", "discard"]
    for state in (State.SCHEDULED, State.QUEUED, State.RETRYING, State.PROCESSING):
        assert offered[state] == ["cancel"], state
    assert offered[State.DELIVERED] == ["recall"]
    for state in (State.FAILED, State.CANCELLED, State.RECALLED):
        assert offered[state] == [], state
    wechat = record().model_copy(update={"channel": "wechat"})
    assert offered_actions(wechat) == []  # WeChat takes nothing back


def test_the_message_page_renders_extra_tables_with_headers() -> None:
    rich = record(FutureRecord, webhookAttempts=[{"endpoint": "https://h", "status": 200}])
    session = Session("s", "client ops", "csrf")
    page = Pages("Asia/Shanghai").page(
        "message.html", session=session, root="/console", section="messages",
        view=message_view(rich, STORED, None), searched="m1",
    )  # fmt: skip
    html = bytes(page.body).decode()
    assert "<h2>Webhook attempts</h2>" in html and '<th scope="col">endpoint</th>' in html
    assert "2026-01-02 11:04:05.000" in html  # UTC 03:04 in Asia/Shanghai
    assert 'name="csrf_token"' in html and "Refresh every 2 s" not in html  # delivered: final


def test_after_sign_in_the_browser_only_goes_somewhere_inside_the_console() -> None:
    from dispatcher.console.app import safe_next

    assert safe_next("/console", "/console/messages/m1") == "/console/messages/m1"
    for elsewhere in ["https://evil.example/", "//evil.example/console/", "/docs", "", "/console"]:
        assert safe_next("/console", elsewhere) == "/console/"
    assert safe_next("/console", "/console/\\evil") == "/console/"
