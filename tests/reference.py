"""The contract's metric definitions in plain Python, one document at a time.

Property tests compare the aggregation pipelines with this. It follows the written
definitions (docs/metrics.md), not the pipeline's structure.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import date, datetime, timedelta
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

from bson import ObjectId

KNOWN_TYPES = [
    "text",
    "image",
    "audio",
    "video",
    "document",
    "sticker",
    "location",
    "contact",
    "reaction",
    "poll",
]
KNOWN_MEDIA = ["image", "audio", "video", "document", "sticker"]
KNOWN_STATUSES = ["pending", "sent", "delivered", "read", "played", "failed"]


def _name(value: Any) -> str | None:
    return value if isinstance(value, str) and value != "" else None


def _key(value: Any) -> str:
    return _name(value) or "unknown"


def _is_date(value: Any) -> bool:
    return isinstance(value, datetime)


Range = tuple[datetime, datetime]
"""[from, to): a message counts when its timestamp is a date with from <= it < to."""


def _messages_of(
    docs: Iterable[dict[str, Any]],
    *,
    instance_id: ObjectId,
    ignore_groups: bool,
    range: Range | None,
) -> list[dict[str, Any]]:
    # attribution: only an ObjectId instanceId counts (not an array holding it, not a string)
    mine = [
        d
        for d in docs
        if isinstance(d.get("instanceId"), ObjectId) and d["instanceId"] == instance_id
    ]
    if ignore_groups:
        mine = [d for d in mine if d.get("isGroup") is not True]
    if range is not None:
        mine = [
            d
            for d in mine
            if _is_date(d.get("timestamp")) and range[0] <= d["timestamp"] < range[1]
        ]
    return mine


def one_instance(
    docs: Iterable[dict[str, Any]],
    *,
    instance_id: ObjectId,
    ignore_groups: bool,
    now: datetime,
    range: Range | None = None,
) -> dict[str, Any]:
    mine = _messages_of(docs, instance_id=instance_id, ignore_groups=ignore_groups, range=range)
    dates = [d["timestamp"] for d in mine if _is_date(d.get("timestamp"))]
    with_media = [d for d in mine if isinstance(d.get("media"), dict)]
    contacts = set()
    for d in mine:
        if d.get("isGroup") is False and _name(d.get("chatId")):
            contacts.add(d["chatId"])
        if d.get("isGroup") is True and d.get("fromMe") is False and _name(d.get("sender")):
            contacts.add(d["sender"])
    return {
        "totalMessages": len(mine),
        "messagesSent": sum(1 for d in mine if d.get("fromMe") is True),
        "messagesReceived": sum(1 for d in mine if d.get("fromMe") is False),
        "groupMessages": sum(1 for d in mine if d.get("isGroup") is True),
        "individualMessages": sum(1 for d in mine if d.get("isGroup") is False),
        "messagesWithMedia": len(with_media),
        "messagesByType": Counter(_key(d.get("type")) for d in mine),
        "mediaByType": Counter(_key(d["media"].get("type")) for d in with_media),
        "messagesByStatus": Counter(_key(d.get("status")) for d in mine),
        "uniqueChats": len({d["chatId"] for d in mine if _name(d.get("chatId"))}),
        "uniqueGroups": len(
            {d["chatId"] for d in mine if d.get("isGroup") is True and _name(d.get("chatId"))}
        ),
        "uniqueContacts": len(contacts),
        "messagesLast7Days": sum(1 for t in dates if t >= now - timedelta(days=7)),
        "messagesLast30Days": sum(1 for t in dates if t >= now - timedelta(days=30)),
        "firstMessageAt": min(dates, default=None),
        "lastMessageAt": max(dates, default=None),
    }


def reference_metrics(
    docs: list[dict[str, Any]],
    *,
    instances: list[tuple[ObjectId, bool]],
    now: datetime,
    range: Range | None = None,
) -> dict[str, Any]:
    """The contract's sum over distinct instances, with the known keys always present;
    over the messages dated in ``range`` when given."""
    total: dict[str, Any] = {}
    for instance_id, ignore in dict(instances).items():
        part = one_instance(
            docs, instance_id=instance_id, ignore_groups=ignore, now=now, range=range
        )
        for field, value in part.items():
            total[field] = _combine(field, total.get(field), value)
    if not total:
        total = one_instance([], instance_id=ObjectId(), ignore_groups=False, now=now)
    for field, known in (
        ("messagesByType", KNOWN_TYPES),
        ("mediaByType", KNOWN_MEDIA),
        ("messagesByStatus", KNOWN_STATUSES),
    ):
        total[field] = {**dict.fromkeys(known, 0), **total[field]}
    return total


def _combine(field: str, left: Any, right: Any) -> Any:
    if left is None:
        return right
    if right is None:
        return left
    if field == "firstMessageAt":
        return min(left, right)
    if field == "lastMessageAt":
        return max(left, right)
    return left + right


# --- series -------------------------------------------------------------------------


def local_label(moment: datetime, *, interval: str, timezone: str) -> Any:
    """Which point of a local calendar ``moment`` is in: its local hour (with the UTC
    offset, so the two 01:00 hours of a DST fold are two points), date, Monday or month."""
    local = moment.astimezone(ZoneInfo(timezone))
    if interval == "HOUR":
        return (local.date(), local.hour, local.utcoffset())
    if interval == "DAY":
        return local.date()
    if interval == "WEEK":
        return local.date() - timedelta(days=local.weekday())
    assert interval == "MONTH"
    return date(local.year, local.month, 1)


def reference_bounds(range: Range, *, interval: str, timezone: str) -> list[Range]:
    """The points of ``range``: maximal runs of instants with one ``local_label``.

    Brute force: the label every ``step`` (a minute for hours, a quarter hour otherwise:
    no label lasts less), each change found to the millisecond by bisection."""
    start, end = range
    if start >= end:
        return []
    step = timedelta(minutes=1 if interval == "HOUR" else 15)
    ms = timedelta(milliseconds=1)

    def label(moment: datetime) -> Any:
        return local_label(moment, interval=interval, timezone=timezone)

    cuts = [start]
    here, current = start, label(start)
    while here < end:
        there = min(here + step, end - ms)
        if there <= here:
            break
        if label(there) != current:
            low, high = here, there  # label(low) == current != label(high)
            while high - low > ms:
                middle = low + (high - low) / 2
                middle -= timedelta(microseconds=middle.microsecond % 1000)
                if label(middle) == current:
                    low = middle
                else:
                    high = middle
            cuts.append(high)
            current = label(high)
            here = high
            continue
        here = there
    cuts.append(end)
    return list(pairwise(cuts))


def reference_series(
    docs: list[dict[str, Any]],
    *,
    instances: list[tuple[ObjectId, bool]],
    range: Range,
    interval: str,
    timezone: str,
) -> list[dict[str, Any]]:
    """Dense points with the counts a series point shows, summed over distinct instances."""
    points = []
    for low, high in reference_bounds(range, interval=interval, timezone=timezone):
        total = reference_metrics(docs, instances=instances, now=high, range=(low, high))
        points.append({"start": low, "end": high, **{f: total[f] for f in SERIES_FIELDS}})
    return points


SERIES_FIELDS = (
    "totalMessages",
    "messagesSent",
    "messagesReceived",
    "groupMessages",
    "individualMessages",
    "messagesWithMedia",
    "messagesByType",
    "messagesByStatus",
)
