"""What one message document adds to the rollups (pure).

The rules are the contract's (docs/metrics.md, "Odd or missing fields"); the full-scan
pipeline implements the same rules in aggregation expressions and the property tests
hold the two together.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from bson import ObjectId

from resolvers.pipeline import UNKNOWN_KEY
from resolvers.rollups.keys import encode_key, truncate_to_millis

__all__ = [
    "FLAGS",
    "KINDS",
    "Contribution",
    "Flag",
    "Kind",
    "contribution",
    "dated",
    "flag_of",
    "owner",
]

Flag = Literal["o", "g"]
Kind = Literal["chat", "group", "contact"]

FLAGS: tuple[Flag, ...] = ("o", "g")
"""``g``: ``isGroup`` is true (what an instance that ignores group messages drops);
``o``: every other message."""

KINDS: tuple[Kind, ...] = ("chat", "group", "contact")


@dataclass(frozen=True, slots=True)
class Contribution:
    """One message's share: +1 on each of ``counters`` (field paths under ``c.<flag>``)
    and on each ``(kind, value)`` of ``values``; ``timestamp`` None = undated."""

    instance: ObjectId
    flag: Flag
    counters: tuple[str, ...]
    timestamp: datetime | None
    values: frozenset[tuple[Kind, str]]


def owner(doc: Mapping[str, Any]) -> ObjectId | None:
    """The instance a message counts for: its ``instanceId`` when that is an ObjectId."""
    instance = doc.get("instanceId")
    return instance if isinstance(instance, ObjectId) else None


def flag_of(doc: Mapping[str, Any]) -> Flag:
    return "g" if doc.get("isGroup") is True else "o"


def dated(doc: Mapping[str, Any]) -> datetime | None:
    """The timestamp when it is a date (as stored: UTC, whole milliseconds), else None."""
    timestamp = doc.get("timestamp")
    return truncate_to_millis(timestamp) if isinstance(timestamp, datetime) else None


def contribution(doc: Mapping[str, Any] | None) -> Contribution | None:
    """What ``doc`` adds to the rollups; None when it counts for no instance."""
    instance = None if doc is None else owner(doc)
    if doc is None or instance is None:
        return None
    return Contribution(
        instance=instance,
        flag=flag_of(doc),
        counters=_counters(doc),
        timestamp=dated(doc),
        values=_values(doc),
    )


def _counters(doc: Mapping[str, Any]) -> tuple[str, ...]:
    names = ["n", f"t.{_key(doc.get('type'))}", f"st.{_key(doc.get('status'))}"]
    if doc.get("fromMe") is True:
        names.append("s")
    if doc.get("fromMe") is False:
        names.append("r")
    if doc.get("isGroup") is False:
        names.append("i")
    media = doc.get("media")
    if isinstance(media, Mapping):
        names += ["m", f"mt.{_key(media.get('type'))}"]
    return tuple(names)


def _values(doc: Mapping[str, Any]) -> frozenset[tuple[Kind, str]]:
    chat, is_group = _name(doc.get("chatId")), doc.get("isGroup")
    values: set[tuple[Kind, str]] = set()
    if chat is not None:
        values.add(("chat", chat))
        if is_group is True:
            values.add(("group", chat))
        if is_group is False:
            values.add(("contact", chat))
    sender = _name(doc.get("sender"))
    if is_group is True and doc.get("fromMe") is False and sender is not None:
        values.add(("contact", sender))
    return frozenset(values)


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _key(value: Any) -> str:
    """A map key as a safe field name: the value when a non-empty string, else unknown."""
    return encode_key(_name(value) or UNKNOWN_KEY)
