"""Time ranges, series and instance summaries from the rollups.

Each interval is a signed sum of buckets and short raw slices (``terms.py``). Per
instance, the pieces of every interval a request needs are read together: one query per
bucket level (a range on ``t`` where most buckets in the span are needed, else ``$in``
in batches), and an index range scan per raw slice. So a series reads each bucket once,
whatever the number of points it is shared by.

What buckets cannot tell is read otherwise:

- ``firstMessageAt``/``lastMessageAt`` within a range: the instance's own first/last
  when it lies inside the range, else a drill from the month buckets through the finer
  buckets' message counts (``n.<index>.<flag>``) to the first (last) quarter hour with
  messages inside the range, whose messages are read raw;
- unique counts within a range: the instance's all-time counts when the range holds
  every message of the instance (from at or before its first, to after its last, and no
  undated ones), else the union of the distinct values kept for its whole UTC days and
  hours and of the raw messages at its ends (``valuesets.py``).

``ignoreGroupMessages`` is applied by reading flag ``o`` only, as in ``read.py``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from itertools import pairwise
from typing import Any, TypeVar

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.metrics import distinct_instances, fetch_metrics
from resolvers.pipeline import (
    KNOWN_MEDIA_TYPES,
    KNOWN_STATUSES,
    KNOWN_TYPES,
    MetricsResult,
    empty_metrics,
    order_counts,
)
from resolvers.rollups.cache import current, kept_each
from resolvers.rollups.contribution import FLAGS, Flag, contribution, dated, flag_of
from resolvers.rollups.keys import EPOCH, Level, ceil_to, decode_key, floor_to, to_millis
from resolvers.rollups.read import WINDOWS, months_since, read_parts
from resolvers.rollups.store import BUCKETS, instance_docs, read_raw_kept
from resolvers.rollups.terms import (
    Footprint,
    Piece,
    Reads,
    SeriesPlan,
    SeriesSplit,
    Terms,
    footprint,
    interval_terms,
    moments_of,
    reads_of,
)
from resolvers.rollups.valuesets import range_values
from resolvers.series import Tally
from resolvers.timeranges import Interval, TimeRange

__all__ = [
    "SERIES_TOPS",
    "InstanceCounts",
    "documents_read",
    "plan_series",
    "read_instance_counts",
    "read_range_metrics",
    "read_series_tallies",
]

IN_BATCH = 50
"""Bucket starts per ``$in`` (SecantusDB's cost grows with the square of the list)."""

_MS = timedelta(milliseconds=1)
#: The last month of the calendar: its buckets have no month after them, which the
#: splitting of a range needs, so a range reaching into it is scanned.
_LAST_MONTH = datetime(9999, 12, 1, tzinfo=UTC)
_ALL_TIME = TimeRange(datetime.min.replace(tzinfo=UTC), datetime.max.replace(tzinfo=UTC))
_RAW_FIELDS = {
    "_id": 0,
    "instanceId": 1,
    "timestamp": 1,
    "isGroup": 1,
    "fromMe": 1,
    "type": 1,
    "status": 1,
    "media": 1,
}
_EXTREME_FIELDS = {"_id": 0, "instanceId": 1, "timestamp": 1, "isGroup": 1}


def _flags(ref: InstanceRef) -> tuple[Flag, ...]:
    return ("o",) if ref.ignore_group_messages else FLAGS


# --- reading pieces -----------------------------------------------------------------


async def read_pieces(
    *,
    db: Database,
    instance: InstanceRef,
    pieces: Iterable[Piece],
    session: AsyncClientSession | None = None,
) -> dict[Piece, Tally]:
    """The counts of each piece (absent: no messages there), for the instance's flags."""
    listed = list(pieces)
    found = await _read_documents(db=db, instance=instance, reads=reads_of(listed), session=session)
    return {listed[index]: tally for index, tally in found.tallies(_flags(instance)).items()}


@dataclass(frozen=True, slots=True)
class _Documents:
    """What the pieces read hold, by the pieces' indexes: the bucket document of each
    bucket with messages, the raw messages of each raw slice."""

    buckets: dict[int, Mapping[str, Any]] = field(default_factory=dict)
    raws: dict[int, Sequence[Mapping[str, Any]]] = field(default_factory=dict)

    def tallies(self, flags: tuple[Flag, ...]) -> dict[int, Tally]:
        """The counts of each piece read (pure CPU: a series' run off the event loop)."""
        found = {index: _tally_of(doc, flags) for index, doc in self.buckets.items()}
        found.update({index: raw_tally(docs, flags) for index, docs in self.raws.items()})
        return found


async def _read_documents(
    *,
    db: Database,
    instance: InstanceRef,
    reads: Reads,
    session: AsyncClientSession | None,
) -> _Documents:
    """The documents of the pieces ``reads``: per bucket level one range query or ``$in``
    batches, per raw slice an index range scan."""
    flags = _flags(instance)
    found = _Documents()
    for level, starts in reads.buckets.items():
        docs = await _bucket_docs(db, instance.id, level, set(starts), flags, session)
        found.buckets.update((starts[start], doc) for start, doc in docs.items())
    for index, start, end in reads.raws:
        found.raws[index] = await read_raw_kept(
            db=db,
            instance=instance.id,
            start=_time(start),
            end=_time(end),
            projection=_RAW_FIELDS,
            session=session,
        )
    return found


async def _bucket_docs(
    db: Database,
    instance: ObjectId,
    level: Level,
    starts: set[int],
    flags: tuple[Flag, ...],
    session: AsyncClientSession | None,
) -> dict[int, Mapping[str, Any]]:
    """The bucket documents of ``level`` starting at ``starts`` that exist (kept reads
    first, with both flags' counts)."""
    if current() is None:
        return await _read_bucket_docs(db, instance, level, starts, flags, session)

    async def load(missing: list[int]) -> dict[int, Mapping[str, Any]]:
        found = await _read_bucket_docs(db, instance, level, set(missing), FLAGS, session)
        return {start: _Kept(doc) for start, doc in found.items()}

    return await kept_each(starts, lambda start: ("counts", instance, level.value, start), load)


class _Kept(dict[str, Any]):
    """A kept bucket document, with its counts per flags once worked out (``_tally_of``;
    a worker thread may add them: a dict's item assignment is atomic)."""

    def __init__(self, doc: Mapping[str, Any]) -> None:
        super().__init__(doc)
        self.tallies: dict[tuple[Flag, ...], Tally] = {}


def _tally_of(doc: Mapping[str, Any], flags: tuple[Flag, ...]) -> Tally:
    """``bucket_tally``, once per kept document and flags (callers only read it)."""
    if not isinstance(doc, _Kept):
        return bucket_tally(doc, flags)
    found = doc.tallies.get(flags)
    if found is None:
        found = doc.tallies[flags] = bucket_tally(doc, flags)
    return found


async def _read_bucket_docs(
    db: Database,
    instance: ObjectId,
    level: Level,
    starts: set[int],
    flags: tuple[Flag, ...],
    session: AsyncClientSession | None,
) -> dict[int, Mapping[str, Any]]:
    """``_bucket_docs`` from the database: one range query when they are at least half
    the buckets of their span, else ``$in`` batches."""
    ordered = sorted(starts)
    projection = {"_id": 0, "t": 1, **{f"c.{flag}": 1 for flag in flags}}
    queries: list[dict[str, Any]]
    if _ranged(len(ordered), _slots(ordered[0], ordered[-1], level)):
        last = _time(ordered[-1])
        queries = [{"$gte": _time(ordered[0]), "$lte": last}]
    else:
        batches = [ordered[k : k + IN_BATCH] for k in range(0, len(ordered), IN_BATCH)]
        queries = [{"$in": [_time(start) for start in batch]} for batch in batches]
    docs: dict[int, Mapping[str, Any]] = {}
    for condition in queries:
        query = {"i": instance, "l": level.value, "t": condition}
        async for doc in db[BUCKETS].find(query, projection, session=session):
            start = to_millis(doc["t"])
            if start in starts:
                docs[start] = doc
    return docs


def _slots(low: int, high: int, level: Level) -> int:
    """How many buckets of ``level`` start in ``[low, high]``."""
    if level is Level.MONTH:
        first, last = _time(low), _time(high)
        return (last.year - first.year) * 12 + last.month - first.month + 1
    return (high - low) // (level.width // _MS) + 1


def _time(millis: int) -> datetime:
    return EPOCH + millis * _MS


def bucket_tally(doc: Mapping[str, Any], flags: tuple[Flag, ...]) -> Tally:
    """The counts of a bucket document, for ``flags``."""
    tally = Tally()
    for flag in flags:
        counters = _get(doc, f"c.{flag}") or {}
        for name in ("n", "s", "r", "i", "m"):
            if name in counters:
                tally.counters[name] += int(counters[name])
        if flag == "g":
            tally.counters["g"] += int(counters.get("n") or 0)
        for kind, target in (("t", tally.types), ("st", tally.statuses), ("mt", tally.media)):
            for key, count in (counters.get(kind) or {}).items():
                target[decode_key(key)] += int(count)
    return tally


def raw_tally(docs: Iterable[Mapping[str, Any]], flags: tuple[Flag, ...]) -> Tally:
    """The counts of raw messages (as the rollups count them), for ``flags``."""
    tally = Tally()
    for doc in docs:
        part = contribution(doc)
        if part is None or part.flag not in flags:
            continue
        if part.flag == "g":
            tally.counters["g"] += 1
        for name in part.counters:
            kind, _, key = name.partition(".")
            target = {"t": tally.types, "st": tally.statuses, "mt": tally.media}.get(kind)
            if target is None:
                tally.counters[name] += 1
            else:
                target[decode_key(key)] += 1
    return tally


def combine(terms: Terms, tallies: Mapping[Piece, Tally]) -> Tally:
    """The counts of an interval: its pieces' counts with their signs."""
    total = Tally()
    for piece, sign in terms.items():
        found = tallies.get(piece)
        if found is not None:
            total.add(found, sign=sign)
    return total


# --- series -------------------------------------------------------------------------


SERIES_TOPS: dict[Interval, tuple[Level, ...]] = {
    Interval.HOUR: (Level.QUARTER, Level.HOUR, Level.DAY),
    Interval.DAY: (Level.DAY,),
    Interval.WEEK: (Level.DAY,),
    Interval.MONTH: (Level.DAY, Level.MONTH),
}
"""The ways to split the points of a series worth comparing: an hour at +05:30 is four
quarters (all the quarters of the range: one range query), at +00:00 one hour."""


async def read_series_tallies(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    cuts: Sequence[datetime],
    tops: Sequence[Level] = (Level.DAY,),
    session: AsyncClientSession | None = None,
) -> dict[ObjectId, list[Tally]]:
    """Per distinct instance, the counts of each point ``[cuts[k], cuts[k + 1])``, split
    through whichever of ``tops`` reads the fewest documents. With kept reads
    (``cache.py``) a point's counts are kept, whichever series it is in, and only the
    runs of points not kept are planned and read (of a repeated series, its first and
    last). The pure work of a long run (the plan, the counts from its documents) runs in
    a worker thread: for a thousand points it takes milliseconds, which the event loop
    does not wait out."""
    refs = distinct_instances(instances)
    found: dict[ObjectId, list[Tally]] = {}
    with translate_driver_errors():
        docs = await instance_docs(db=db, ids=[ref.id for ref in refs], session=session)
        for ref in refs:
            flags = _flags(ref)
            keys = [("point", ref.id, flags, low, high) for low, high in pairwise(cuts)]
            view = current()
            points: dict[int, Tally] = {}
            missing = list(range(len(keys)))
            if view is not None:
                points, missing = view.take(dict(enumerate(keys)))
            held = _held(docs.get(ref.id, {}), flags, _ALL_TIME)
            for first, end in _point_runs(missing):
                run = cuts[first : end + 1]
                plan = await _pure(partial(plan_series, run, tops=tops), points=end - first)
                reads = _within(plan, held)
                read = await _read_documents(db=db, instance=ref, reads=reads, session=session)
                tallies = await _pure(
                    partial(_point_tallies, plan, read, flags), points=end - first
                )
                for index, tally in enumerate(tallies, start=first):
                    points[index] = tally
                    if view is not None:
                        view.put(keys[index], tally)
            found[ref.id] = [points[index] for index in range(len(keys))]
    return found


_RUNS = 4
"""Runs of points not kept that are planned one by one at most; past that, one run from
the first to the last (the kept points between them are worked out again)."""

_ON_THE_LOOP = 16
"""Points whose plan and counts are worked out on the event loop (tens of microseconds:
less than the trip to a worker thread and back)."""


def _point_runs(missing: Sequence[int]) -> list[tuple[int, int]]:
    """The runs of consecutive point indexes in ``missing`` (ascending), as ``(first,
    end)`` with ``end`` exclusive, at most ``_RUNS`` of them."""
    runs: list[tuple[int, int]] = []
    for index in missing:
        if runs and runs[-1][1] == index:
            runs[-1] = (runs[-1][0], index + 1)
        else:
            runs.append((index, index + 1))
    if len(runs) > _RUNS:
        return [(runs[0][0], runs[-1][1])]
    return runs


_T = TypeVar("_T")


async def _pure(work: Callable[[], _T], *, points: int) -> _T:
    """``work`` on the event loop for a few points, else in a worker thread."""
    if points <= _ON_THE_LOOP:
        return work()
    return await asyncio.to_thread(work)


def _point_tallies(plan: SeriesPlan, read: _Documents, flags: tuple[Flag, ...]) -> list[Tally]:
    """The counts of each point of ``plan`` from the documents of its pieces."""
    by_index: list[Tally | None] = [None] * len(plan.starts)
    for index, tally in read.tallies(flags).items():
        by_index[index] = tally
    points = []
    for indexes, weights in plan.points:
        total = Tally()
        for index, weight in zip(indexes, weights, strict=True):
            found = by_index[index]
            if found is not None:
                total.add(found, sign=weight)
        points.append(total)
    return points


def _within(plan: SeriesPlan, held: TimeRange | None) -> Reads:
    """The pieces that overlap ``held``, the months of an instance's dated messages (not
    cut to the range: a piece may reach before it, to be subtracted): the others hold
    none of its messages, so they are not read."""
    if held is None:
        return Reads({}, [])
    return plan.reads(to_millis(held.start), to_millis(held.end))


def plan_series(cuts: Sequence[datetime], *, tops: Sequence[Level]) -> SeriesPlan:
    """The pieces of the points, through the top level that reads the fewest documents:
    each split is costed without listing its whole top buckets, and only the one chosen
    is built (linear in the points)."""
    moments = moments_of(cuts)
    splits = [SeriesSplit(moments, top=top) for top in tops]
    best = splits[0]
    if len(splits) > 1:
        best = min(splits, key=lambda split: _documents(split.footprint()))
    return best.plan()


def documents_read(pieces: Iterable[Piece]) -> int:
    """How many bucket documents ``read_pieces`` reads at most (raw slices count one)."""
    return _documents(footprint(pieces))


def _documents(found: Footprint) -> int:
    return found.raw + sum(
        slots if _ranged(needed, slots) else needed for needed, slots in found.levels.values()
    )


def _ranged(needed: int, slots: int) -> bool:
    """Read a level with one range query (else ``$in``): when at least half its span is
    needed (SecantusDB returns a document of a range in about half the time of ``$in``)."""
    return needed * 2 >= slots


# --- metrics over a range -----------------------------------------------------------


async def read_range_metrics(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    now: datetime,
    range: TimeRange,
    unique: bool = True,
    session: AsyncClientSession | None = None,
) -> dict[ObjectId, MetricsResult]:
    """Per distinct instance, its metrics over the messages dated in ``range``."""
    refs = distinct_instances(instances)
    if not refs:
        return {}
    with translate_driver_errors():
        docs = await instance_docs(db=db, ids=[ref.id for ref in refs], session=session)
        return {
            ref.id: await _one_range(
                db=db,
                ref=ref,
                doc=docs.get(ref.id, {}),
                now=now,
                range=range,
                unique=unique,
                session=session,
            )
            for ref in refs
        }


async def _one_range(
    *,
    db: Database,
    ref: InstanceRef,
    doc: Mapping[str, Any],
    now: datetime,
    range: TimeRange,
    unique: bool,
    session: AsyncClientSession | None,
) -> MetricsResult:
    flags = _flags(ref)
    held = _held(doc, flags, range)
    if held is None:
        return empty_metrics()
    if held.end > _LAST_MONTH:  # odd timestamps in December 9999, and a range up to them
        return await fetch_metrics(db=db, instances=[ref], now=now, range=range, unique=unique)
    main = interval_terms(held.start, held.end)
    windows = {
        name: interval_terms(max(held.start, now - span), held.end)
        for name, span in WINDOWS.items()
    }
    pieces = {piece for terms in (main, *windows.values()) for piece in terms}
    tallies = await read_pieces(db=db, instance=ref, pieces=pieces, session=session)
    total = combine(main, tallies)
    first, last = await _extremes(db=db, ref=ref, doc=doc, range=range, session=session)
    uniques = (0, 0, 0)
    if unique and total.counters["n"]:
        everything = sum(int(_get(doc, f"c.{flag}.n") or 0) for flag in flags)
        if everything == total.counters["n"]:  # every message, none undated: all time
            uniques = _stored_uniques(doc, flags)
        else:
            counts = await range_values(
                db=db,
                instance=ref.id,
                flags=flags,
                start=held.start,
                end=held.end,
                now=now,
                session=session,
            )
            uniques = (counts["chat"], counts["group"], counts["contact"])
    return MetricsResult(
        total_messages=total.counters["n"],
        messages_sent=total.counters["s"],
        messages_received=total.counters["r"],
        group_messages=total.counters["g"],
        individual_messages=total.counters["i"],
        messages_with_media=total.counters["m"],
        messages_last_7_days=combine(windows["messagesLast7Days"], tallies).counters["n"],
        messages_last_30_days=combine(windows["messagesLast30Days"], tallies).counters["n"],
        messages_by_type=order_counts(total.types, KNOWN_TYPES),
        media_by_type=order_counts(total.media, KNOWN_MEDIA_TYPES),
        messages_by_status=order_counts(total.statuses, KNOWN_STATUSES),
        unique_chats=uniques[0],
        unique_groups=uniques[1],
        unique_contacts=uniques[2],
        first_message_at=first,
        last_message_at=last,
    )


def _held(doc: Mapping[str, Any], flags: tuple[Flag, ...], range: TimeRange) -> TimeRange | None:
    """``range`` cut to the UTC months from the instance's first dated message to its
    last (None: it has no dated message there): a range of centuries reads no more than
    the instance's history."""
    firsts, lasts = _stored(doc, "first", flags), _stored(doc, "last", flags)
    if not firsts or not lasts:
        return None
    low = max(range.start, floor_to(min(firsts), Level.MONTH))
    high = min(range.end, _month_after(max(lasts), limit=range.end))
    return TimeRange(low, high) if low < high else None


def _month_after(moment: datetime, *, limit: datetime) -> datetime:
    """The end of the UTC month holding ``moment``; ``limit`` when that month is the last
    of the calendar (December 9999 has no month after it)."""
    try:
        return ceil_to(moment + _MS, Level.MONTH)
    except OverflowError:
        return limit


def _stored(doc: Mapping[str, Any], name: str, flags: tuple[Flag, ...]) -> list[datetime]:
    return [moment for flag in flags if (moment := _get(doc, f"{name}.{flag}"))]


def _stored_uniques(doc: Mapping[str, Any], flags: tuple[Flag, ...]) -> tuple[int, int, int]:
    which = "o" if flags == ("o",) else "a"
    chats, groups, contacts = (
        int(_get(doc, f"u.{kind}.{which}") or 0) for kind in ("chat", "group", "contact")
    )
    return chats, groups, contacts


# --- first and last within a range --------------------------------------------------


async def _extremes(
    *,
    db: Database,
    ref: InstanceRef,
    doc: Mapping[str, Any],
    range: TimeRange,
    session: AsyncClientSession | None,
) -> tuple[datetime | None, datetime | None]:
    flags = _flags(ref)
    found: list[datetime | None] = []
    for name, lowest in (("first", True), ("last", False)):
        stored = _stored(doc, name, flags)
        best = (min if lowest else max)(stored, default=None)
        if best is None:
            found.append(None)
        elif best in range:
            found.append(best)
        elif (best < range.start) if lowest else (best >= range.end):
            finder = _Extreme(db=db, instance=ref.id, flags=flags, lowest=lowest, session=session)
            found.append(await finder.within(range.start, range.end))
        else:  # the instance's first is after the range (its last before it)
            found.append(None)
    return found[0], found[1]


@dataclass(frozen=True, slots=True)
class _Extreme:
    """The first (``lowest``) or last message of ``flags`` in an interval: the month
    buckets overlapping it, then down through each bucket's counts of its finer buckets
    to a quarter hour, whose messages inside the interval are read raw."""

    db: Database
    instance: ObjectId
    flags: tuple[Flag, ...]
    lowest: bool
    session: AsyncClientSession | None

    async def within(self, low: datetime, high: datetime) -> datetime | None:
        first = _time(_month_start(to_millis(low)))
        since = await months_since(
            db=self.db, instance=self.instance, first=first, session=self.session
        )
        months = [doc for start, doc in since.items() if start < high]
        for month in sorted(months, key=lambda doc: doc["t"], reverse=not self.lowest):
            found = await self._in_bucket(month, Level.MONTH, low, high)
            if found is not None:
                return found
        return None

    async def _in_bucket(
        self, doc: Mapping[str, Any], level: Level, low: datetime, high: datetime
    ) -> datetime | None:
        finer = level.finer
        assert finer is not None
        start = doc["t"]
        indexes = sorted((int(key) for key in doc.get("n") or {}), reverse=not self.lowest)
        for index in indexes:
            if not any(int(_get(doc, f"n.{index}.{flag}") or 0) for flag in self.flags):
                continue
            child = start + index * finer.width
            child_end = child + finer.width
            if child_end <= low or child >= high:
                continue
            if finer is Level.QUARTER:
                found = await self._raw(max(child, low), min(child_end, high))
            else:
                found = await self._in_child(child, finer, max(child, low), min(child_end, high))
            if found is not None:
                return found
        return None

    async def _in_child(
        self, start: datetime, level: Level, low: datetime, high: datetime
    ) -> datetime | None:
        found = await read_parts(
            db=self.db, instance=self.instance, level=level, starts=[start], session=self.session
        )
        doc = found.get(start)
        return None if doc is None else await self._in_bucket(doc, level, low, high)

    async def _raw(self, low: datetime, high: datetime) -> datetime | None:
        docs = await read_raw_kept(
            db=self.db,
            instance=self.instance,
            start=low,
            end=high,
            projection=_EXTREME_FIELDS,
            session=self.session,
        )
        times = [moment for doc in docs if flag_of(doc) in self.flags and (moment := dated(doc))]
        return (min if self.lowest else max)(times, default=None)


def _month_start(millis: int) -> int:
    moment = _time(millis)
    return to_millis(moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0))


# --- instance summaries -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class InstanceCounts:
    total_messages: int
    last_message_at: datetime | None


async def read_instance_counts(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    session: AsyncClientSession | None = None,
) -> dict[ObjectId, InstanceCounts]:
    """Each instance's message count and last dated message, from its rollup document."""
    refs = distinct_instances(instances)
    with translate_driver_errors():
        docs = await instance_docs(db=db, ids=[ref.id for ref in refs], session=session)
    counts = {}
    for ref in refs:
        doc, flags = docs.get(ref.id, {}), _flags(ref)
        total = sum(int(_get(doc, f"c.{flag}.n") or 0) for flag in flags)
        counts[ref.id] = InstanceCounts(total, max(_stored(doc, "last", flags), default=None))
    return counts


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value
