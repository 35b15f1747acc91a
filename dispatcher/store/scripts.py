"""The store's Lua scripts: one ``.lua`` file each, called with named keys and arguments.

Each file under ``lua/`` starts with its contract in comments::

    -- keys: message history inflight queue? rates...
    -- args: owner lease_ms# member task? fields...
    -- include: lib

A name ending in ``?`` is optional (``None`` from Python, ``nil`` in Lua), one ending
in ``#`` is a number in Lua, and a last name ending in ``...`` takes the rest as a
Lua table. At load time the included files and a prelude that binds every name to
its ``KEYS``/``ARGV`` slot are put in front of the body, so neither the script nor
its caller counts positions. A call is one ``EVALSHA`` (the script is loaded on the
first ``NOSCRIPT``). docs/architecture.md lists the scripts and their keys.
"""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cache, cached_property
from importlib import resources
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

Value = str | int | float
KeyValue = str | Sequence[str] | None
ArgValue = Value | Sequence[Value] | None

_HEADER = re.compile(r"^-- (keys|args|include): *(.*)$", re.MULTILINE)


@dataclass(frozen=True)
class _Name:
    name: str
    optional: bool = False
    number: bool = False
    rest: bool = False

    @classmethod
    def parse(cls, word: str) -> _Name:
        rest = word.endswith("...")
        word = word.removesuffix("...")
        flags = set()
        while word and word[-1] in "?#":
            flags.add(word[-1])
            word = word[:-1]
        return cls(word, "?" in flags, "#" in flags, rest)


@dataclass(frozen=True)
class Script:
    """One store script: its source with the prelude, its SHA1, and its named slots."""

    name: str
    source: str
    keys: tuple[_Name, ...]
    args: tuple[_Name, ...]

    @cached_property
    def sha(self) -> str:
        return hashlib.sha1(self.source.encode(), usedforsecurity=False).hexdigest()

    def bind(self, keys: Mapping[str, KeyValue], args: Mapping[str, ArgValue]) -> list[Value]:
        """``EVALSHA``'s operands after the SHA: key count, keys, then arguments."""
        flat_keys: list[Value] = []
        flat_args: list[Value] = []
        presence = ""
        for slot in self.keys:
            key = keys[slot.name]
            if slot.rest:
                flat_keys.extend(key or ())
            elif slot.optional:
                presence += "0" if key is None else "1"
                if key is not None:
                    flat_keys.append(key)  # type: ignore[arg-type]
            else:
                flat_keys.append(key)  # type: ignore[arg-type]
        if any(k.optional for k in self.keys):
            flat_args.append(presence)
        for slot in self.args:
            value = args[slot.name]
            if slot.rest:
                flat_args.extend(value or ())  # type: ignore[arg-type]
            else:
                flat_args.append("" if value is None else value)  # type: ignore[arg-type]
        return [len(flat_keys), *flat_keys, *flat_args]

    def __call__(
        self,
        client: redis.Redis,
        keys: Mapping[str, KeyValue],
        args: Mapping[str, ArgValue],
    ) -> Any:
        operands = self.bind(keys, args)
        try:
            return client.evalsha(self.sha, *operands)  # type: ignore[arg-type]
        except redis.exceptions.NoScriptError:
            client.script_load(self.source)
            return client.evalsha(self.sha, *operands)  # type: ignore[arg-type]

    async def call_async(
        self,
        client: AsyncRedis,
        keys: Mapping[str, KeyValue],
        args: Mapping[str, ArgValue],
    ) -> Any:
        """:meth:`__call__` on an asyncio client (the HTTP API's event loop)."""
        operands = self.bind(keys, args)
        try:
            return await client.evalsha(self.sha, *operands)  # type: ignore[arg-type]
        except redis.exceptions.NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, *operands)  # type: ignore[arg-type]


def operation_id() -> str:
    """A fresh id for one script call that changes a record (its ``op`` argument).

    redis-py sends the same call again after a lost reply; the script keeps the last
    call's id and reply on the record, so the re-run answers what the first run did."""
    return uuid.uuid4().hex


def _read(name: str) -> str:
    return resources.files(__package__).joinpath("lua", f"{name}.lua").read_text("utf-8")


def _prelude(keys: Sequence[_Name], args: Sequence[_Name]) -> str:
    lines: list[str] = []
    optional = any(k.optional for k in keys)
    lines.append("local _k = 0")
    flag = 0
    for slot in keys:
        if slot.rest:
            lines.append(f"local {slot.name} = {{unpack(KEYS, _k + 1)}}")
        elif slot.optional:
            flag += 1
            lines.append(f"local {slot.name} = nil")
            lines.append(
                f"if string.byte(ARGV[1], {flag}) == 49 then _k = _k + 1; {slot.name} = KEYS[_k] end"
            )
        else:
            lines.append(f"_k = _k + 1; local {slot.name} = KEYS[_k]")
    first = 2 if optional else 1
    for position, slot in enumerate(args, start=first):
        if slot.rest:
            lines.append(f"local {slot.name} = {{unpack(ARGV, {position})}}")
            continue
        value = f"ARGV[{position}]"
        if slot.optional:
            value = f"({value} ~= '' and {value} or nil)"
        if slot.number:
            value = f"tonumber({value})"
        lines.append(f"local {slot.name} = {value}")
    return "\n".join(lines)


@cache
def load(name: str) -> Script:
    """The script in ``lua/<name>.lua``, composed once per process."""
    body = _read(name)
    header = {kind: value.split() for kind, value in _HEADER.findall(body)}
    keys = tuple(_Name.parse(w) for w in header.get("keys", []))
    args = tuple(_Name.parse(w) for w in header.get("args", []))
    for slots in (keys, args):
        if any(s.rest for s in slots[:-1]):
            raise ValueError(f"{name}.lua: only the last name may take the rest")
    if any(k.optional for k in keys) and any(k.rest for k in keys):
        raise ValueError(f"{name}.lua: optional keys and a rest of keys do not mix")
    parts = [_read(include) for include in header.get("include", [])]
    parts += [_prelude(keys, args), body]
    return Script(name, "\n".join(parts), keys, args)
