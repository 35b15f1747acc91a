"""The console as an operator uses it, in a real headless chromium: sign in, find a
just-sent message and watch it reach ``delivered``, replay a dead letter, cancel and recall
from a message's page, watch the live charts move under 500 messages, and see requests
without a session or a CSRF token refused."""

from __future__ import annotations

import os
import re
import shutil
import time
from typing import Any

from playwright.sync_api import expect

from dispatcher.client import Client
from dispatcher.ids import MessageRef
from tests.browser.conftest import (
    ADMIN,
    CHANNEL,
    PASSWORD,
    SCREENSHOTS,
    SENDER,
    SENDER_SECRET,
    ApiProcess,
    sign_in,
)
from tests.conftest import ROOT, wait_for_state

DOC_IMAGES = ROOT / "docs" / "images"


def text_message(text: str) -> dict[str, Any]:
    return {"messageType": 1, "from": "u1", "to": "u2", "messageInfo": {"textMessage": text}}


def screenshot(page: Any, name: str, *, docs: bool = False) -> None:
    """A screenshot beside the test's own; the README's (``docs``) are copied to docs/images
    when DISPATCHER_DOCS_SCREENSHOTS=1."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    shot = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(shot), full_page=False)
    if docs and os.environ.get("DISPATCHER_DOCS_SCREENSHOTS") == "1":
        DOC_IMAGES.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, DOC_IMAGES / f"{name}.png")


def assert_accessible_basics(page: Any) -> None:
    """Every visible control has a label, and the first Tab reaches the skip link."""
    unlabelled = page.evaluate(
        """[...document.querySelectorAll('input:not([type=hidden]), button, select')]
             .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                          && !e.textContent.trim())
             .map(e => e.outerHTML)"""
    )
    assert unlabelled == [], unlabelled
    page.locator("body").focus()
    page.keyboard.press("Tab")
    expect(page.locator("a.skip")).to_be_focused()


def test_sign_in_and_watch_a_just_sent_message_reach_delivered(
    page: Any, api: ApiProcess, start_worker: Any, easemob: Any
) -> None:
    start_worker()
    # One 503 first, so the timeline shows a retry before the delivery.
    easemob.fault(path="/messages$", status=503, body={"error": "service_unavailable"}, times=1)
    sign_in(page, api)
    expect(page.get_by_text(f"Signed in as client {ADMIN}")).to_be_visible()
    assert_accessible_basics(page)

    with Client(api.url, SENDER, SENDER_SECRET, channel=CHANNEL) as sender:
        message_id = sender.submit(text_message("Your order A-1042 has shipped 📦"))
    page.get_by_label("getMessageId").fill(message_id)
    page.get_by_role("button", name="Find").click()
    page.wait_for_url(re.compile(rf".*/console/messages/{message_id}$"))

    # The page refreshes itself until the message is final.
    expect(page.locator("#message-state")).to_have_text("delivered", timeout=45_000)
    steps = page.locator("#timeline li").evaluate_all("items => items.map(i => i.dataset.state)")
    assert steps[0] == "queued" and steps[-1] == "delivered" and "retrying" in steps, steps
    gaps = page.locator("#timeline .gap").all_inner_texts()
    assert gaps[0] == "start" and all(g.startswith("+") for g in gaps[1:]), gaps
    expect(page.locator("dl.facts")).to_contain_text(SENDER)
    expect(page.locator("pre.code")).to_contain_text(message_id)
    screenshot(page, "console-message", docs=True)

    page.get_by_role("button", name="Sign out").click()
    page.wait_for_url(re.compile(r".*/console/login$"))
    page.goto(f"{api.url}/console/messages/{message_id}")
    assert "/console/login" in page.url  # the session is gone
    expect(page.get_by_text(message_id)).to_have_count(0)


def test_replay_a_dead_letter_from_the_dead_letter_page_and_see_it_delivered(
    page: Any, api: ApiProcess, start_worker: Any, easemob: Any, dispatcher: Any
) -> None:
    start_worker(max_attempts=2)
    doomed = f"doomed-{time.time_ns()}"
    easemob.fault(
        path="/messages$", body_contains=doomed, status=503, body={"error": "service_unavailable"}
    )
    with Client(api.url, SENDER, SENDER_SECRET, channel=CHANNEL) as sender:
        message_id = sender.submit(text_message(doomed))
    senders = MessageRef(SENDER, message_id)  # the client's message lives in its namespace
    wait_for_state(dispatcher, senders, {"dead"}, timeout=45)
    easemob.clear()  # the provider recovers

    sign_in(page, api, client="", secret=PASSWORD)
    page.get_by_role("link", name="Dead letters").click()
    page.get_by_label("Client").fill(SENDER)
    page.get_by_label("Error code").fill("service_unavailable")
    page.get_by_role("button", name="Filter").click()
    row = page.locator(f'tr[data-id="{message_id}"]')
    expect(row).to_contain_text("service_unavailable")
    assert_accessible_basics(page)
    row.get_by_role("checkbox").check()
    screenshot(page, "console-dead-letters")
    page.get_by_role("button", name="Replay selected…").click()

    expect(page.get_by_role("heading", name="Replay 1 message?")).to_be_visible()
    assert dispatcher.status(senders).state == "dead"  # nothing happens before confirming
    page.get_by_role("button", name="Replay 1").click()
    expect(page.get_by_role("heading", name="Replayed 1 of 1")).to_be_visible()
    expect(page.locator(f'tr[data-id="{message_id}"][data-done="yes"]')).to_contain_text("done")

    page.get_by_role("link", name=message_id).click()
    expect(page.locator("#message-state")).to_have_text("delivered", timeout=45_000)
    expect(page.locator("#timeline")).to_contain_text(
        "replayed from dead letters by console password"
    )
    # It left the dead-letter list.
    page.goto(f"{api.url}/console/dead-letters?client={SENDER}")
    expect(page.locator(f'tr[data-id="{message_id}"]')).to_have_count(0)


def test_cancel_a_scheduled_message_and_recall_a_delivered_one_from_their_pages(
    page: Any, api: ApiProcess, start_worker: Any, dispatcher: Any, easemob: Any
) -> None:
    start_worker()
    later = int((time.time() + 3600) * 1000)
    with Client(api.url, SENDER, SENDER_SECRET, channel=CHANNEL) as sender:
        scheduled = sender.submit({**text_message("tomorrow's reminder"), "sendAt": later})
        sent = sender.submit(text_message("sent by mistake"))
    wait_for_state(dispatcher, MessageRef(SENDER, sent), {"delivered"}, timeout=45)
    sign_in(page, api)

    page.goto(f"{api.url}/console/messages/{scheduled}?client={SENDER}")
    expect(page.locator("#message-state")).to_have_text("scheduled")
    expect(page.get_by_role("button", name="Recall…")).to_have_count(0)
    page.get_by_role("button", name="Cancel…").click()
    expect(page.get_by_role("heading", name="Cancel 1 message?")).to_be_visible()
    assert dispatcher.status(MessageRef(SENDER, scheduled)).state == "scheduled"
    page.get_by_role("button", name="Cancel 1").click()
    expect(page.get_by_role("heading", name="Cancelled 1 of 1")).to_be_visible()
    expect(page.locator(f'tr[data-id="{scheduled}"][data-done="yes"]')).to_contain_text(
        "cancelled (it was scheduled)"
    )
    assert dispatcher.status(MessageRef(SENDER, scheduled)).state == "cancelled"
    page.get_by_role("link", name=scheduled).click()
    expect(page.locator("#message-state")).to_have_text("cancelled")
    expect(page.locator("form.actions")).to_have_count(0)  # nothing more to do with it

    page.goto(f"{api.url}/console/messages/{sent}?client={SENDER}")
    expect(page.get_by_role("button", name="Cancel…")).to_have_count(0)
    page.get_by_role("button", name="Recall…").click()
    confirmed = {
        field: page.locator(f'form input[name="{field}"]').first.get_attribute("value") or ""
        for field in ("csrf_token", "id", "action", "confirmed")
    }
    page.get_by_role("button", name="Recall 1").click()
    expect(page.get_by_role("heading", name="Recalled 1 of 1")).to_be_visible()
    assert dispatcher.status(MessageRef(SENDER, sent)).state == "recalled"
    # The same confirmation sent again is refused with the reason, and changes nothing.
    again = page.request.post(f"{api.url}/console/actions/apply", form=confirmed)
    assert again.status == 200 and "Recalled 0 of 1" in again.text()
    assert "only a delivered message can be recalled; this one is recalled" in again.text()
    page.goto(f"{api.url}/console/messages/{sent}?client={SENDER}")
    expect(page.locator("#message-state")).to_have_text("recalled")
    expect(page.locator("form.actions")).to_have_count(0)


def test_the_live_charts_move_while_500_messages_flow(
    page: Any, api: ApiProcess, start_worker: Any, dispatcher: Any, easemob: Any
) -> None:
    worker = start_worker()
    sign_in(page, api)
    page.get_by_role("link", name="Live").click()
    delivered = page.locator('figure[data-series="delivered"]')
    expect(delivered).to_have_attribute("data-readings", re.compile(r"^[1-9]"), timeout=20_000)
    stats = dispatcher.store.read.stats()
    before = stats.get("state:delivered", 0)
    throttled_before = stats.get("provider:429", 0)
    # The provider throttles 20 of the calls: the 429 and retry charts move too.
    easemob.fault(
        path="/messages$", status=429, body={"error": "reach_limit"}, retry_after=0.2, times=20
    )

    ids = [dispatcher.submit(text_message(f"flow {i}")) for i in range(500)]
    # The delivered/s line rises above zero and the total catches up with the 500.
    expect(delivered).not_to_have_attribute("data-peak", "0", timeout=60_000)
    for message_id in ids[-5:]:
        wait_for_state(dispatcher, message_id, {"delivered"}, timeout=120)
    expected_total = f"{before + 500:,}"
    expect(delivered.locator(".count")).to_have_text(expected_total, timeout=20_000)
    throttled = page.locator('figure[data-series="throttled"]')
    expect(throttled.locator(".count")).to_have_text(str(throttled_before + 20), timeout=20_000)
    expect(throttled).not_to_have_attribute("data-peak", "0")
    expect(page.locator('figure[data-series="retries"]')).not_to_have_attribute("data-peak", "0")
    peak = float(delivered.get_attribute("data-peak") or 0)
    assert peak > 0
    points = delivered.locator("polyline").get_attribute("points") or ""
    assert len(points.split()) >= 3
    # The queue is listed, and the worker answered Celery's inspect with at least its 500 tasks.
    expect(page.locator("#queues tbody")).to_contain_text(dispatcher.settings.queue)
    args = list(worker.process.args)
    node = str(args[args.index("-n") + 1]).split("@")[0]
    worker_row = page.locator("#workers tbody tr", has_text=node)
    done = worker_row.locator("td:nth-child(4)")
    expect(done).to_have_text(re.compile(r"^(5\d\d|[6-9]\d\d|\d,\d{3})$"), timeout=30_000)
    expect(worker_row).to_contain_text(re.compile(r"just now|\d+ s ago"))
    screenshot(page, "console-live", docs=True)


def test_requests_without_a_session_or_a_csrf_token_are_refused(
    page: Any, api: ApiProcess, dispatcher: Any, easemob: Any
) -> None:
    doomed = dispatcher.submit(text_message("never delivered"))
    lease = dispatcher.store.lease.begin(dispatcher.ref(doomed), "w", 10)
    from dispatcher.errors import ProviderError

    dispatcher.store.lease.mark_dead(lease, ProviderError("boom", "boom", retryable=True), "test")
    # No session: pages send the browser to the sign-in form, data and assets answer 401.
    page.goto(f"{api.url}/console/dead-letters")
    assert "/console/login?next=/console/dead-letters" in page.url
    assert page.request.get(f"{api.url}/console/live/data").status == 401
    assert page.request.get(f"{api.url}/console/static/live.js").status == 401

    sign_in(page, api)
    # Signed in, but an action without the CSRF token is refused.
    refused = page.request.post(
        f"{api.url}/console/actions/apply",
        form={"id": doomed, "action": "replay", "confirmed": "yes"},
    )
    assert refused.status == 403
    # Another site's form cannot use the session: the SameSite=Strict cookie stays home.
    evil = "http://evil.invalid/"
    page.route(
        evil,
        lambda route: route.fulfill(
            content_type="text/html",
            body=f"""<form id=f method=post action="{api.url}/console/actions/apply">
              <input name=id value="{doomed}"><input name=action value=replay>
              <input name=confirmed value=yes></form>
              <script>document.getElementById('f').submit()</script>""",
        ),
    )
    with page.expect_response(f"{api.url}/console/actions/apply") as answer:
        page.goto(evil)
    assert answer.value.status == 401
    assert dispatcher.status(doomed).state == "dead"
