"""Any interval as a signed sum of rollup buckets and short raw slices (pure).

Every instant ``x`` is written as a boundary of a ``top`` level (a UTC quarter, hour,
day or month) plus or minus finer pieces: ``[day, x)`` = hours + quarters + a raw slice, where each
level may also be reached from above (the next boundary minus the pieces between),
whichever needs fewer documents: ``18:30`` is the next day minus 5 hours and 2 quarters
rather than 18 hours and 2 quarters. An interval ``[a, b)`` is ``pieces(b) - pieces(a)``
plus the whole ``top`` buckets between their anchors; pieces that cancel are dropped.
Raw slices add up to at most half a quarter hour at an instant that is not on a
quarter boundary (every local boundary of the timezones in use is).

Planning a series must stay cheap and linear in its points (every series request
waits for it; ``ranges.py`` runs it in a worker thread, off the event loop):

- an instant's pieces depend only on where it falls in its ``top`` bucket (and, for a
  month, on the month's length), so each distinct position is rounded once per series
  and its pieces shifted to the others: a thousand local days are one or two positions;
- the pieces of a point's two ends can cancel only where their spans overlap, and the
  result for two positions a given distance apart is worked out once;
- a split's cost (``Footprint``) counts its whole ``top`` buckets from their spans
  without listing them, so only the split chosen is built (``SeriesSplit.plan``).

Times are whole milliseconds since the epoch here; while planning, a piece is a key
``(start, end, level code)`` (cheap to hash), and a ``Piece`` only in the plan returned.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from calendar import isleap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import product, repeat
from operator import le, sub
from typing import NamedTuple

from resolvers.rollups.keys import EPOCH, Level, to_millis

__all__ = [
    "Footprint",
    "Piece",
    "Reads",
    "SeriesPlan",
    "SeriesSplit",
    "Terms",
    "footprint",
    "interval_terms",
    "moments_of",
    "reads_of",
    "series_terms",
]

_QUARTER, _HOUR, _DAY = 900_000, 3_600_000, 86_400_000
_MS = timedelta(milliseconds=1)
_EPOCH_DAY = date(1970, 1, 1).toordinal()
_MONTH_DAYS = (0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)

_RAW, _Q, _H, _D, _M = range(5)
"""Level codes of the keys: a raw slice, a quarter, an hour, a day, a month."""
_CODE = {Level.QUARTER: _Q, Level.HOUR: _H, Level.DAY: _D, Level.MONTH: _M}
_LEVEL: tuple[Level | None, ...] = (None, Level.QUARTER, Level.HOUR, Level.DAY, Level.MONTH)
_BUCKET = {code: level for level, code in _CODE.items()}
_WIDTH = (0, _QUARTER, _HOUR, _DAY, 0)
"""The fixed width of each code (none for a raw slice or a month)."""
_LEVELS: dict[Level, tuple[int, ...]] = {
    Level.QUARTER: (),
    Level.HOUR: (_H,),
    Level.DAY: (_H, _D),
    Level.MONTH: (_H, _D, _M),
}
"""The levels an instant is rounded through, for each top level (the pieces of rounding
through a level are buckets of the next finer code)."""
_PATHS = {top: tuple(product((False, True), repeat=len(levels))) for top, levels in _LEVELS.items()}

_Key = tuple[int, int, int]
"""A piece while planning: start, end, level code."""
_Signed = tuple[_Key, int]


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


@dataclass(frozen=True, slots=True)
class Footprint:
    """What reading some pieces takes: the number of raw slices, and per bucket level
    the distinct buckets needed and the buckets their span holds (first to last)."""

    raw: int
    levels: dict[Level, tuple[int, int]]


@dataclass(frozen=True, slots=True)
class Reads:
    """Pieces to read, each named by an index: per bucket level, the index of the bucket
    starting at each start; the raw slices as ``(index, start, end)``."""

    buckets: dict[Level, dict[int, int]]
    raws: list[tuple[int, int, int]]


class _Run(NamedTuple):
    """Pieces of one code, ordered by start, with their indexes in a plan's keys."""

    starts: list[int]
    ends: list[int]
    indexes: list[int]


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The points of a series as signed sums of distinct pieces: ``keys`` holds each
    piece as ``(start, end, level code)``, each point the indexes of its pieces in
    ``keys`` with their signs. (A series has thousands of pieces: they stay keys, and
    ``reads`` picks them for reading without making an object of each.)"""

    keys: tuple[_Key, ...]
    points: tuple[tuple[tuple[int, int], ...], ...]
    _runs: dict[int, _Run] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        runs: dict[int, _Run] = {}
        for code in {code for _, _, code in self.keys}:
            run = sorted([(s, e, i) for i, (s, e, of) in enumerate(self.keys) if of == code])
            starts, ends, indexes = (list(column) for column in zip(*run, strict=True))
            runs[code] = _Run(starts, ends, indexes)
        object.__setattr__(self, "_runs", runs)

    @property
    def pieces(self) -> tuple[Piece, ...]:
        return tuple(Piece(start, end, _LEVEL[code]) for start, end, code in self.keys)

    def terms(self) -> list[Terms]:
        pieces = self.pieces
        return [{pieces[index]: sign for index, sign in point} for point in self.points]

    def reads(self, low: int, high: int) -> Reads:
        """The pieces that overlap ``[low, high)`` (milliseconds): per bucket level a
        slice of its buckets in order (they do not overlap, so their ends are in order
        too), the raw slices one by one."""
        buckets: dict[Level, dict[int, int]] = {}
        raws: list[tuple[int, int, int]] = []
        for code, run in self._runs.items():
            if code == _RAW:
                found = zip(run.indexes, run.starts, run.ends, strict=True)
                raws = [(i, start, end) for i, start, end in found if start < high and end > low]
                continue
            first, last = bisect_right(run.ends, low), bisect_left(run.starts, high)
            if first < last:
                pairs = zip(run.starts[first:last], run.indexes[first:last], strict=True)
                buckets[_BUCKET[code]] = dict(pairs)
        return Reads(buckets, raws)


def reads_of(pieces: Sequence[Piece]) -> Reads:
    """All of ``pieces``, each named by its index in ``pieces``."""
    keys = ((p.start, p.end, _CODE[p.level] if p.level else _RAW) for p in pieces)
    return _reads(enumerate(keys), low=None, high=None)


def _reads(keys: Iterable[tuple[int, _Key]], *, low: int | None, high: int | None) -> Reads:
    by_code: dict[int, dict[int, int]] = {}
    raws: list[tuple[int, int, int]] = []
    for index, (start, end, code) in keys:
        if (high is not None and start >= high) or (low is not None and end <= low):
            continue
        if code == _RAW:
            raws.append((index, start, end))
        else:
            by_code.setdefault(code, {})[start] = index
    return Reads({_BUCKET[code]: found for code, found in by_code.items()}, raws)


def interval_terms(low: datetime, high: datetime) -> Terms:
    """``[low, high)`` as the fewest signed pieces found (instants rounded to whole
    milliseconds), through days or through months."""
    moments = [to_millis(low), to_millis(high)]
    splits = [SeriesSplit(moments, top=top) for top in (Level.DAY, Level.MONTH)]
    best = min(splits, key=lambda split: split.size(0))
    return best.plan().terms()[0]


def series_terms(cuts: Sequence[datetime], *, top: Level = Level.DAY) -> list[Terms]:
    """The terms of each point ``[cuts[k], cuts[k + 1])``, through whole buckets of
    ``top`` (any level: QUARTER sums the quarters of each point)."""
    return SeriesSplit(moments_of(cuts), top=top).plan().terms()


def moments_of(cuts: Sequence[datetime]) -> list[int]:
    """``cuts`` in milliseconds since the epoch (``to_millis``; floored)."""
    if all(cut.tzinfo is UTC for cut in cuts):
        return [(cut - EPOCH) // _MS for cut in cuts]
    return [to_millis(cut) for cut in cuts]


def footprint(pieces: Iterable[Piece]) -> Footprint:
    """The footprint of reading ``pieces``."""
    starts: dict[int, set[int]] = {}
    raws: set[tuple[int, int]] = set()
    for piece in pieces:
        if piece.level is None:
            raws.add((piece.start, piece.end))
        else:
            starts.setdefault(_CODE[piece.level], set()).add(piece.start)
    return _footprint(starts, raw=len(raws))


# --- one split of a series ----------------------------------------------------------


class _Rounded(NamedTuple):
    """An instant as ``anchor``, a boundary of the top level, plus the signed pieces
    ``keys`` / ``signs`` between the two; relative to the start of its top bucket.
    ``starts`` lists the pieces' starts per bucket level code and ``raws`` the raw
    slices, for counting."""

    anchor: int
    keys: tuple[_Key, ...]
    signs: tuple[int, ...]
    negated: tuple[int, ...]
    starts: tuple[tuple[int, tuple[int, ...]], ...]
    raws: tuple[tuple[int, int], ...]

    @property
    def pieces(self) -> zip[_Signed]:
        return zip(self.keys, self.signs, strict=True)


class _Point(NamedTuple):
    """A point's pieces: both ends' (``ends`` >= 0: the point follows the cut ``ends``,
    and nothing cancels) or ``own``, plus the whole top buckets in ``[low, high)``."""

    ends: int
    own: tuple[_Signed, ...]
    low: int
    high: int
    sign: int


_EMPTY = _Point(-1, (), 0, 0, 1)


class SeriesSplit:
    """The points ``[moments[k], moments[k + 1])`` (milliseconds) through ``top``: its
    cost (``footprint``) without its whole top buckets listed, and its ``plan``."""

    def __init__(self, moments: Sequence[int], *, top: Level) -> None:
        self.top = top
        self._code = _CODE[top]
        self._rounder = _Rounder(top)
        self._moments = list(moments)
        self._bases, self._positions = self._rounder.locate(self._moments)
        self._rounded = [self._rounder.rounded(position) for position in self._positions]
        self._anchors = [
            r.anchor + base for r, base in zip(self._rounded, self._bases, strict=True)
        ]
        pairs = list(zip(self._moments, self._anchors, strict=True))
        self._lows = [moment if moment <= anchor else anchor for moment, anchor in pairs]
        self._highs = [anchor if moment <= anchor else moment for moment, anchor in pairs]
        self._cancelled: dict[tuple[tuple[int, int], tuple[int, int], int], tuple[_Signed, ...]]
        self._cancelled = {}
        self._owners: list[int] = []  # the points with pieces of their own (``_split``)
        self._points = self._split()

    def size(self, index: int) -> int:
        """How many pieces point ``index`` has."""
        point = self._points[index]
        ends = 0
        if point.ends >= 0:
            ends = len(self._rounded[point.ends].keys) + len(self._rounded[point.ends + 1].keys)
        return ends + len(point.own) + self._top_count(point.low, point.high)

    def footprint(self) -> Footprint:
        starts: dict[int, set[int]] = {}
        raws: set[tuple[int, int]] = set()
        for point in self._points:
            for (start, end, code), _ in point.own:
                if code == _RAW:
                    raws.add((start, end))
                else:
                    starts.setdefault(code, set()).add(start)
        bases: dict[tuple[int, int], list[int]] = {}
        for cut in self._used():
            bases.setdefault(self._positions[cut], []).append(self._bases[cut])
        for position, found in bases.items():
            rounded = self._rounder.rounded(position)
            for code, relative in rounded.starts:
                target = starts.setdefault(code, set())
                for start in relative:
                    target.update(map(start.__add__, found))
            for start, end in rounded.raws:
                raws.update(zip(map(start.__add__, found), map(end.__add__, found), strict=True))
        spans = _merged([(p.low, p.high) for p in self._points if p.low < p.high])
        return _footprint(starts, raw=len(raws), top=(self._code, spans))

    def plan(self) -> SeriesPlan:
        if self._disjoint():
            return self._plan_disjoint()
        keys: dict[_Key, int] = {}
        ends: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
        points: list[tuple[tuple[int, int], ...]] = []
        for point in self._points:
            found = [(keys.setdefault(key, len(keys)), sign) for key, sign in point.own]
            if point.ends >= 0:
                found += self._signed_ends(point.ends, keys, ends)
            found += [
                (keys.setdefault(key, len(keys)), point.sign)
                for key in self._top_keys(point.low, point.high)
            ]
            points.append(tuple(found))
        return SeriesPlan(tuple(keys), tuple(points))

    def _plan_disjoint(self) -> SeriesPlan:
        """``plan`` when no two cuts' pieces and no two points' top buckets can be the
        same (``_disjoint``): those are listed once each without looking them up; only a
        point's own pieces are looked up (in the cuts' pieces, then each other's)."""
        keys: list[_Key] = []
        plus: list[list[tuple[int, int]]] = [[] for _ in self._moments]
        minus: list[list[tuple[int, int]]] = [[] for _ in self._moments]
        known: dict[_Key, int] = {}
        for cut in sorted(self._used()):
            rounded, base = self._rounded[cut], self._bases[cut]
            if not rounded.keys:
                continue
            first = len(keys)
            keys += [(start + base, end + base, code) for start, end, code in rounded.keys]
            indexes = range(first, len(keys))
            plus[cut] = list(zip(indexes, rounded.signs, strict=True))
            minus[cut] = list(zip(indexes, rounded.negated, strict=True))
            if self._owners:
                known.update(zip(keys[first:], indexes, strict=True))
        points: list[tuple[tuple[int, int], ...]] = []
        for point in self._points:
            found = minus[point.ends] + plus[point.ends + 1] if point.ends >= 0 else []
            if point.own:
                found += [(_index(key, keys, known), sign) for key, sign in point.own]
            if point.low < point.high:
                first = len(keys)
                keys += self._top_keys(point.low, point.high)
                found += zip(range(first, len(keys)), repeat(point.sign))
            points.append(tuple(found))
        return SeriesPlan(tuple(keys), tuple(points))

    def _disjoint(self) -> bool:
        """Whether no two cuts' pieces overlap, no two points' top buckets do, and no
        point has top buckets of its own (a quarter through quarters): pieces of
        different codes differ, and the top's is not a cut's."""
        owned = (self._points[point].own for point in self._owners)
        if any(code == self._code for own in owned for (_, _, code), _ in own):
            return False
        cuts = sorted(
            [(self._lows[cut], self._highs[cut]) for cut in self._used() if self._rounded[cut].keys]
        )
        tops = sorted([(point.low, point.high) for point in self._points if point.low < point.high])
        return _apart(cuts) and _apart(tops)

    def _used(self) -> set[int]:
        """The cuts whose pieces are a point's (``_Point.ends``)."""
        used = {point.ends for point in self._points if point.ends >= 0}
        return used.union([cut + 1 for cut in used])

    def _split(self) -> list[_Point]:
        moments, anchors, lows, highs = self._moments, self._anchors, self._lows, self._highs
        points: list[_Point] = []
        for cut in range(len(moments) - 1):
            a, b = moments[cut], moments[cut + 1]
            if a >= b:
                points.append(_EMPTY)
            elif a // _QUARTER == (b - 1) // _QUARTER:
                points.append(_Point(-1, _within_quarter(a, b), 0, 0, 1))
                self._owners.append(cut)
            else:
                left, right = anchors[cut], anchors[cut + 1]
                low, high, sign = (left, right, 1) if left <= right else (right, left, -1)
                if highs[cut] <= lows[cut + 1] or highs[cut + 1] <= lows[cut]:  # none in both
                    points.append(_Point(cut, (), low, high, sign))
                else:
                    own = self._cancel(cut)
                    points.append(_Point(-1, own, low, high, sign))
                    if own:
                        self._owners.append(cut)
        return points

    def _cancel(self, left: int) -> tuple[_Signed, ...]:
        """The pieces of cut ``left + 1`` minus those of cut ``left`` without those that
        cancel (worked out once per pair of positions at a given distance)."""
        right = left + 1
        base = self._bases[left]
        distance = self._bases[right] - base
        key = (self._positions[left], self._positions[right], distance)
        found = self._cancelled.get(key)
        if found is None:
            total: dict[_Key, int] = {}
            for (start, end, code), sign in self._rounded[right].pieces:
                total[start + distance, end + distance, code] = sign
            for piece, sign in self._rounded[left].pieces:
                total[piece] = total.get(piece, 0) - sign
            found = self._cancelled[key] = tuple([(k, n) for k, n in total.items() if n])
        return _shifted(found, base)

    def _signed_ends(
        self,
        index: int,
        keys: dict[_Key, int],
        ends: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]],
    ) -> list[tuple[int, int]]:
        """The pieces of cut ``index + 1`` minus those of cut ``index``, as indexes."""
        for cut in (index, index + 1):
            if cut not in ends:
                rounded, base = self._rounded[cut], self._bases[cut]
                plus = [
                    (keys.setdefault((start + base, end + base, code), len(keys)), sign)
                    for (start, end, code), sign in rounded.pieces
                ]
                ends[cut] = (plus, [(k, -sign) for k, sign in plus])
        return ends[index][1] + ends[index + 1][0]

    def _top_count(self, low: int, high: int) -> int:
        if low >= high:
            return 0
        if self._code == _M:
            return _month_number(_month_of(high - 1)[0]) - _month_number(low) + 1
        return (high - low) // _WIDTH[self._code]

    def _top_keys(self, low: int, high: int) -> list[_Key]:
        code = self._code
        if code != _M:
            width = _WIDTH[code]
            return list(
                zip(range(low, high, width), range(low + width, high + width, width), repeat(code))
            )
        found = []
        start = low
        while start < high:
            end = start + _month_of(start)[1]
            found.append((start, end, code))
            start = end
        return found


def _index(key: _Key, keys: list[_Key], known: dict[_Key, int]) -> int:
    """The index of ``key`` in ``keys``, where ``known`` has it; else appended."""
    index = known.get(key)
    if index is None:
        index = known[key] = len(keys)
        keys.append(key)
    return index


def _shifted(pieces: tuple[_Signed, ...], base: int) -> tuple[_Signed, ...]:
    return tuple([((start + base, end + base, code), sign) for (start, end, code), sign in pieces])


def _within_quarter(a: int, b: int) -> tuple[_Signed, ...]:
    """``[a, b)`` inside one quarter: raw, or the quarter minus the raw slices outside
    it, whichever reads fewer raw messages."""
    start = a - a % _QUARTER
    end = start + _QUARTER
    if b - a <= (a - start) + (end - b):
        return (((a, b, _RAW), 1),)
    terms: list[_Signed] = [((start, end, _Q), 1)]
    for low, high in ((start, a), (b, end)):
        if low < high:
            terms.append(((low, high, _RAW), -1))
    return tuple(terms)


# --- rounding an instant ------------------------------------------------------------


class _Rounder:
    """The edges of instants through ``top``, each distinct position worked out once:
    the position is the offset in the instant's top bucket (its ``base``) and, for
    months, the month's length."""

    def __init__(self, top: Level) -> None:
        self._levels = _LEVELS[top]
        self._paths = _PATHS[top]
        self._width = {Level.QUARTER: _QUARTER, Level.HOUR: _HOUR, Level.DAY: _DAY}.get(top, 0)
        self._found: dict[tuple[int, int], _Rounded] = {}

    def locate(self, moments: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
        """The base and the position of each of ``moments``."""
        if self._width:
            width = self._width
            bases = [moment - moment % width for moment in moments]
            return bases, list(zip(map(sub, moments, bases), repeat(0)))
        months = [_month_of(moment) for moment in moments]
        bases = [start for start, _ in months]
        return bases, [
            (moment - start, n) for moment, (start, n) in zip(moments, months, strict=True)
        ]

    def rounded(self, position: tuple[int, int]) -> _Rounded:
        found = self._found.get(position)
        if found is None:
            found = self._found[position] = self._relative(*position)
        return found

    def _relative(self, moment: int, month: int) -> _Rounded:
        """``moment`` (from the start of its top bucket; a month of ``month`` ms) as a
        boundary of the top level plus the signed pieces from it to ``moment``."""
        pieces: list[_Signed] = []
        point = moment
        offset = moment % _QUARTER
        if offset:
            quarter = moment - offset
            if _QUARTER - offset < offset:  # nearer the end of its quarter
                point = quarter + _QUARTER
                pieces.append(((moment, point, _RAW), -1))
            else:
                point = quarter
                pieces.append(((quarter, moment, _RAW), 1))
        levels = self._levels
        ups = min(self._paths, key=lambda path: _cost(point, levels, path, month))
        for code, up in zip(levels, ups, strict=True):
            point = _round(point, code=code, up=up, month=month, pieces=pieces)
        starts: dict[int, list[int]] = {}
        for (start, _, code), _ in pieces:
            if code != _RAW:
                starts.setdefault(code, []).append(start)
        keys = tuple(key for key, _ in pieces)
        signs = tuple(sign for _, sign in pieces)
        return _Rounded(
            anchor=point,
            keys=keys,
            signs=signs,
            negated=tuple(-sign for sign in signs),
            starts=tuple((code, tuple(found)) for code, found in starts.items()),
            raws=tuple((start, end) for start, end, code in keys if code == _RAW),
        )


def _bounds(point: int, code: int, month: int) -> tuple[int, int]:
    """The start and end of the bucket of ``code`` holding ``point`` (relative to the
    start of a month of ``month`` ms, which ``point`` lies in or ends)."""
    if code == _M:
        return (month, month) if point >= month else (0, month)
    width = _WIDTH[code]
    low = point - point % width
    return low, low + width


def _cost(point: int, levels: tuple[int, ...], ups: tuple[bool, ...], month: int) -> int:
    """How many pieces rounding ``point`` up (True) or down at each level takes."""
    pieces = 0
    for code, up in zip(levels, ups, strict=True):
        low, high = _bounds(point, code, month)
        if low == point:
            continue
        finer = _WIDTH[code - 1]
        pieces += (high - point) // finer if up else (point - low) // finer
        point = high if up else low
    return pieces


def _round(point: int, *, code: int, up: bool, month: int, pieces: list[_Signed]) -> int:
    low, high = _bounds(point, code, month)
    if low == point:
        return point
    finer = code - 1
    width = _WIDTH[finer]
    if up:
        pieces += [((start, start + width, finer), -1) for start in range(point, high, width)]
        return high
    pieces += [((start, start + width, finer), 1) for start in range(low, point, width)]
    return low


# --- months and footprints ----------------------------------------------------------


def _month_of(moment: int) -> tuple[int, int]:
    """The start of the UTC month holding ``moment`` and its length (milliseconds)."""
    day = date.fromordinal(_EPOCH_DAY + moment // _DAY)
    start = moment - moment % _DAY - (day.day - 1) * _DAY
    days = _MONTH_DAYS[day.month] + (day.month == 2 and isleap(day.year))
    return start, days * _DAY


def _month_number(start: int) -> int:
    day = date.fromordinal(_EPOCH_DAY + start // _DAY)
    return day.year * 12 + day.month - 1


def _apart(spans: list[tuple[int, int]]) -> bool:
    """Whether no two of the ordered ``spans`` overlap."""
    return all(map(le, [high for _, high in spans[:-1]], [low for low, _ in spans[1:]]))


def _merged(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The union of the half-open ``spans``, as disjoint spans in order."""
    merged: list[tuple[int, int]] = []
    for low, high in sorted(spans):
        if merged and low <= merged[-1][1]:
            if high > merged[-1][1]:
                merged[-1] = (merged[-1][0], high)
        else:
            merged.append((low, high))
    return merged


def _footprint(
    starts: dict[int, set[int]],
    *,
    raw: int,
    top: tuple[int, list[tuple[int, int]]] | None = None,
) -> Footprint:
    """The footprint of ``raw`` slices and the buckets at ``starts`` (per level code)
    plus, when ``top`` is ``(code, spans)``, every bucket of ``code`` in the disjoint
    ``spans``."""
    levels = {
        code: (len(found), _slots(code, min(found), max(found)))
        for code, found in starts.items()
        if found
    }
    if top is not None and top[1]:
        code, spans = top
        levels[code] = _with_spans(code, spans, sorted(starts.get(code, ())))
    return Footprint(raw, {_BUCKET[code]: found for code, found in levels.items()})


def _with_spans(code: int, spans: list[tuple[int, int]], starts: list[int]) -> tuple[int, int]:
    """Needed and slots of the buckets of ``code`` in ``spans`` plus those at ``starts``."""
    lasts = [_last_start(code, high) for _, high in spans]
    needed = sum(_slots(code, low, last) for (low, _), last in zip(spans, lasts, strict=True))
    lows = [low for low, _ in spans]
    outside = [s for s in starts if (k := bisect_right(lows, s) - 1) < 0 or s > lasts[k]]
    first, last = min([lows[0], *outside]), max([lasts[-1], *outside])
    return needed + len(outside), _slots(code, first, last)


def _last_start(code: int, high: int) -> int:
    """The start of the last bucket of ``code`` before the boundary ``high``."""
    return _month_of(high - 1)[0] if code == _M else high - _WIDTH[code]


def _slots(code: int, first: int, last: int) -> int:
    """How many buckets of ``code`` start in ``[first, last]``."""
    if code == _M:
        return _month_number(last) - _month_number(first) + 1
    return (last - first) // _WIDTH[code] + 1
