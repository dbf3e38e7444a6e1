"""Strawberry types of the GraphQL API."""

from __future__ import annotations

from datetime import UTC, datetime

import strawberry

from resolvers import MetricsResult, Selection

__all__ = ["DATETIME_SCALAR", "KeyCount", "Metrics", "RateLimit", "format_datetime"]


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a trailing ``Z``, to the millisecond (BSON's precision) when
    there is a fraction; naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    timespec = "milliseconds" if value.microsecond else "seconds"
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def _parse_datetime(value: object) -> datetime:
    if not isinstance(value, str):
        raise ValueError("DateTime must be an ISO 8601 string")
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    description="A point in time: ISO 8601 in UTC with a trailing Z, e.g. 2026-11-24T18:02:11Z.",
    serialize=format_datetime,
    parse_value=_parse_datetime,
)


@strawberry.type(description="How many messages have a given key (type, media type or status).")
class KeyCount:
    key: str
    count: int


@strawberry.type(description="Message metrics summed over one or several instances.")
class Metrics:
    instance: str = strawberry.field(description="The instance names as requested, comma-joined.")
    instances: list[str] = strawberry.field(description="The distinct instances counted.")
    total_messages: int
    messages_received: int
    messages_sent: int
    messages_by_type: list[KeyCount] = strawberry.field(
        description="The ten known types always, then any other type found."
    )
    group_messages: int
    individual_messages: int
    messages_with_media: int
    media_by_type: list[KeyCount] = strawberry.field(
        description="The five known media types always, then any other found."
    )
    messages_by_status: list[KeyCount] = strawberry.field(
        description="The six known statuses always, then any other found."
    )
    unique_chats: int
    unique_groups: int
    unique_contacts: int
    messages_last_7_days: int
    messages_last_30_days: int
    first_message_at: datetime | None
    last_message_at: datetime | None

    @classmethod
    def from_result(cls, *, selection: Selection, result: MetricsResult) -> Metrics:
        return cls(
            instance=selection.label,
            instances=[ref.name for ref in selection.instances],
            total_messages=result.total_messages,
            messages_received=result.messages_received,
            messages_sent=result.messages_sent,
            messages_by_type=_key_counts(result.messages_by_type),
            group_messages=result.group_messages,
            individual_messages=result.individual_messages,
            messages_with_media=result.messages_with_media,
            media_by_type=_key_counts(result.media_by_type),
            messages_by_status=_key_counts(result.messages_by_status),
            unique_chats=result.unique_chats,
            unique_groups=result.unique_groups,
            unique_contacts=result.unique_contacts,
            messages_last_7_days=result.messages_last_7_days,
            messages_last_30_days=result.messages_last_30_days,
            first_message_at=result.first_message_at,
            last_message_at=result.last_message_at,
        )


def _key_counts(counts: dict[str, int]) -> list[KeyCount]:
    return [KeyCount(key=key, count=count) for key, count in counts.items()]


@strawberry.type(
    description=(
        "The caller's rate-limit bucket, in points: a request costs one, a GraphQL "
        "operation one per metrics computation (at least one)."
    )
)
class RateLimit:
    limit: int = strawberry.field(description="Points per minute.")
    remaining: int = strawberry.field(
        description="Points left in the moving window, this operation's cost taken."
    )
    reset_at: datetime = strawberry.field(description="When the next point is freed.")
    cost: int = strawberry.field(description="What this operation cost.")
