"""Strawberry types of the GraphQL API."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import Enum

import strawberry

from graph.reuse import ByIdentity, unchanging
from resolvers import BadUserInput, InstanceRef, MetricsResult, Selection, timeranges

__all__ = [
    "DATETIME_SCALAR",
    "Instance",
    "Interval",
    "KeyCount",
    "Metrics",
    "RateLimit",
    "Series",
    "SeriesPoint",
    "TimeRange",
    "format_datetime",
    "parse_datetime",
]


def format_datetime(value: datetime) -> str:
    """ISO 8601 in UTC with a trailing ``Z``, to the millisecond (BSON's precision) when
    there is a fraction; naive values are taken as UTC."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    timespec = "milliseconds" if value.microsecond else "seconds"
    return value.astimezone(UTC).isoformat(timespec=timespec).replace("+00:00", "Z")


def parse_datetime(value: object) -> datetime:
    """An ISO 8601 date and time with a UTC offset (``Z``, ``+05:30``), as UTC; anything
    else (no offset, a date alone, not a string) is ``BadUserInput`` saying so (a domain
    error, so GraphQL reports it, written in a query or in variables, unmasked)."""
    if not isinstance(value, str):
        raise BadUserInput("A DateTime is an ISO 8601 string with a UTC offset.")
    try:
        parsed: datetime | None = datetime.fromisoformat(value)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        raise BadUserInput(
            "A DateTime is an ISO 8601 date and time with a UTC offset, such as "
            f"2026-11-01T00:00:00Z or 2026-11-01T00:00:00+05:30; got {value[:64]!r}."
        )
    try:
        return parsed.astimezone(UTC)
    except OverflowError:  # 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        raise BadUserInput(f"The DateTime {value[:64]!r} is out of range in UTC.") from None


DATETIME_SCALAR = strawberry.scalar(
    name="DateTime",
    description=(
        "A point in time: ISO 8601 in UTC with a trailing Z, e.g. 2026-11-24T18:02:11Z. "
        "Inputs need a UTC offset (Z, or +05:30 and the like)."
    ),
    serialize=format_datetime,
    parse_value=parse_datetime,
)


@strawberry.input(description="A half-open interval [from, to).")
class TimeRange:
    start: datetime = strawberry.field(name="from")
    end: datetime = strawberry.field(name="to")

    def resolve(self) -> timeranges.TimeRange:
        """The range in the data layer's terms (``BadUserInput`` when from > to)."""
        return timeranges.make_range(self.start, self.end)


@strawberry.enum(description="The length of a series point, on local calendar boundaries.")
class Interval(Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"

    def resolve(self) -> timeranges.Interval:
        return timeranges.Interval[self.name]


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
        "operation one per metrics computation (at least one); metricsByInstance, series "
        "and metrics with a range, one per ten instances they read."
    )
)
class RateLimit:
    limit: int = strawberry.field(description="Points per minute.")
    remaining: int = strawberry.field(
        description="Points left in the moving window, this operation's cost taken."
    )
    reset_at: datetime = strawberry.field(description="When the next point is freed.")
    cost: int = strawberry.field(description="What this operation cost.")


#: GraphQL points made of kept data-layer points (``graph.reuse``): two series of the
#: longest kind (1,000 points), or many shorter ones.
_POINTS: ByIdentity[SeriesPoint] = ByIdentity(limit=2_000)


@unchanging
@strawberry.type(description="The metrics of the messages in [start, end): one point of a series.")
class SeriesPoint:
    start: datetime = strawberry.field(description="A local boundary (or the range's start), UTC.")
    end: datetime = strawberry.field(description="The next local boundary (or the range's end).")
    total_messages: int
    messages_sent: int
    messages_received: int
    group_messages: int
    individual_messages: int
    messages_with_media: int
    messages_by_type: list[KeyCount]
    messages_by_status: list[KeyCount]

    @classmethod
    def from_point(cls, point: timeranges.SeriesPoint) -> SeriesPoint:
        """The GraphQL form of ``point``: the one made the last time for this very point
        (data-layer points never change once made), else a new one."""
        made = _POINTS.get(point)
        if made is None:
            made = cls(
                start=point.start,
                end=point.end,
                total_messages=point.total_messages,
                messages_sent=point.messages_sent,
                messages_received=point.messages_received,
                group_messages=point.group_messages,
                individual_messages=point.individual_messages,
                messages_with_media=point.messages_with_media,
                messages_by_type=_key_counts(point.messages_by_type),
                messages_by_status=_key_counts(point.messages_by_status),
            )
            _POINTS.put(point, made)
        return made


@strawberry.type(description="Metrics per interval, on calendar boundaries of a timezone.")
class Series:
    instance: str = strawberry.field(description="The instance names as requested, comma-joined.")
    instances: list[str] = strawberry.field(description="The distinct instances counted.")
    interval: Interval
    timezone: str = strawberry.field(description="The IANA timezone of the boundaries.")
    points: list[SeriesPoint] = strawberry.field(
        description="Every interval of the range in order, zero-filled, clipped to the range."
    )


@strawberry.type(description="An instance (one WhatsApp number) the token can see.")
class Instance:
    name: str
    ignore_group_messages: bool = strawberry.field(
        description="Its group messages are left out of every metric."
    )
    created_at: datetime | None
    total_messages: int = strawberry.field(description="As metrics counts them, all time.")
    last_message_at: datetime | None

    @classmethod
    def from_summary(cls, summary: timeranges.InstanceSummary) -> Instance:
        return cls(
            name=summary.name,
            ignore_group_messages=summary.ignore_group_messages,
            created_at=summary.created_at,
            total_messages=summary.total_messages,
            last_message_at=summary.last_message_at,
        )


def metrics_of(*, ref: InstanceRef, result: MetricsResult) -> Metrics:
    """The ``Metrics`` of one instance, labelled with its name."""
    return Metrics.from_result(selection=Selection(label=ref.name, instances=(ref,)), result=result)
