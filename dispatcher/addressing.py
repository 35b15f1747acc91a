"""Who a message goes to: one recipient, or a list of distinct ones (a fan-out), and the
target type they are (docs/api.md, "Fan-out")."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, Field, TypeAdapter, ValidationError, WrapValidator

from dispatcher.errors import FieldError
from dispatcher.limits import MAX_GROUP_RECIPIENTS, MAX_RECIPIENT_CHARS, MAX_USER_RECIPIENTS
from dispatcher.message_info import CONTROL_CHARACTERS


def no_control_characters(value: str) -> str:
    if CONTROL_CHARACTERS.search(value):
        raise ValueError("must not contain control characters (U+0000-U+001F, U+007F)")
    return value


TargetType = Literal["users", "chatgroups", "chatrooms"]
RecipientName = Annotated[
    str,
    Field(min_length=1, max_length=128, pattern=r"^\S+$"),
    AfterValidator(no_control_characters),
]
ListedRecipient = Annotated[
    str,
    Field(min_length=1, max_length=MAX_RECIPIENT_CHARS, pattern=r"^\S+$"),
    AfterValidator(no_control_characters),
]
_ONE_RECIPIENT: TypeAdapter[str] = TypeAdapter(RecipientName)
_RECIPIENT_LIST: TypeAdapter[list[str]] = TypeAdapter(list[ListedRecipient])
_MAX_ITEM_ERRORS = 5


def recipients_of(value: Any) -> str | list[str]:
    """``to``: one recipient (a string) or a list of distinct ones (docs/api.md)."""
    if not isinstance(value, str | list):
        raise ValueError("must be a recipient id or a list of recipient ids")
    if not isinstance(value, list):
        try:
            return _ONE_RECIPIENT.validate_python(value)
        except ValidationError as exc:
            raise ValueError(exc.errors(include_url=False)[0]["msg"]) from None
    if not value:
        raise ValueError("must name at least one recipient")
    if len(value) > MAX_USER_RECIPIENTS:
        raise ValueError(f"must name at most {MAX_USER_RECIPIENTS} recipients")
    try:
        names = _RECIPIENT_LIST.validate_python(value)
    except ValidationError as exc:
        problems = [f"item {e['loc'][0]}: {e['msg']}" for e in exc.errors(include_url=False)]
        raise ValueError("; ".join(problems[:_MAX_ITEM_ERRORS])) from None
    seen: set[str] = set()
    for index, name in enumerate(names):
        if name in seen:
            raise ValueError(f"item {index}: {name!r} is named twice")
        seen.add(name)
    return names


Recipients = Annotated[
    RecipientName | list[ListedRecipient],
    WrapValidator(lambda value, _: recipients_of(value)),
    Field(description="one recipient, or a list of distinct ones (docs/api.md, fan-out)"),
]
"""The ``to`` of a request."""


def target_type_of(to: str | list[str], given: TargetType | None) -> TargetType:
    """The target type a message goes to: the one given, else groups when every recipient
    is a number (the seed's convention), else users."""
    if given:
        return given
    names = to if isinstance(to, list) else [to]
    return "chatgroups" if all(name.isdigit() for name in names) else "users"


def too_many_groups(to: str | list[str], given: TargetType | None) -> list[FieldError]:
    """The error of a list naming more groups or rooms than a message may."""
    if (
        isinstance(to, list)
        and len(to) > MAX_GROUP_RECIPIENTS
        and target_type_of(to, given) != "users"
    ):
        return [FieldError("to", f"must name at most {MAX_GROUP_RECIPIENTS} groups or rooms")]
    return []


__all__ = [
    "MAX_GROUP_RECIPIENTS",
    "ListedRecipient",
    "RecipientName",
    "Recipients",
    "TargetType",
    "no_control_characters",
    "recipients_of",
    "target_type_of",
    "too_many_groups",
]
