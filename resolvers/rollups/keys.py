"""Names and times of the rollups: safe field names for user keys, and UTC buckets.

Map keys (``type``, ``status``, ``media.type``) are user data and become MongoDB field
names, so ``%``, ``.``, ``$`` and NUL are percent-encoded (``%`` first, so decoding is
exact). Times are cut into UTC months, days, hours and quarter hours: every UTC offset in
use is a multiple of 15 minutes (+05:30, +05:45, +12:45), so any local hour, day, week
or month is a sum of whole quarters, hours and days, plus raw messages at instants that
are not on a quarter boundary (``cover``).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

__all__ = [
    "EPOCH",
    "Cover",
    "Level",
    "ceil_to",
    "cover",
    "decode_key",
    "encode_key",
    "floor_to",
    "part_index",
    "to_millis",
    "truncate_to_millis",
]

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS = timedelta(milliseconds=1)

_ESCAPES = {"%": "%25", ".": "%2E", "$": "%24", "\x00": "%00"}
_UNESCAPES = {code: char for char, code in _ESCAPES.items()}
_ESCAPED = re.compile("|".join(re.escape(code) for code in _UNESCAPES))


class Level(Enum):
    """A bucket width; the value is the bucket documents' ``l`` field."""

    QUARTER = "q"
    HOUR = "h"
    DAY = "d"
    MONTH = "m"

    @property
    def width(self) -> timedelta:
        """The fixed width (a month has none)."""
        return _WIDTHS[self]

    @property
    def finer(self) -> Level | None:
        """The level a bucket of this level is cut into (None for a quarter)."""
        return _FINER[self]


_WIDTHS = {
    Level.QUARTER: timedelta(minutes=15),
    Level.HOUR: timedelta(hours=1),
    Level.DAY: timedelta(days=1),
}
_FINER: dict[Level, Level | None] = {
    Level.QUARTER: None,
    Level.HOUR: Level.QUARTER,
    Level.DAY: Level.HOUR,
    Level.MONTH: Level.DAY,
}


def encode_key(key: str) -> str:
    """``key`` as a field name: no ``.``, ``$`` or NUL, and ``%`` escaped."""
    return "".join(_ESCAPES.get(char, char) for char in key)


def decode_key(field: str) -> str:
    """The key ``encode_key`` turned into ``field``."""
    if "%" not in field:  # most keys: nothing was escaped
        return field
    return _ESCAPED.sub(lambda match: _UNESCAPES[match.group(0)], field)


def truncate_to_millis(moment: datetime) -> datetime:
    """``moment`` in UTC, cut to whole milliseconds as a BSON date stores it."""
    aware = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return aware.replace(microsecond=aware.microsecond - aware.microsecond % 1000)


def to_millis(moment: datetime) -> int:
    """Milliseconds since the epoch (floored, as PyMongo encodes a date)."""
    return (truncate_to_millis(moment) - EPOCH) // _MS


def floor_to(moment: datetime, level: Level) -> datetime:
    """The start of the bucket of ``level`` that holds ``moment``."""
    if level is Level.MONTH:
        day = floor_to(moment, Level.DAY)
        return day.replace(day=1)
    width = to_millis(EPOCH + level.width)
    return EPOCH + _MS * (to_millis(moment) // width * width)


def ceil_to(moment: datetime, level: Level) -> datetime:
    """The first bucket boundary of ``level`` at or after ``moment`` (ms precision)."""
    start = floor_to(moment, level)
    if start == truncate_to_millis(moment):
        return start
    if level is Level.MONTH:
        return floor_to(start + timedelta(days=31), Level.MONTH)
    return start + level.width


def part_index(start: datetime, level: Level) -> int:
    """Which bucket of ``level.finer`` within its ``level`` bucket starts at ``start``:
    the quarter of an hour (0-3), the hour of a day (0-23), the day of a month (0-30)."""
    finer = level.finer
    assert finer is not None, "a quarter hour is not cut further"
    return (start - floor_to(start, level)) // finer.width


@dataclass(frozen=True, slots=True)
class Cover:
    """``[start, end)`` as whole buckets plus raw intervals shorter than a quarter hour.

    ``days_from``/``days_to`` bound the whole days (``days_to`` None = no end); the
    lists hold bucket starts. Each instant of the interval is in exactly one part.
    """

    raw: tuple[tuple[datetime, datetime], ...]
    quarters: tuple[datetime, ...]
    hours: tuple[datetime, ...]
    days_from: datetime | None
    days_to: datetime | None


def cover(start: datetime, end: datetime | None = None) -> Cover:
    """Split ``[start, end)`` (``end`` None = unbounded) into the fewest rollup buckets:
    raw up to the first quarter boundary, quarters up to the first hour, hours up to the
    first day, then days, and the same in reverse towards ``end``."""
    low, high = truncate_to_millis(start), None if end is None else truncate_to_millis(end)
    parts: dict[Level | None, list[datetime]] = {None: [], Level.QUARTER: [], Level.HOUR: []}
    finer: Level | None = None
    for level in (Level.QUARTER, Level.HOUR, Level.DAY):
        aligned_low = ceil_to(low, level)
        if high is None:
            _margin(parts, level=finer, low=low, high=aligned_low)
            low, finer = aligned_low, level
            continue
        aligned_high = floor_to(high, level)
        if aligned_low > aligned_high:  # inside one bucket of this level
            _margin(parts, level=finer, low=low, high=high)
            return _cover_of(parts, days=None)
        if aligned_low == aligned_high:  # across one boundary, no whole bucket
            _margin(parts, level=finer, low=low, high=aligned_low)
            _margin(parts, level=finer, low=aligned_low, high=high)
            return _cover_of(parts, days=None)
        _margin(parts, level=finer, low=low, high=aligned_low)
        _margin(parts, level=finer, low=aligned_high, high=high)
        low, high, finer = aligned_low, aligned_high, level
    return _cover_of(parts, days=(low, high))


def _margin(
    parts: dict[Level | None, list[datetime]], *, level: Level | None, low: datetime, high: datetime
) -> None:
    """Add ``[low, high)`` (aligned to ``level``; None = raw) to ``parts``."""
    if low >= high:
        return
    if level is None:
        parts[None].extend((low, high))
        return
    moment = low
    while moment < high:
        parts[level].append(moment)
        moment += level.width


def _cover_of(
    parts: dict[Level | None, list[datetime]], *, days: tuple[datetime, datetime | None] | None
) -> Cover:
    raw = parts[None]
    return Cover(
        raw=tuple(sorted(zip(raw[::2], raw[1::2], strict=True))),
        quarters=tuple(sorted(parts[Level.QUARTER])),
        hours=tuple(sorted(parts[Level.HOUR])),
        days_from=None if days is None else days[0],
        days_to=None if days is None else days[1],
    )
