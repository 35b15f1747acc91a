"""An attempt that loses its lease in the middle of a send cannot overwrite the outcome of
the attempt that took over (docs/reliability.md, "The state machine").

End to end: a real worker sends, is frozen (SIGSTOP) before the provider's answer reaches
it, and stays frozen past its lease; a second worker's reaper recovers the message and
sends it again. While that send waits for the provider, the first worker wakes and reads
its own answer, a 400; then the second send is accepted.
"""

from __future__ import annotations

import signal
import time
from typing import Any

import httpx
import pytest

from tests.fault.harness import MESSAGES_PATH, new_id, records_of, text_message

pytestmark = pytest.mark.fault


def wait_for(condition: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def test_a_late_refusal_does_not_overwrite_the_takers_accept(
    dispatcher: Any, easemob: Any, start_worker: Any
) -> None:
    first = start_worker()
    # The first send is answered 400, slowly enough to freeze its worker before the answer.
    easemob.fault(
        path=MESSAGES_PATH,
        status=400,
        body={"error": "illegal_argument", "error_description": "refused"},
        latency=1.5,
        times=1,
    )
    # The second send is accepted, after a pause in which the first worker's answer lands.
    easemob.fault(path=MESSAGES_PATH, latency=1.5, times=1)
    message_id = new_id("late")
    dispatcher.submit(text_message(message_id))

    def sends() -> int:
        entries = httpx.get(f"{easemob.url}/_sandbox/requests", timeout=10).json()
        return sum(MESSAGES_PATH in e["path"] and message_id in str(e["json"]) for e in entries)

    wait_for(lambda: sends() == 1, 20, "the first worker's send")
    first.signal(signal.SIGSTOP)
    try:
        start_worker()  # its reaper takes the message over once the frozen lease runs out
        wait_for(lambda: sends() == 2, 40, "the second worker's send")
    finally:
        first.signal(signal.SIGCONT)

    def settled() -> Any:
        record = records_of(dispatcher, [message_id])[message_id]
        late = any("lost its lease" in (h.detail or "") for h in record.history)
        return record if late and record.state.value == "delivered" else None

    record = wait_for(settled, 20, "the late answer in the history and the delivery")
    assert record.providerMessageId, "the accepted send's provider id is kept"
    details = [h.detail or "" for h in record.history]
    late = next(i for i, d in enumerate(details) if "lost its lease" in d)
    accepted = next(i for i, d in enumerate(details) if "delivered via easemob" in d)
    assert late < accepted, f"the refusal arrived first, while the taker was sending: {details}"
    assert "failed" in details[late] and "400" in details[late], details[late]
    assert sorted(r.status for r in easemob.receipts(message_id)) == [200, 400]
    assert message_id not in {r.id for r, _ in dispatcher.store.read.dead_letters()}
