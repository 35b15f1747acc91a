"""The messages dispatcher accepts: the envelope, ``ext``, and the validated :class:`Message`.

``parse_message``, the one entry point for untrusted input, checks the envelope, the
``messageInfo`` (:mod:`dispatcher.message_info`) and ``ext`` in one pass, naming every
broken field. Records: :mod:`dispatcher.record`."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    ValidationError,
    field_validator,
    model_validator,
)

from dispatcher.addressing import (
    RecipientName,
    Recipients,
    TargetType,
    target_type_of,
    too_many_groups,
)
from dispatcher.errors import FieldError, InvalidMessage
from dispatcher.ids import ID_PATTERN
from dispatcher.message_info import (
    IMAGE_MAX_BYTES,
    INFO_MODELS,
    MEDIA_TYPES,
    THUMB_MAX_BYTES,
    VIDEO_MAX_BYTES,
    VOICE_MAX_BYTES,
    VOICE_MAX_SECONDS,
    CustomNewsInfo,
    ExtensionInfo,
    ImageInfo,
    InfoModel,
    LocationInfo,
    MessageInfo,
    MessageType,
    NewsInfo,
    PassThroughInfo,
    TemplateInfo,
    TextInfo,
    VideoInfo,
    VoiceInfo,
)
from dispatcher.priority import DEFAULT_PRIORITY, Priority
from dispatcher.scheduling import SendAtMs

CUSTOM_EVENT_PATTERN = re.compile(r"^[a-zA-Z0-9\-_/.]{1,32}$")
RESERVED_EXT_KEY = "dispatcher"
MAX_EXT_DEPTH = 16


def _nesting_over(value: Any, limit: int) -> bool:
    """Whether objects and arrays in ``value`` nest deeper than ``limit`` levels."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict):
            children = list(item.values())
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        pending.extend((child, depth + 1) for child in children)
    return False


def _json_string(value: str) -> str:
    try:
        json.loads(value)
    except ValueError as exc:
        raise ValueError(f"must be a JSON string ({exc.args[0]})") from None
    return value


class Template(BaseModel):
    model_config = ConfigDict(extra="allow")

    templetId: StrictInt
    content: str

    _content = field_validator("content")(_json_string)


class ExpandMsg(BaseModel):
    model_config = ConfigDict(extra="allow")

    MsgType: str
    Content: str

    _content = field_validator("Content")(_json_string)

    @field_validator("MsgType")
    @classmethod
    def _event_name(cls, value: str) -> str:
        if not CUSTOM_EVENT_PATTERN.match(value):
            raise ValueError("must be 1..32 characters of [a-zA-Z0-9-_/.] (Easemob customEvent)")
        return value


class Ext(BaseModel):
    """The seed's ext keys, typed; unknown keys are kept and passed through."""

    model_config = ConfigDict(extra="allow")

    chatid: str | None = None
    isEnd: str | None = None
    clientType: str | None = None
    reFresh: str | None = None
    isDelete: str | None = None
    isHide: str | None = None
    groupid: str | None = None
    OperatorJoin: str | None = None
    chatType: str | None = None
    chatClient: str | None = None
    chatChannel: str | None = None
    chatVersion: str | None = None
    chatLocation: str | None = None
    pushMediaId: str | None = None
    getType: StrictInt | None = Field(default=None, ge=1, le=4)
    voiceText: str | None = None
    template: Template | None = None
    expandMsg: ExpandMsg | None = None

    @model_validator(mode="before")
    @classmethod
    def _reserved_key(cls, data: Any) -> Any:
        if isinstance(data, dict) and RESERVED_EXT_KEY in data:
            raise ValueError(f"ext key {RESERVED_EXT_KEY!r} is reserved for dispatcher")
        return data


class Envelope(BaseModel):
    """The request body with ``messageInfo`` and ``ext`` still raw (checked separately)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    messageType: MessageType
    sender: RecipientName = Field(alias="from")
    to: Recipients
    messageInfo: dict[str, Any]
    ext: dict[str, Any] | None = None
    getMessageId: str | None = Field(default=None, pattern=ID_PATTERN.pattern)
    targetType: TargetType | None = None
    channelType: StrictInt | None = Field(default=None, description="a hint (routing.py)")
    sendAt: SendAtMs | None = None
    priority: Priority = DEFAULT_PRIORITY

    @field_validator("messageType", mode="before")
    @classmethod
    def _integer_type(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError("must be an integer 1..10")
        return value

    @field_validator("channelType")
    @classmethod
    def _registered_channel(cls, value: int | None) -> int | None:
        # The registry's channel modules import this module: ask it at call time.
        from dispatcher.channels import registry

        known = registry().channel_types
        if value is not None and value not in known:
            names = ", ".join(f"{number} ({name})" for number, name in sorted(known.items()))
            raise ValueError(f"must be one of {names}; the message center picks the channel")
        return value

    @field_validator("ext", mode="before")
    @classmethod
    def _shallow_ext(cls, value: Any) -> Any:
        if _nesting_over(value, MAX_EXT_DEPTH):
            raise ValueError(f"must not nest objects or arrays deeper than {MAX_EXT_DEPTH} levels")
        return value


class Message(BaseModel):
    """A validated message: built once by :func:`parse_message` at the boundary, recorded
    as :meth:`stored` with its status, and rebuilt by the worker with :meth:`from_stored`
    (no second validation)."""

    model_config = ConfigDict(populate_by_name=True)

    messageType: MessageType
    sender: str = Field(alias="from")
    to: str | list[str]
    """One recipient, or a list of them (a fan-out: dispatcher/fanout.py)."""
    messageInfo: MessageInfo
    ext: Ext | None = None
    getMessageId: str | None = None
    targetType: TargetType | None = None
    channelType: int | None = None  # the caller's hint (routing.py); not stored
    sendAt: int | None = None  # epoch ms (scheduling.py); in the record, not in stored()
    priority: Priority = DEFAULT_PRIORITY  # dispatcher/priority.py; in the record, not in stored()

    @property
    def target_type(self) -> TargetType:
        return target_type_of(self.to, self.targetType)

    @property
    def recipients(self) -> list[str]:
        return self.to if isinstance(self.to, list) else [self.to]

    @property
    def fans_out(self) -> bool:  # ``to`` is a list, even of one: dispatcher/fanout.py
        return isinstance(self.to, list)

    def to_payload(self) -> dict[str, Any]:
        """The normalised request body (aliases, no nulls at the top level)."""
        payload: dict[str, Any] = {
            "messageType": int(self.messageType),
            "from": self.sender,
            "to": self.to,
            "messageInfo": self.messageInfo.model_dump(exclude_none=True),
        }
        if self.ext is not None:
            payload["ext"] = self.ext.model_dump(exclude_unset=True)
        if self.targetType is not None:
            payload["targetType"] = self.targetType
        if self.getMessageId is not None:
            payload["getMessageId"] = self.getMessageId
        return payload

    def stored(self) -> str:
        """The one canonical encoding: sorted keys, the target type resolved, the id left
        out (the record's key holds it). Kept with the status record; its hash is the
        :meth:`fingerprint`."""
        payload = self.to_payload()
        payload.pop("getMessageId", None)
        payload["targetType"] = self.target_type
        return json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))

    def fingerprint(self) -> str:
        """Identity of the content, for idempotent resubmission (the id itself excluded)."""
        return fingerprint_of(self.stored())

    @classmethod
    def from_stored(cls, stored: str) -> Message:
        """The message :meth:`stored` wrote, rebuilt without validating it again.

        Raises InvalidMessage when the record does not hold such a message.
        """
        try:
            data = json.loads(stored)
            message_type = MessageType(data["messageType"])
            info: Any = INFO_MODELS[message_type].model_construct(**data["messageInfo"])
            ext = data.get("ext")
            return cls.model_construct(
                messageType=message_type,
                sender=data["from"],
                to=data["to"],
                messageInfo=info,
                ext=None if ext is None else _stored_ext(ext),
                targetType=data.get("targetType"),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InvalidMessage(
                [FieldError("body", f"the stored message is unreadable ({exc!r})")]
            ) from None


def fingerprint_of(stored: str) -> str:
    """The :meth:`Message.fingerprint` of a message's :meth:`Message.stored` form."""
    return hashlib.sha256(stored.encode()).hexdigest()


def _stored_ext(data: dict[str, Any]) -> Ext:
    nested: dict[str, Any] = {}
    if isinstance(data.get("template"), dict):
        nested["template"] = Template.model_construct(**data["template"])
    if isinstance(data.get("expandMsg"), dict):
        nested["expandMsg"] = ExpandMsg.model_construct(**data["expandMsg"])
    return Ext.model_construct(**{**data, **nested})


def field_errors(exc: ValidationError, prefix: str = "") -> list[FieldError]:
    errors = []
    for error in exc.errors(include_url=False):
        path = ".".join(str(part) for part in error["loc"])
        field = ".".join(part for part in (prefix, path) if part) or "body"
        message = error["msg"]
        if error["type"] == "missing":
            message = "is required"
        elif error["type"] == "extra_forbidden":
            message = "is not a known field"
        elif message.startswith("Value error, "):
            message = message.removeprefix("Value error, ")
        errors.append(FieldError(field, message))
    return errors


def parse_message(payload: Any, *, media_domain: str | None = None) -> Message:
    """Validate an untrusted request body; raise ``InvalidMessage`` listing every broken field.
    ``media_domain``: the Qiniu download domain caller-given media URLs must be on."""
    if not isinstance(payload, dict):
        raise InvalidMessage([FieldError("body", "must be a JSON object")])
    try:
        json.dumps(payload, ensure_ascii=False).encode()
    except RecursionError:
        raise InvalidMessage([FieldError("body", "is nested too deeply")]) from None
    except UnicodeEncodeError:
        raise InvalidMessage(
            [FieldError("body", "contains invalid Unicode (a lone surrogate)")]
        ) from None
    except (TypeError, ValueError):
        raise InvalidMessage([FieldError("body", "must contain only JSON values")]) from None
    context = {"media_domain": media_domain}
    errors: list[FieldError] = []
    envelope: Envelope | None = None
    try:
        envelope = Envelope.model_validate(payload, context=context)
    except ValidationError as exc:
        errors.extend(field_errors(exc))
    if envelope is not None:
        errors.extend(too_many_groups(envelope.to, envelope.targetType))

    message_type = MessageType.of(payload.get("messageType"))
    info: InfoModel | None = None
    raw_info = payload.get("messageInfo")
    if message_type is not None and isinstance(raw_info, dict):
        try:
            info = INFO_MODELS[message_type].model_validate(raw_info, context=context)
        except ValidationError as exc:
            errors.extend(field_errors(exc, "messageInfo"))

    ext: Ext | None = None
    raw_ext = payload.get("ext")
    if isinstance(raw_ext, dict):
        try:
            ext = Ext.model_validate(raw_ext)
        except ValidationError as exc:
            errors.extend(field_errors(exc, "ext"))
    if message_type is MessageType.TEMPLATE and (ext is None or ext.template is None):
        errors.append(FieldError("ext.template", "is required for a template message (type 9)"))
    if message_type is MessageType.EXTENSION and (ext is None or ext.expandMsg is None):
        errors.append(FieldError("ext.expandMsg", "is required for an extension message (type 10)"))

    if errors or envelope is None or info is None:
        unique = list(dict.fromkeys(errors))  # in order, each (field, error) once
        raise InvalidMessage(unique or [FieldError("body", "is not a valid message")])
    return Message(
        messageType=envelope.messageType,
        sender=envelope.sender,
        to=envelope.to,
        messageInfo=info,
        ext=ext,
        getMessageId=envelope.getMessageId,
        targetType=envelope.targetType,
        channelType=envelope.channelType,
        sendAt=envelope.sendAt,
        priority=envelope.priority,
    )


__all__ = [
    "IMAGE_MAX_BYTES",
    "INFO_MODELS",
    "MEDIA_TYPES",
    "RESERVED_EXT_KEY",
    "THUMB_MAX_BYTES",
    "VIDEO_MAX_BYTES",
    "VOICE_MAX_BYTES",
    "VOICE_MAX_SECONDS",
    "CustomNewsInfo",
    "Envelope",
    "ExpandMsg",
    "Ext",
    "ExtensionInfo",
    "ImageInfo",
    "InfoModel",
    "LocationInfo",
    "Message",
    "MessageInfo",
    "MessageType",
    "NewsInfo",
    "PassThroughInfo",
    "TargetType",
    "Template",
    "TemplateInfo",
    "TextInfo",
    "VideoInfo",
    "VoiceInfo",
    "field_errors",
    "fingerprint_of",
    "parse_message",
]
