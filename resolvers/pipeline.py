"""Pure builders of the metrics aggregation pipeline and the reader of its result.

One ``$match`` on the indexed ``instanceId`` selects the messages of every named
instance (an ObjectId ``instanceId`` only; minus group messages of instances that ignore
them); one ``$facet`` computes
every metric in a single round trip. Distinct counts are counted per instance, as
distinct ``(instanceId, value)`` pairs, so several instances sum exactly as the
contract says and no stage ever builds an unbounded array.

Odd documents never fail a metric; see "Odd or missing fields" in ``docs/metrics.md``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from resolvers.instances import InstanceRef
from resolvers.timeranges import TimeRange

__all__ = [
    "HAS_MEDIA",
    "IS_DATED",
    "IS_GROUP",
    "KNOWN_MEDIA_TYPES",
    "KNOWN_STATUSES",
    "KNOWN_TYPES",
    "UNKNOWN_KEY",
    "MetricsResult",
    "build_match",
    "build_metrics_pipeline",
    "build_range_match",
    "build_range_pipeline",
    "combine_metrics",
    "empty_metrics",
    "key_expression",
    "order_counts",
    "read_metrics",
]

KNOWN_TYPES = (
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
)
KNOWN_MEDIA_TYPES = ("image", "audio", "video", "document", "sticker")
KNOWN_STATUSES = ("pending", "sent", "delivered", "read", "played", "failed")
UNKNOWN_KEY = "unknown"

# Expressions, not queries: a query such as ``{"isGroup": True}`` also matches arrays
# that contain the value, and the contract counts only the value itself.
HAS_MEDIA = {"$eq": [{"$type": "$media"}, "object"]}
IS_GROUP = {"$eq": ["$isGroup", True]}
IS_DATED = {"$eq": [{"$type": "$timestamp"}, "date"]}

_COUNTERS = (
    "totalMessages",
    "messagesSent",
    "messagesReceived",
    "groupMessages",
    "individualMessages",
    "messagesWithMedia",
    "messagesLast7Days",
    "messagesLast30Days",
)


@dataclass(frozen=True, slots=True)
class MetricsResult:
    """The metrics of a set of instances, named as in the contract."""

    total_messages: int
    messages_sent: int
    messages_received: int
    group_messages: int
    individual_messages: int
    messages_with_media: int
    messages_last_7_days: int
    messages_last_30_days: int
    messages_by_type: dict[str, int]
    media_by_type: dict[str, int]
    messages_by_status: dict[str, int]
    unique_chats: int
    unique_groups: int
    unique_contacts: int
    first_message_at: datetime | None
    last_message_at: datetime | None


def build_metrics_pipeline(
    *, instances: Sequence[InstanceRef], now: datetime, unique: bool = True
) -> list[dict[str, Any]]:
    """The aggregation on ``messages`` whose single result ``read_metrics`` understands;
    ``unique`` False leaves the distinct counts out (they read 0)."""
    return [
        *build_match(instances=instances),
        _facets(now, counters=True, unique=unique),
    ]


def build_range_pipeline(
    *,
    instance: InstanceRef,
    now: datetime,
    range: TimeRange,
    counters: bool = True,
    unique: bool = True,
) -> list[dict[str, Any]]:
    """``build_metrics_pipeline`` for one instance's messages dated in ``range``, on the
    instanceId + timestamp index; ``counters`` False keeps only the distinct counts."""
    facets = _facets(now, counters=counters, unique=unique)
    return [*build_range_match(instance=instance, start=range.start, end=range.end), facets]


def build_range_match(
    *, instance: InstanceRef, start: datetime, end: datetime
) -> list[dict[str, Any]]:
    """The stages that keep the messages of ``instance`` dated in ``[start, end)``.

    The first is an equality and a range alone, the only shape SecantusDB serves from
    the index (an ``$in``, a ``$not`` or an ``$expr`` beside them scans the collection);
    the second drops what such a query also matches: an array ``instanceId`` holding the
    id or an array ``timestamp`` holding such a date, and ignored group messages."""
    conditions: list[dict[str, Any]] = [{"$ne": [{"$type": "$instanceId"}, "array"]}, IS_DATED]
    if instance.ignore_group_messages:
        conditions.append({"$not": [IS_GROUP]})
    return [
        {"$match": {"instanceId": instance.id, "timestamp": {"$gte": start, "$lt": end}}},
        {"$match": {"$expr": {"$and": conditions}}},
    ]


def _facets(now: datetime, *, counters: bool, unique: bool) -> dict[str, Any]:
    facets: dict[str, Any] = {}
    if counters:
        facets.update(
            totals=[{"$group": _totals(now)}],
            byType=_count_by(key_expression("$type")),
            byStatus=_count_by(key_expression("$status")),
            mediaByType=[
                {"$match": {"$expr": HAS_MEDIA}},
                *_count_by(key_expression("$media.type")),
            ],
        )
    if unique:
        facets.update(
            uniqueChats=_distinct_per_instance("$chatId"),
            uniqueGroups=[{"$match": {"$expr": IS_GROUP}}, *_distinct_per_instance("$chatId")],
            uniqueContacts=_distinct_per_instance(_contact()),
        )
    return {"$facet": facets}


def build_match(*, instances: Sequence[InstanceRef]) -> list[dict[str, Any]]:
    """The ``$match`` stages that keep the messages that count for ``instances``.

    The first is the ``$in`` alone, which SecantusDB serves from the instanceId +
    timestamp index (beside a ``$not`` or an ``$expr`` it scans the whole collection:
    every message of every instance, minutes at a million); the second drops what it
    also matches: a document whose ``instanceId`` is an array holding one of the ids (only
    an ObjectId attributes), and the group messages of an instance that ignores them."""
    ids = [ref.id for ref in instances]
    conditions: list[dict[str, Any]] = [{"$ne": [{"$type": "$instanceId"}, "array"]}]
    ignoring = [ref.id for ref in instances if ref.ignore_group_messages]
    if ignoring:
        conditions.append({"$not": [{"$and": [{"$in": ["$instanceId", ignoring]}, IS_GROUP]}]})
    return [
        {"$match": {"instanceId": {"$in": ids}}},
        {"$match": {"$expr": {"$and": conditions}}},
    ]


def _totals(now: datetime) -> dict[str, Any]:
    timestamp = {"$cond": [{"$eq": [{"$type": "$timestamp"}, "date"]}, "$timestamp", None]}
    return {
        "_id": None,
        "totalMessages": {"$sum": 1},
        "messagesSent": _count_if({"$eq": ["$fromMe", True]}),
        "messagesReceived": _count_if({"$eq": ["$fromMe", False]}),
        "groupMessages": _count_if(IS_GROUP),
        "individualMessages": _count_if({"$eq": ["$isGroup", False]}),
        "messagesWithMedia": _count_if(HAS_MEDIA),
        "messagesLast7Days": _count_if(_since(timestamp, now - timedelta(days=7))),
        "messagesLast30Days": _count_if(_since(timestamp, now - timedelta(days=30))),
        "firstMessageAt": {"$min": timestamp},
        "lastMessageAt": {"$max": timestamp},
    }


def _count_if(condition: dict[str, Any]) -> dict[str, Any]:
    return {"$sum": {"$cond": [condition, 1, 0]}}


def _since(timestamp: dict[str, Any], cutoff: datetime) -> dict[str, Any]:
    return {"$and": [{"$ne": [timestamp, None]}, {"$gte": [timestamp, cutoff]}]}


def key_expression(path: str) -> dict[str, Any]:
    """The value at ``path`` when it is a non-empty string, else ``UNKNOWN_KEY``."""
    return {"$cond": [_is_name(path), path, UNKNOWN_KEY]}


def _is_name(path: str) -> dict[str, Any]:
    return {"$and": [{"$eq": [{"$type": path}, "string"]}, {"$ne": [path, ""]}]}


def _count_by(key: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"$group": {"_id": key, "count": {"$sum": 1}}}]


def _contact() -> dict[str, Any]:
    """The person of a message: the chat of a one-to-one chat, the sender of a received
    group message, otherwise null."""
    received_in_group = {"$and": [{"$eq": ["$isGroup", True]}, {"$eq": ["$fromMe", False]}]}
    return {
        "$switch": {
            "branches": [
                {"case": {"$eq": ["$isGroup", False]}, "then": "$chatId"},
                {"case": received_in_group, "then": "$sender"},
            ],
            "default": None,
        }
    }


def _distinct_per_instance(value: str | dict[str, Any]) -> list[dict[str, Any]]:
    """Count distinct non-empty string values per instance, summed over instances."""
    return [
        {"$project": {"_id": 0, "i": "$instanceId", "v": value}},
        {"$match": {"$expr": _is_name("$v")}},
        {"$group": {"_id": {"i": "$i", "v": "$v"}}},
        {"$count": "n"},
    ]


def combine_metrics(results: Sequence[MetricsResult]) -> MetricsResult:
    """The sum of the metrics of disjoint sets of instances, as one pipeline over all of
    them would report it (unique counts are per instance, so they add too)."""
    if len(results) == 1:
        return results[0]
    totals = {name: sum(getattr(r, name) for r in results) for name in _SUMMED}
    firsts = [r.first_message_at for r in results if r.first_message_at is not None]
    lasts = [r.last_message_at for r in results if r.last_message_at is not None]
    return MetricsResult(
        **totals,
        messages_by_type=_add_counts([r.messages_by_type for r in results], KNOWN_TYPES),
        media_by_type=_add_counts([r.media_by_type for r in results], KNOWN_MEDIA_TYPES),
        messages_by_status=_add_counts([r.messages_by_status for r in results], KNOWN_STATUSES),
        first_message_at=min(firsts, default=None),
        last_message_at=max(lasts, default=None),
    )


_SUMMED = (
    "total_messages",
    "messages_sent",
    "messages_received",
    "group_messages",
    "individual_messages",
    "messages_with_media",
    "messages_last_7_days",
    "messages_last_30_days",
    "unique_chats",
    "unique_groups",
    "unique_contacts",
)


def _add_counts(maps: Sequence[Mapping[str, int]], known: Sequence[str]) -> dict[str, int]:
    summed: Counter[str] = Counter()
    for counts in maps:
        summed.update(counts)
    return _key_counts([{"_id": key, "count": n} for key, n in summed.items()], known)


def empty_metrics() -> MetricsResult:
    """The metrics of no messages at all."""
    return read_metrics({})


def read_metrics(facets: Mapping[str, Any]) -> MetricsResult:
    """Turn the pipeline's single result document into a ``MetricsResult``."""
    totals = _first(facets.get("totals"))
    counters = {name: int(totals.get(name) or 0) for name in _COUNTERS}
    return MetricsResult(
        total_messages=counters["totalMessages"],
        messages_sent=counters["messagesSent"],
        messages_received=counters["messagesReceived"],
        group_messages=counters["groupMessages"],
        individual_messages=counters["individualMessages"],
        messages_with_media=counters["messagesWithMedia"],
        messages_last_7_days=counters["messagesLast7Days"],
        messages_last_30_days=counters["messagesLast30Days"],
        messages_by_type=_key_counts(facets.get("byType"), KNOWN_TYPES),
        media_by_type=_key_counts(facets.get("mediaByType"), KNOWN_MEDIA_TYPES),
        messages_by_status=_key_counts(facets.get("byStatus"), KNOWN_STATUSES),
        unique_chats=_count(facets.get("uniqueChats")),
        unique_groups=_count(facets.get("uniqueGroups")),
        unique_contacts=_count(facets.get("uniqueContacts")),
        first_message_at=totals.get("firstMessageAt"),
        last_message_at=totals.get("lastMessageAt"),
    )


def _first(rows: Sequence[Mapping[str, Any]] | None) -> Mapping[str, Any]:
    return rows[0] if rows else {}


def _count(rows: Sequence[Mapping[str, Any]] | None) -> int:
    return int(_first(rows).get("n", 0))


def _key_counts(rows: Sequence[Mapping[str, Any]] | None, known: Sequence[str]) -> dict[str, int]:
    return order_counts({str(row["_id"]): int(row["count"]) for row in rows or ()}, known)


def order_counts(counts: Mapping[str, int], known: Sequence[str]) -> dict[str, int]:
    """Known keys first, in contract order (0 when absent), then the others counted (not
    0: a sum of deltas can be) by name."""
    ordered = {key: counts.get(key, 0) for key in known}
    others = [key for key, count in counts.items() if count and key not in ordered]
    if others:
        ordered.update((key, counts[key]) for key in sorted(others))
    return ordered
