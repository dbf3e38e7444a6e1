"""Any interval as a signed sum of rollup buckets and short raw slices (pure).

Every instant ``x`` is written as a boundary of a ``top`` level (a UTC quarter, hour,
day or month) plus or minus finer pieces: ``[day, x)`` = hours + quarters + a raw slice, where each
level may also be reached from above (the next boundary minus the pieces between),
whichever needs fewer documents: ``18:30`` is the next day minus 5 hours and 2 quarters
rather than 18 hours and 2 quarters. An interval ``[a, b)`` is ``pieces(b) - pieces(a)``
plus the whole ``top`` buckets between their anchors; pieces that cancel are dropped.
Raw slices add up to at most half a quarter hour at an instant that is not on a
quarter boundary (every local boundary of the timezones in use is).

Times are whole milliseconds since the epoch here (the arithmetic runs once per
boundary of a series of up to a thousand points).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from itertools import pairwise, product

from resolvers.rollups.keys import EPOCH, Level, to_millis

__all__ = ["Piece", "Terms", "interval_terms", "series_terms"]

_QUARTER, _HOUR, _DAY = 900_000, 3_600_000, 86_400_000
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_FINER = {Level.HOUR: _QUARTER, Level.DAY: _HOUR, Level.MONTH: _DAY}
_WIDTH = {Level.QUARTER: _QUARTER, Level.HOUR: _HOUR, Level.DAY: _DAY}
_LEVELS: dict[Level, tuple[Level, ...]] = {
    Level.QUARTER: (),
    Level.HOUR: (Level.HOUR,),
    Level.DAY: (Level.HOUR, Level.DAY),
    Level.MONTH: (Level.HOUR, Level.DAY, Level.MONTH),
}
"""The levels an instant is rounded through, for each top level."""
_PATHS = {top: tuple(product((False, True), repeat=len(levels))) for top, levels in _LEVELS.items()}


@dataclass(frozen=True, slots=True, order=True)
class Piece:
    """A bucket of ``level`` starting at ``start``, or (``level`` None) the raw
    messages dated in ``[start, end)``; milliseconds since the epoch."""

    start: int
    end: int
    level: Level | None

    @property
    def start_time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.start)

    @property
    def end_time(self) -> datetime:
        return EPOCH + timedelta(milliseconds=self.end)


Terms = dict[Piece, int]
"""Pieces with their signs (+1 / -1)."""

_Edge = tuple[int, Terms]
"""A boundary of the top level and the signed pieces from it to an instant."""


def interval_terms(low: datetime, high: datetime) -> Terms:
    """``[low, high)`` as the fewest signed pieces found (instants rounded to whole
    milliseconds), through days or through months."""
    found = [series_terms([low, high], top=top)[0] for top in (Level.DAY, Level.MONTH)]
    return min(found, key=len)


def series_terms(cuts: Sequence[datetime], *, top: Level = Level.DAY) -> list[Terms]:
    """The terms of each point ``[cuts[k], cuts[k + 1])``, through whole buckets of
    ``top`` (any level: QUARTER sums the quarters of each point); each cut is worked out
    once."""
    moments = [to_millis(cut) for cut in cuts]
    edges = [_edge(moment, top=top) for moment in moments]
    terms: list[Terms] = []
    for (a, b), (left, right) in zip(pairwise(moments), pairwise(edges), strict=True):
        if a >= b:
            terms.append({})
        elif a // _QUARTER == (b - 1) // _QUARTER:
            terms.append(_within_quarter(a, b))
        else:
            terms.append(_between(left, right, top=top))
    return terms


def _within_quarter(a: int, b: int) -> Terms:
    """``[a, b)`` inside one quarter: raw, or the quarter minus the raw slices outside
    it, whichever reads fewer raw messages."""
    start = a - a % _QUARTER
    end = start + _QUARTER
    if b - a <= (a - start) + (end - b):
        return {Piece(a, b, None): 1}
    terms = {Piece(start, end, Level.QUARTER): 1}
    for low, high in ((start, a), (b, end)):
        if low < high:
            terms[Piece(low, high, None)] = -1
    return terms


def _between(left: _Edge, right: _Edge, *, top: Level) -> Terms:
    (low_anchor, low_pieces), (high_anchor, high_pieces) = left, right
    total: Counter[Piece] = Counter(high_pieces)
    total.subtract(low_pieces)
    sign = 1 if low_anchor <= high_anchor else -1
    for start, end in _buckets(min(low_anchor, high_anchor), max(low_anchor, high_anchor), top):
        total[Piece(start, end, top)] += sign
    return {piece: n for piece, n in total.items() if n}


def _buckets(low: int, high: int, level: Level) -> Iterator[tuple[int, int]]:
    start = low
    while start < high:
        end = _bounds(start, level)[1]
        yield start, end
        start = end


def _month_floor(moment: int) -> int:
    day = date.fromordinal(_EPOCH_DAY + moment // _DAY)
    return (day.replace(day=1).toordinal() - _EPOCH_DAY) * _DAY


def _month_ceil(moment: int) -> int:
    low = _month_floor(moment)
    if low == moment:
        return low
    return _month_floor(low + 31 * _DAY)


def _bounds(moment: int, level: Level) -> tuple[int, int]:
    """The start and end of the bucket of ``level`` holding ``moment``."""
    if level is Level.MONTH:
        return _month_floor(moment), _month_ceil(moment + 1)
    width = _WIDTH[level]
    low = moment - moment % width
    return low, low + width


def _edge(moment: int, *, top: Level) -> _Edge:
    """``moment`` as a boundary of ``top`` plus the signed pieces from it to ``moment``."""
    terms: Counter[Piece] = Counter()
    point = moment
    offset = moment % _QUARTER
    if offset:
        quarter = moment - offset
        if _QUARTER - offset < offset:  # nearer the end of its quarter
            point = quarter + _QUARTER
            terms[Piece(moment, point, None)] -= 1
        else:
            point = quarter
            terms[Piece(quarter, moment, None)] += 1
    levels = _LEVELS[top]
    ups = min(_PATHS[top], key=lambda path: _cost(point, levels, path))
    for level, up in zip(levels, ups, strict=True):
        point = _round(point, level=level, up=up, terms=terms)
    return point, dict(terms)


def _cost(point: int, levels: tuple[Level, ...], ups: tuple[bool, ...]) -> int:
    """How many pieces rounding ``point`` up (True) or down at each level takes."""
    pieces = 0
    for level, up in zip(levels, ups, strict=True):
        low, high = _bounds(point, level)
        if low == point:
            continue
        finer = _FINER[level]
        pieces += (high - point) // finer if up else (point - low) // finer
        point = high if up else low
    return pieces


def _round(point: int, *, level: Level, up: bool, terms: Counter[Piece]) -> int:
    low, high = _bounds(point, level)
    if low == point:
        return point
    finer = level.finer
    assert finer is not None
    width = _WIDTH[finer]
    first, last, sign = (point, high, -1) if up else (low, point, 1)
    for start in range(first, last, width):
        terms[Piece(start, start + width, finer)] += sign
    return high if up else low
