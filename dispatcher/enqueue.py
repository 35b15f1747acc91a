"""The queue contract between producers and workers: the delivery task's name, its
arguments, and its queue message built without kombu on the submit path.

The task carries one argument, the message's reference (``MessageRef.member``);
the status record carries everything else.

When the broker is the status store's Redis, the producer pushes the Celery
task message onto the queue list in the same Lua call that records
``queued`` (``dispatcher/store/submit.py``): both or neither, one round trip,
and no kombu objects per submit.

The message is the one ``Celery.send_task(DELIVER_TASK, args=task_args(ref), queue=q)``
makes and kombu's Redis transport LPUSHes (task protocol 2, body in base64),
with a ``traceparent`` header when tracing is on (dispatcher/tracing.py).
It is captured once per process by running ``send_task`` itself against an
in-memory kombu channel, so Celery's and kombu's own code decide every header
and property; each submit only fills in the id, a new task id and a new
delivery tag.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass
from typing import Any

from celery import Celery
from celery.utils.saferepr import saferepr
from kombu.connection import Connection
from kombu.transport import memory
from kombu.utils.json import dumps as kombu_dumps

from dispatcher import tracing
from dispatcher.ids import MessageRef
from dispatcher.tracing import TRACEPARENT

log = logging.getLogger(__name__)

DELIVER_TASK = "dispatcher.deliver"

RING_TASK = "dispatcher.ring"
"""The doorbell's task (docs/architecture.md, "The doorbell"): its one argument names the
lane whose pending messages it drains and delivers."""


def task_args(ref: MessageRef) -> tuple[str]:
    """The delivery task's arguments for one message."""
    return (ref.member,)


def new_task_id() -> str:
    """A delivery task's id, as Celery makes them. A retry, a promotion from the schedule, a
    recovery or a replay records the id of the task it publishes, so copies of older tasks
    stand down (docs/reliability.md, "The state machine")."""
    return str(uuid.uuid4())


_ID = "__dispatcher_message_id__"
_TASK_ID = "__dispatcher_task_id__"
_TAG = "__dispatcher_delivery_tag__"
_ARGSREPR = "__dispatcher_argsrepr__"
_BODY = "__dispatcher_body__"
_TRACEPARENT = "__dispatcher_traceparent__"
_PLACEHOLDERS = (_BODY, _TASK_ID, _ARGSREPR, _TAG, _TRACEPARENT)
_PLAIN = re.compile(r"[A-Za-z0-9:_.\-]{1,199}")
"""Arguments whose ``saferepr`` is the text in plain quotes."""


class _CaptureChannel(memory.Channel):
    """A memory channel that keeps what ``basic_publish`` would store instead of queuing it."""

    captured: list[tuple[str, dict[str, Any]]]

    def _put(self, queue: str, message: dict[str, Any], **kwargs: Any) -> None:
        self.connection.captured.append((queue, message))


class _CaptureTransport(memory.Transport):
    Channel = _CaptureChannel

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)  # type: ignore[no-untyped-call]
        self.captured: list[tuple[str, dict[str, Any]]] = []


@dataclass(frozen=True)
class TaskMessageTemplate:
    """The queue list key and the message bytes for ``task(message_id)``, filled per call."""

    queue_key: str
    task_name: str
    pid: int
    _parts: tuple[str, ...]
    _body_parts: tuple[str, str]
    _argsrepr_limits: tuple[int, int]
    """``saferepr``'s maximum size and nesting, as Celery passes them."""

    @classmethod
    def capture(
        cls, app: Celery, task_name: str, queue: str, *, traced: bool = False
    ) -> TaskMessageTemplate:
        """Run ``app.send_task`` once on an in-memory channel and keep its message as a template.
        ``traced``: the message has a ``traceparent`` header, filled per call.

        Raises ValueError when the message is not one a plain LPUSH to ``queue`` reproduces
        (a priority other than 0, a key prefix, routing to another queue, another encoding).
        """
        options = app.conf.broker_transport_options or {}
        if options.get("global_keyprefix"):
            raise ValueError("a broker key prefix is configured")
        with Connection(transport=_CaptureTransport) as connection:  # type: ignore[no-untyped-call]
            app.send_task(
                task_name,
                args=(_ID,),
                queue=queue,
                task_id=_TASK_ID,
                connection=connection,
                headers={TRACEPARENT: _TRACEPARENT} if traced else None,
            )
            captured = connection.transport.captured
        if len(captured) != 1:
            raise ValueError(f"send_task stored {len(captured)} messages, expected 1")
        target, message = captured[0]
        props = message["properties"]
        if target != queue or props.get("priority") not in (0, None):
            raise ValueError(
                f"send_task routed to {target!r} with priority {props.get('priority')}"
            )
        if props.get("body_encoding") != "base64" or message.get("content-type") != (
            "application/json"
        ):
            raise ValueError("unexpected message encoding")
        body = base64.b64decode(message["body"]).decode("utf-8")
        body_json = json.dumps(_ID)
        if body.count(body_json) != 1:
            raise ValueError("message id not found once in the task body")
        head, tail = body.split(body_json)

        headers = message["headers"]
        argsrepr_maxsize = app.amqp.argsrepr_maxsize
        argsrepr_maxlevels = app.conf.task_repr_maxlevels
        if headers.get("argsrepr") != saferepr(
            (_ID,), argsrepr_maxsize, maxlevels=argsrepr_maxlevels
        ):
            raise ValueError("unexpected argsrepr")
        for place, key in ((headers, "id"), (headers, "root_id"), (props, "correlation_id")):
            if place.get(key) != _TASK_ID:
                raise ValueError(f"task id not in {key}")
        headers["argsrepr"] = _ARGSREPR
        props["delivery_tag"] = _TAG
        message["body"] = _BODY
        # kombu's Redis transport: client.lpush(key, dumps(message))
        text: str = kombu_dumps(message)  # type: ignore[no-untyped-call]
        parts = _split(text)
        if traced and _TRACEPARENT not in parts:
            raise ValueError("traceparent header not found in the message")
        return cls(
            queue_key=queue,
            task_name=task_name,
            pid=os.getpid(),
            _parts=parts,
            _body_parts=(head, tail),
            _argsrepr_limits=(argsrepr_maxsize, argsrepr_maxlevels),
        )

    def build(
        self, ref: MessageRef, traceparent: str | None = None, task_id: str | None = None
    ) -> str:
        """The queue message for one delivery of ``ref``: a new tag, the task id given or a
        new one (and the trace it continues, in a traced template)."""
        return self.build_for(task_args(ref)[0], traceparent, task_id)

    def build_for(
        self, member: str, traceparent: str | None = None, task_id: str | None = None
    ) -> str:
        """:meth:`build` for the task's one argument given as text (a ring's lane)."""
        id_json = json.dumps(member)
        head, tail = self._body_parts
        body = base64.b64encode(f"{head}{id_json}{tail}".encode()).decode("ascii")
        if _PLAIN.fullmatch(member):
            argsrepr = f"('{member}',)"  # what saferepr gives for a plain short argument
        else:
            argsrepr = saferepr(
                (member,), self._argsrepr_limits[0], maxlevels=self._argsrepr_limits[1]
            )
        values = {
            _BODY: json.dumps(body),
            _TASK_ID: json.dumps(task_id or new_task_id()),
            _ARGSREPR: json.dumps(argsrepr),
            _TAG: json.dumps(str(uuid.uuid4())),
            _TRACEPARENT: json.dumps(traceparent or ""),
        }
        parts = self._parts
        out = [parts[0]]
        for i in range(1, len(parts), 2):
            out.append(values[parts[i]])
            out.append(parts[i + 1])
        return "".join(out)


class DirectEnqueue:
    """The queue messages our scripts push themselves, when the broker is the status
    store's Redis (the submit and the scheduler's promotion); None otherwise, and the
    caller publishes through kombu."""

    def __init__(
        self, app: Celery, queue: str, *, enabled: bool, task_name: str = DELIVER_TASK
    ) -> None:
        self.app = app
        self.queue = queue
        self.task_name = task_name
        self.enabled = enabled
        """The broker is the status store's Redis (``broker.broker_is_store``)."""
        self._template: TaskMessageTemplate | None = None

    def __call__(
        self, ref: MessageRef, traceparent: str | None = None, *, task_id: str | None = None
    ) -> tuple[str, str] | None:
        """(queue list key, task message) for one delivery of ``ref`` (as the task
        ``task_id``, else a new one), or None; with tracing on, ``traceparent`` is the trace
        the attempt continues (without one the attempt finds the submit's in the status
        record)."""
        message = self.message_for(ref.member, traceparent, task_id=task_id)
        return None if message is None else (self.queue, message)

    def message_for(
        self, argument: str, traceparent: str | None = None, *, task_id: str | None = None
    ) -> str | None:
        """The task message for one call with ``argument``, or None (publish through kombu)."""
        if not self.enabled:
            return None
        template = self._template
        if template is None or template.pid != os.getpid():  # origin names the process
            try:
                template = TaskMessageTemplate.capture(
                    self.app, self.task_name, self.queue, traced=tracing.enabled()
                )
            except ValueError as exc:
                log.warning("publishing through kombu: %s", exc)
                self.enabled = False
                return None
            self._template = template
        return template.build_for(argument, traceparent, task_id)


def ref_in(entry: bytes | str | None) -> MessageRef | None:
    """The message a queue list entry delivers (None for anything else)."""
    if entry is None:
        return None
    try:
        body = json.loads(base64.b64decode(json.loads(entry)["body"]))
        member = body[0][0]
    except (ValueError, TypeError, KeyError, IndexError):
        return None
    return MessageRef.parse(member) if isinstance(member, str) else None


def _split(text: str) -> tuple[str, ...]:
    """``text`` cut at each JSON-quoted placeholder: literal, name, literal, name, ..., literal."""
    names = {json.dumps(p): p for p in _PLACEHOLDERS}
    wanted = set(names)
    parts: list[str] = []
    rest = text
    while True:
        hits = [(rest.find(q), q) for q in wanted if q in rest]
        if not hits:
            parts.append(rest)
            break
        at, quoted = min(hits)
        parts.append(rest[:at])
        parts.append(names[quoted])
        rest = rest[at + len(quoted) :]
    if any(quoted in parts[-1] for quoted in wanted) or parts.count(_BODY) != 1:
        raise ValueError("placeholders not found in the message")
    return tuple(parts)
