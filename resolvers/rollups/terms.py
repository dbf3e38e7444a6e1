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
    """The pieces of one level code in order, with their indexes in a plan."""

    starts: list[int]
    ends: list[int]
    indexes: list[int]


class _Point(NamedTuple):
    """A point of a plan: the indexes of its pieces and their weights (+1 or -1, or
    more where the pieces of both of its ends count a piece the same way)."""

    indexes: tuple[int, ...]
    weights: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SeriesPlan:
    """The points of a series as weighted sums of distinct pieces, in columns: piece
    ``k`` is ``[starts[k], ends[k])`` of level code ``codes[k]``. (A series has thousands
    of pieces: no object for each, nothing for the garbage collector to trace; ``reads``
    picks a window of them for reading by bisection.)"""

    starts: list[int]
    ends: list[int]
    codes: list[int]
    points: list[_Point]
    _runs: dict[int, _Run] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        runs: dict[int, _Run] = {}
        starts, ends = self.starts, self.ends
        for code in set(self.codes):
            indexes = [index for index, of in enumerate(self.codes) if of == code]
            ordered = [starts[index] for index in indexes]
            if not all(map(le, ordered, ordered[1:])):
                indexes.sort(key=starts.__getitem__)
                ordered = [starts[index] for index in indexes]
            runs[code] = _Run(ordered, [ends[index] for index in indexes], indexes)
        object.__setattr__(self, "_runs", runs)

    @property
    def pieces(self) -> tuple[Piece, ...]:
        found = zip(self.starts, self.ends, self.codes, strict=True)
        return tuple(Piece(start, end, _LEVEL[code]) for start, end, code in found)

    def terms(self) -> list[Terms]:
        pieces = self.pieces
        return [
            {pieces[index]: weight for index, weight in zip(*point, strict=True)}
            for point in self.points
        ]

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


def _plan_of(keys: Sequence[_Key], points: list[_Point]) -> SeriesPlan:
    return SeriesPlan(
        [start for start, _, _ in keys],
        [end for _, end, _ in keys],
        [code for _, _, code in keys],
        points,
    )


def _weighted(found: Sequence[tuple[int, int]]) -> _Point:
    return _Point(tuple([index for index, _ in found]), tuple([weight for _, weight in found]))


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
    ``keys`` / ``signs``; relative to the start of its top bucket. The instant, its
    anchor and its pieces lie in ``[low, high)`` (rounded one way at one level and the
    other way at the next, pieces reach past the instant: 10:15 is the next day minus
    the day plus 10 hours and a quarter). ``starts`` lists the pieces' starts per bucket
    level code and ``raws`` the raw slices, for counting."""

    anchor: int
    low: int
    high: int
    keys: tuple[_Key, ...]
    signs: tuple[int, ...]
    negated: tuple[int, ...]
    starts: tuple[tuple[int, tuple[int, ...]], ...]
    raws: tuple[tuple[int, int], ...]
    columns: tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]

    @property
    def pieces(self) -> zip[_Signed]:
        return zip(self.keys, self.signs, strict=True)


class _Part(NamedTuple):
    """A point's pieces in a split: both ends' (``ends`` >= 0: the point follows the cut
    ``ends``, and nothing cancels) or ``own``, plus the whole top buckets in
    ``[low, high)``."""

    ends: int
    own: tuple[_Signed, ...]
    low: int
    high: int
    sign: int


_EMPTY = _Part(-1, (), 0, 0, 1)


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
        pairs = list(zip(self._rounded, self._bases, strict=True))
        self._lows = [rounded.low + base for rounded, base in pairs]
        self._highs = [rounded.high + base for rounded, base in pairs]
        self._cancelled: dict[tuple[tuple[int, int], tuple[int, int], int], tuple[_Signed, ...]]
        self._cancelled = {}
        self._owners: list[int] = []  # the points with pieces of their own (``_split``)
        self._parts = self._split()

    def size(self, index: int) -> int:
        """How many pieces point ``index`` has."""
        point = self._parts[index]
        ends = 0
        if point.ends >= 0:
            ends = len(self._rounded[point.ends].keys) + len(self._rounded[point.ends + 1].keys)
        return ends + len(point.own) + self._top_count(point.low, point.high)

    def footprint(self) -> Footprint:
        starts: dict[int, set[int]] = {}
        raws: set[tuple[int, int]] = set()
        for point in self._parts:
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
        spans = _merged([(p.low, p.high) for p in self._parts if p.low < p.high])
        return _footprint(starts, raw=len(raws), top=(self._code, spans))

    def plan(self) -> SeriesPlan:
        if self._disjoint():
            return self._plan_disjoint()
        keys: dict[_Key, int] = {}
        ends: dict[int, tuple[list[tuple[int, int]], list[tuple[int, int]]]] = {}
        points: list[_Point] = []
        for part in self._parts:
            found = [(keys.setdefault(key, len(keys)), sign) for key, sign in part.own]
            if part.ends >= 0:
                found += self._signed_ends(part.ends, keys, ends)
            top = zip(*self._top_columns(part.low, part.high), repeat(self._code), strict=False)
            found += [(keys.setdefault(key, len(keys)), part.sign) for key in top]
            points.append(_weighted(found))
        return _plan_of(list(keys), points)

    def _plan_disjoint(self) -> SeriesPlan:
        """``plan`` when no two cuts' pieces and no two points' top buckets can be the
        same (``_disjoint``): those are listed once each without looking them up; only a
        point's own pieces are (in the cuts' pieces near them, then each other's)."""
        columns: tuple[list[int], list[int], list[int]] = ([], [], [])
        starts, ends, codes = columns
        blocks: dict[int, range] = {}
        for cut in sorted(self._used()):
            rounded, base = self._rounded[cut], self._bases[cut]
            if rounded.keys:
                first = len(starts)
                starts += [start + base for start in rounded.columns[0]]
                ends += [end + base for end in rounded.columns[1]]
                codes += rounded.columns[2]
                blocks[cut] = range(first, len(starts))
        known = self._known(blocks, columns)
        points: list[_Point] = []
        for part in self._parts:
            indexes: list[int] = []
            weights: tuple[int, ...] = ()
            if part.ends >= 0:
                left, right = part.ends, part.ends + 1
                indexes += [*blocks.get(left, ()), *blocks.get(right, ())]
                weights = self._rounded[left].negated + self._rounded[right].signs
            if part.own:
                indexes += [_index(key, columns, known) for key, _ in part.own]
                weights += tuple([weight for _, weight in part.own])
            if part.low < part.high:
                first = len(starts)
                top_starts, top_ends = self._top_columns(part.low, part.high)
                starts += top_starts
                ends += top_ends
                codes += [self._code] * len(top_starts)
                indexes += range(first, len(starts))
                weights += (part.sign,) * len(top_starts)
            points.append(_Point(tuple(indexes), weights))
        return SeriesPlan(starts, ends, codes, points)

    def _known(
        self, blocks: dict[int, range], columns: tuple[list[int], list[int], list[int]]
    ) -> dict[_Key, int]:
        """The pieces of the cuts (``blocks``) near a point's own pieces, by key."""
        known: dict[_Key, int] = {}
        spans = sorted((self._lows[cut], self._highs[cut], cut) for cut in blocks)
        lows, highs = [low for low, _, _ in spans], [high for _, high, _ in spans]
        for owner in self._owners:
            own = self._parts[owner].own
            low, high = min(key[0] for key, _ in own), max(key[1] for key, _ in own)
            for _, _, cut in spans[bisect_right(highs, low) : bisect_left(lows, high)]:
                block = blocks[cut]
                found = zip(*(column[block.start : block.stop] for column in columns), strict=True)
                known.update(zip(found, block, strict=True))
        return known

    def _disjoint(self) -> bool:
        """Whether no two cuts' pieces overlap, no two points' top buckets do, and no
        point has top buckets of its own (a quarter through quarters): pieces of
        different codes differ, and the top's is not a cut's."""
        owned = (self._parts[part].own for part in self._owners)
        if any(code == self._code for own in owned for (_, _, code), _ in own):
            return False
        cuts = sorted(
            [(self._lows[cut], self._highs[cut]) for cut in self._used() if self._rounded[cut].keys]
        )
        tops = sorted([(point.low, point.high) for point in self._parts if point.low < point.high])
        return _apart(cuts) and _apart(tops)

    def _used(self) -> set[int]:
        """The cuts whose pieces are a point's (``_Part.ends``)."""
        used = {point.ends for point in self._parts if point.ends >= 0}
        return used.union([cut + 1 for cut in used])

    def _split(self) -> list[_Part]:
        moments, anchors, lows, highs = self._moments, self._anchors, self._lows, self._highs
        points: list[_Part] = []
        for cut in range(len(moments) - 1):
            a, b = moments[cut], moments[cut + 1]
            if a >= b:
                points.append(_EMPTY)
            elif a // _QUARTER == (b - 1) // _QUARTER:
                points.append(_Part(-1, _within_quarter(a, b), 0, 0, 1))
                self._owners.append(cut)
            else:
                left, right = anchors[cut], anchors[cut + 1]
                low, high, sign = (left, right, 1) if left <= right else (right, left, -1)
                if highs[cut] <= lows[cut + 1] or highs[cut + 1] <= lows[cut]:  # none in both
                    points.append(_Part(cut, (), low, high, sign))
                else:
                    own = self._cancel(cut)
                    points.append(_Part(-1, own, low, high, sign))
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

    def _top_columns(self, low: int, high: int) -> tuple[Sequence[int], Sequence[int]]:
        """The starts and ends of the top buckets in ``[low, high)``."""
        if self._code != _M:
            width = _WIDTH[self._code]
            return range(low, high, width), range(low + width, high + width, width)
        starts, ends = [], []
        start = low
        while start < high:
            starts.append(start)
            start += _month_of(start)[1]
            ends.append(start)
        return starts, ends


def _index(
    key: _Key, columns: tuple[list[int], list[int], list[int]], known: dict[_Key, int]
) -> int:
    """The index of the piece ``key`` in ``columns``, where ``known`` has it; else it
    is added."""
    index = known.get(key)
    if index is None:
        index = known[key] = len(columns[0])
        for column, value in zip(columns, key, strict=True):
            column.append(value)
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
            low=min([moment, point, *(start for start, _, _ in keys)]),
            high=max([moment, point, *(end for _, end, _ in keys)]),
            keys=keys,
            signs=signs,
            negated=tuple(-sign for sign in signs),
            starts=tuple((code, tuple(found)) for code, found in starts.items()),
            raws=tuple((start, end) for start, end, code in keys if code == _RAW),
            columns=(
                tuple([start for start, _, _ in keys]),
                tuple([end for _, end, _ in keys]),
                tuple([code for _, _, code in keys]),
            ),
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
