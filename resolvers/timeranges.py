"""Time ranges and local-calendar series boundaries (pure).

A ``TimeRange`` is half-open, ``[start, end)``, in UTC. BSON dates hold whole
milliseconds, so both ends are rounded up to the millisecond: a message at ``t`` is in
the range exactly when ``start <= t < end`` for the given (finer) instants.

``series_bounds`` cuts a range at the boundaries of a local calendar in an IANA
timezone (``zoneinfo``): a local hour, day (midnight to midnight: 23 or 25 hours across
DST), week (from Monday) or month (from the 1st). A wall-clock boundary that does not
exist (a DST gap) starts at the first instant after the gap; one that exists twice (a
DST fold) starts at its first occurrence, except for hours, which start at both (each
real hour of a fold is its own point).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from resolvers.errors import BadUserInput

__all__ = [
    "MAX_POINTS",
    "InstanceSummary",
    "Interval",
    "SeriesPoint",
    "TimeRange",
    "make_range",
    "series_bounds",
    "zone",
]

MAX_POINTS = 1000
"""The most points one series may have."""

_MS = timedelta(milliseconds=1)
_HOUR = timedelta(hours=1)
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_ZONE_NAME = 64


@dataclass(frozen=True, slots=True)
class TimeRange:
    """``[start, end)``: aware UTC datetimes in whole milliseconds, ``start <= end``."""

    start: datetime
    end: datetime

    def __contains__(self, moment: object) -> bool:
        return isinstance(moment, datetime) and self.start <= moment < self.end


class Interval(Enum):
    HOUR = "HOUR"
    DAY = "DAY"
    WEEK = "WEEK"
    MONTH = "MONTH"


_STEPS = {
    Interval.DAY: timedelta(days=1),
    Interval.WEEK: timedelta(days=7),
}
"""The fixed length of a local day and week on the wall clock."""


@dataclass(frozen=True, slots=True)
class SeriesPoint:
    """The messages of ``[start, end)``, summed over the instances of a series (each
    with its ``ignoreGroupMessages``); maps list known keys first, as ``MetricsResult``.
    Never changed once made, maps included: a kept tally hands out the same point until
    it changes (``series.Tally.point``), and callers may keep what they make of one."""

    start: datetime
    end: datetime
    total_messages: int
    messages_sent: int
    messages_received: int
    group_messages: int
    individual_messages: int
    messages_with_media: int
    messages_by_type: dict[str, int]
    messages_by_status: dict[str, int]


@dataclass(frozen=True, slots=True)
class InstanceSummary:
    """One instance as ``metrics`` for it alone reports it (``ignoreGroupMessages``
    applied): its message count and last dated message."""

    name: str
    ignore_group_messages: bool
    created_at: datetime | None
    total_messages: int
    last_message_at: datetime | None


def make_range(start: datetime, end: datetime) -> TimeRange:
    """``[start, end)`` in UTC; both must carry a UTC offset, and ``start <= end``."""
    for name, moment in (("from", start), ("to", end)):
        if moment.tzinfo is None or moment.utcoffset() is None:
            raise BadUserInput(f"The range's `{name}` needs a UTC offset (e.g. Z or +05:30).")
    low, high = _ceil_ms(start.astimezone(UTC)), _ceil_ms(end.astimezone(UTC))
    if low > high:
        raise BadUserInput("The range's `from` is after its `to`.")
    return TimeRange(low, high)


def _ceil_ms(moment: datetime) -> datetime:
    extra = moment.microsecond % 1000
    if not extra:
        return moment
    try:
        return moment + timedelta(microseconds=1000 - extra)
    except OverflowError:
        raise BadUserInput("The range ends after the last supported date.") from None


def zone(name: str) -> ZoneInfo:
    """The IANA timezone ``name``; ``BadUserInput`` naming it when unknown."""
    shown = name if len(name) <= _MAX_ZONE_NAME else name[:_MAX_ZONE_NAME] + "…"
    if not name or len(name) > _MAX_ZONE_NAME:
        raise BadUserInput(f'Unknown timezone "{shown}": give an IANA name such as "Asia/Kolkata".')
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise BadUserInput(
            f'Unknown timezone "{shown}": give an IANA name such as "Asia/Kolkata".'
        ) from None


def series_bounds(
    *, range: TimeRange, interval: Interval, timezone: str
) -> list[tuple[datetime, datetime]]:
    """The points of a dense series over ``range``: consecutive ``(start, end)`` UTC
    instants at the local calendar boundaries of ``interval`` in ``timezone``, the first
    and last clipped to the range; none for an empty range. More than ``MAX_POINTS``
    points is ``BadUserInput``."""
    tz = zone(timezone)
    if range.start >= range.end:
        return []
    cuts = [range.start]
    try:
        for boundary in _boundaries(range.start, interval=interval, tz=tz):
            if boundary >= range.end:
                break
            if boundary > cuts[-1]:
                cuts.append(boundary)
                if len(cuts) > MAX_POINTS:
                    raise _too_many()
    except OverflowError:
        raise BadUserInput("The series reaches past the supported dates.") from None
    cuts.append(range.end)
    return list(pairwise(cuts))


def _too_many() -> BadUserInput:
    return BadUserInput(
        f"A series has at most {MAX_POINTS} points; choose a shorter range or a longer interval."
    )


def _boundaries(start: datetime, *, interval: Interval, tz: ZoneInfo) -> Iterator[datetime]:
    """The UTC instants of the local boundaries of ``interval``, increasing, from one
    at or before ``start`` on (endless)."""
    if interval is Interval.HOUR:
        return _hours_after(start, tz=tz)
    return _wall_boundaries(start, interval=interval, tz=tz)


def _hours_after(start: datetime, *, tz: ZoneInfo) -> Iterator[datetime]:
    """The instants after ``start`` where a local hour begins: where the local time is a
    whole hour, and where the UTC offset changes (a point is one local hour at one
    offset, so the two 01:00 hours of a fold are two points, and an hour cut by a
    change of offset two). One offset an hour: like the wall walk, it takes the offset
    to change at most once within an hour."""
    moment, offset, whole = start, _offset(start, tz), False
    while True:
        following = moment + (_HOUR if whole else _HOUR - (moment + offset - _EPOCH) % _HOUR)
        there = _offset(following, tz)
        whole = there == offset  # else the local time there may be no whole hour
        if not whole:
            change = _offset_change(moment, following + _MS, offset=offset, tz=tz)
            if change is not None and change < following:
                following, there = change, _offset(change, tz)
        yield following
        moment, offset = following, there


def _offset(moment: datetime, tz: ZoneInfo) -> timedelta:
    """The UTC offset of ``tz`` at the UTC instant ``moment``."""
    offset = moment.astimezone(tz).utcoffset()
    assert offset is not None
    return offset


def _wall_boundaries(start: datetime, *, interval: Interval, tz: ZoneInfo) -> Iterator[datetime]:
    """The instants of the local days, weeks or months from the one holding ``start``."""
    wall = _floor_wall(start.astimezone(tz).replace(tzinfo=None), interval)
    with suppress(OverflowError):  # at the calendar's first boundary, none before it
        wall = _step_wall(wall, interval, back=True)
    last: datetime | None = None
    step = _STEPS.get(interval)
    while True:
        instant = _instant(wall, tz=tz)
        if last is None or instant > last:
            last = instant
            yield instant
        wall = _step_wall(wall, interval) if step is None else wall + step


def _offset_change(
    low: datetime, high: datetime, *, offset: timedelta, tz: ZoneInfo
) -> datetime | None:
    """The instant strictly inside ``(low, high)`` where the UTC offset of ``tz`` stops
    being ``offset``, that of ``low``, if it does (a bisection to the millisecond)."""
    if _offset(high - _MS, tz) == offset:
        return None
    same, other = low, high - _MS
    while other - same > _MS:
        middle = same + (other - same) // 2
        middle -= timedelta(microseconds=middle.microsecond % 1000)
        if _offset(middle, tz) == offset:
            same = middle
        else:
            other = middle
    return other


def _floor_wall(wall: datetime, interval: Interval) -> datetime:
    day = wall.replace(hour=0, minute=0, second=0, microsecond=0)
    if interval is Interval.WEEK:
        return day - timedelta(days=day.weekday())
    if interval is Interval.MONTH:
        return day.replace(day=1)
    return day


def _step_wall(wall: datetime, interval: Interval, *, back: bool = False) -> datetime:
    """``wall`` one ``interval`` later (earlier when ``back``); ``OverflowError`` past
    the years 1 to 9999."""
    if interval is Interval.MONTH:
        months = wall.year * 12 + wall.month - 1 + (-1 if back else 1)
        if not 1 <= months // 12 <= 9999:
            raise OverflowError("date value out of range")
        return wall.replace(year=months // 12, month=months % 12 + 1)
    return wall - _STEPS[interval] if back else wall + _STEPS[interval]


def _instant(wall: datetime, *, tz: ZoneInfo) -> datetime:
    """The first UTC instant whose local time is ``wall`` (the first of two in a fold);
    in a gap, the first instant after it."""
    early_offset = wall.replace(tzinfo=tz, fold=0).utcoffset()
    late_offset = wall.replace(tzinfo=tz, fold=1).utcoffset()
    assert early_offset is not None and late_offset is not None
    early = (wall - early_offset).replace(tzinfo=UTC)
    if early_offset == late_offset:  # neither in a gap nor in a fold
        return early
    late = (wall - late_offset).replace(tzinfo=UTC)
    for moment in sorted({early, late}):
        if _wall_of(moment, tz) == wall:
            return moment
    return _gap_end(wall, tz=tz, low=min(early, late), high=max(early, late))


def _wall_of(moment: datetime, tz: ZoneInfo) -> datetime:
    return moment.astimezone(tz).replace(tzinfo=None)


def _gap_end(wall: datetime, *, tz: ZoneInfo, low: datetime, high: datetime) -> datetime:
    """The first instant in ``(low, high]`` whose local time is at or after ``wall``
    (offsets change at whole seconds; a bisection over them)."""
    below, above = low, high
    while above - below > timedelta(seconds=1):
        middle = below + (above - below) // 2
        middle = middle.replace(microsecond=0)
        if middle <= below:
            middle = below + timedelta(seconds=1)
        if _wall_of(middle, tz) >= wall:
            above = middle
        else:
            below = middle
    return above
