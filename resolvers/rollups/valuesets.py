"""Distinct values of whole UTC days and hours, kept for the unique counts of a range.

A range's unique counts are the sizes of unions of its messages' values. A union cannot be
taken apart again, so unlike a counter it cannot come from signed sums of buckets: a range
is cut into whole UTC days, whole hours towards its ends and at most an hour of raw
messages at each end (``value_cover``), and the values of each piece are added up.

The values of a whole day or hour are kept in ``rollup_value_sets``, one document per
instance, level and start: ``z``, the values of its messages per flag and kind (``pack``:
compressed JSON), and ``vv``, the values version of its bucket when they were read. The
consumer never writes them (each write there made it slower, see docs/metrics.md): the
first range to need a day or hour that has ended reads its raw messages and keeps what it
found; later ranges use that while the bucket's ``vv`` is unchanged.

Why a kept set is never stale: every write to the rollups that may change a bucket's
distinct values gives it a new ``vv`` (``Changes.value_marks``, an ObjectId never reused),
and the bucket's ``vv`` is read before the raw messages (in the request's snapshot when the
database has transactions). A change applied after that read gives the bucket a new
``vv``; one applied before it shows in the raw messages; one written but not yet applied
shows in the raw messages and gives a new ``vv`` once applied. A bucket without ``vv`` has
never held a message with values, so its set is empty; a missing bucket holds no message.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import Binary, ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database
from resolvers.rollups.cache import current, kept, kept_each
from resolvers.rollups.contribution import FLAGS, KINDS, Flag, Kind, contribution
from resolvers.rollups.keys import Level, ceil_to, floor_to, to_millis, truncate_to_millis
from resolvers.rollups.store import BUCKETS, VALUE_SETS, iter_raw

__all__ = [
    "MAX_KEPT_BYTES",
    "ValueCover",
    "keep_day",
    "pack",
    "range_values",
    "stale",
    "unpack",
    "value_cover",
]

MAX_KEPT_BYTES = 8 << 20
"""A day or hour whose values take more than this (before compression) is read raw each
time instead: its document stays well below MongoDB's 16 MB."""

_VALUE_FIELDS = {
    "_id": 0,
    "instanceId": 1,
    "timestamp": 1,
    "chatId": 1,
    "isGroup": 1,
    "fromMe": 1,
    "sender": 1,
}

Values = dict[Flag, dict[Kind, set[str]]]
"""Distinct values per flag and kind."""


@dataclass(frozen=True, slots=True)
class ValueCover:
    """A range cut into whole UTC days, whole hours and raw slices ``[low, high)``."""

    days: tuple[datetime, ...]
    hours: tuple[datetime, ...]
    raw: tuple[tuple[datetime, datetime], ...]


def value_cover(start: datetime, end: datetime) -> ValueCover:
    """``[start, end)`` as raw messages up to the first hour boundary, whole hours up to
    the first day boundary, whole days, then whole hours and raw messages up to ``end``
    (which must not be in December 9999: ``ranges.py`` scans such ranges instead)."""
    low, high = truncate_to_millis(start), truncate_to_millis(end)
    if low >= high:
        return ValueCover((), (), ())
    first_hour, last_hour = ceil_to(low, Level.HOUR), floor_to(high, Level.HOUR)
    if first_hour >= last_hour:
        return ValueCover((), (), ((low, high),))
    raw = tuple((a, b) for a, b in ((low, first_hour), (last_hour, high)) if a < b)
    first_day, last_day = ceil_to(first_hour, Level.DAY), floor_to(last_hour, Level.DAY)
    if first_day >= last_day:
        return ValueCover((), _starts(first_hour, last_hour, Level.HOUR), raw)
    hours = _starts(first_hour, first_day, Level.HOUR) + _starts(last_day, last_hour, Level.HOUR)
    return ValueCover(_starts(first_day, last_day, Level.DAY), hours, raw)


def _starts(low: datetime, high: datetime, level: Level) -> tuple[datetime, ...]:
    count = (high - low) // level.width
    return tuple(low + level.width * index for index in range(count))


async def range_values(
    *,
    db: Database,
    instance: ObjectId,
    flags: tuple[Flag, ...],
    start: datetime,
    end: datetime,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> dict[Kind, int]:
    """The number of distinct values of ``instance``'s messages of ``flags`` dated in
    ``[start, end)``, from kept sets where they are current; a day or hour read raw is kept
    for the next range once it has ended (by ``now``), outside ``session``."""
    cover = value_cover(start, end)
    ended: list[tuple[Hashable, dict[Kind, set[str]]]] = []
    rest: dict[Kind, set[str]] = {kind: set() for kind in KINDS}
    for level, starts in ((Level.DAY, cover.days), (Level.HOUR, cover.hours)):
        if not starts:
            continue
        versions = await _versions_at(db, instance, level, starts, session)
        done = {start: v for start, v in versions.items() if start + level.width <= now}
        if done:
            ended.append(await _ended_values(db, instance, level, done, flags, now, session))
        going_on = {start: v for start, v in versions.items() if start not in done}
        await _add_buckets(db, instance, level, going_on, flags, now, session, into=rest)
    for low, high in cover.raw:
        _merge(rest, await _read(db, instance, low, high, session), flags)
    sizes = _ended_sizes(ended)
    return {
        kind: sizes[kind] + len(rest[kind].difference(*(united[kind] for _, united in ended)))
        for kind in KINDS
    }


def _ended_sizes(ended: Sequence[tuple[Hashable, dict[Kind, set[str]]]]) -> dict[Kind, int]:
    """The size of the union of the ended days' and hours' values, per kind; lasting like
    the unions (the kept union of a month's days holds ~70,000 values on the benchmark's
    1M-message instance: counting what the edge hours add to it took ~1 ms a kind)."""
    key = ("sizes", tuple(key for key, _ in ended))
    view = current()
    sizes: dict[Kind, int] | None = None if view is None else view.cache.lasting(key)
    if sizes is None:
        sizes = {kind: _union_size([united[kind] for _, united in ended]) for kind in KINDS}
        if view is not None:
            view.cache.keep_lasting(key, sizes, size=len(sizes))
    return sizes


def _union_size(sets: Sequence[set[str]]) -> int:
    """The size of the union of ``sets``, without copying the largest."""
    if not sets:
        return 0
    largest = max(sets, key=len)
    others = set().union(*(found for found in sets if found is not largest))
    return len(largest) + len(others - largest)


async def _ended_values(
    db: Database,
    instance: ObjectId,
    level: Level,
    versions: Mapping[datetime, ObjectId],
    flags: tuple[Flag, ...],
    now: datetime,
    session: AsyncClientSession | None,
) -> tuple[Hashable, dict[Kind, set[str]]]:
    """The union of the values of buckets that have ended, at ``versions``, and its key;
    with kept reads it lasts (``cache.py``): keyed by the versions, it stays true whatever
    else is written (a range over the last 30 days unites ~500,000 values of the
    benchmark's 1M-message instance into ~70,000)."""
    key = ("values", instance, flags, level.value, tuple(sorted(versions.items())))
    view = current()
    known = None if view is None else view.cache.lasting(key)
    if known is None:
        known = {kind: set() for kind in KINDS}
        stored = await _stored(db, instance, level, _runs(sorted(versions), level), session)
        await _add_buckets(
            db, instance, level, versions, flags, now, session, into=known, stored=stored
        )
        if view is not None:
            size = sum(len(values) for values in known.values())
            view.cache.keep_lasting(key, known, size=size)
    return key, known


async def _add_buckets(
    db: Database,
    instance: ObjectId,
    level: Level,
    versions: Mapping[datetime, ObjectId],
    flags: tuple[Flag, ...],
    now: datetime,
    session: AsyncClientSession | None,
    *,
    into: dict[Kind, set[str]],
    stored: Mapping[datetime, Mapping[str, Any]] | None = None,
) -> None:
    """Add the values of the buckets at ``versions`` (those holding values), from their
    ``stored`` sets where current (only buckets that have ended have one), else read raw
    and kept for the next range."""
    for moment, version in sorted(versions.items()):
        doc = (stored or {}).get(moment)
        if doc is not None and doc.get("vv") == version:
            _add_packed(into, doc["z"], flags)
            continue
        values = await _read(db, instance, moment, moment + level.width, session)
        _merge(into, values, flags)
        # kept at once: a range cut short by its deadline leaves what it read
        await _keep_if_ended(db, instance, level, moment, version, values, now)


async def keep_day(
    *,
    db: Database,
    instance: ObjectId,
    day: datetime,
    now: datetime,
    session: AsyncClientSession | None = None,
) -> int:
    """Read one whole UTC day of ``instance`` raw, once, and keep the set of the day and of
    each of its hours that has ended by ``now`` (the read-ahead of ``warm.py``: a range
    reaching into the day then finds its hours too). Returns the sets kept."""
    end = day + Level.DAY.width
    span = [(day, end)]
    versions = {
        Level.DAY: await _versions(db, instance, Level.DAY, span, session),
        Level.HOUR: await _versions(db, instance, Level.HOUR, span, session),
    }
    hours = await _read_hours(db, instance, day, end, session)
    kept = 0
    for level, moment, values in [(Level.DAY, day, _union(hours.values()))] + [
        (Level.HOUR, hour, values) for hour, values in sorted(hours.items())
    ]:
        version = versions[level].get(moment)
        kept += await _keep_if_ended(db, instance, level, moment, version, values, now)
    return kept


async def _keep_if_ended(
    db: Database,
    instance: ObjectId,
    level: Level,
    start: datetime,
    version: ObjectId | None,
    values: Values,
    now: datetime,
) -> bool:
    """Keep ``values`` as the set of the bucket at ``start`` read at ``version``, unless
    there is no such version (no bucket, or none with values yet), the bucket has not
    ended by ``now``, or they are too large."""
    if version is None or start + level.width > now or _size(values) > MAX_KEPT_BYTES:
        return False
    await db[VALUE_SETS].replace_one(*_keep(instance, level, start, version, values), upsert=True)
    return True


def _no_values() -> Values:
    return {flag: {kind: set() for kind in KINDS} for flag in FLAGS}


def _runs(starts: Sequence[datetime], level: Level) -> list[tuple[datetime, datetime]]:
    """Consecutive ``starts`` as spans ``[first, last + width)``: one range query each."""
    runs: list[tuple[datetime, datetime]] = []
    for moment in starts:
        if runs and runs[-1][1] == moment:
            runs[-1] = (runs[-1][0], moment + level.width)
        else:
            runs.append((moment, moment + level.width))
    return runs


async def _versions(
    db: Database,
    instance: ObjectId,
    level: Level,
    runs: Iterable[tuple[datetime, datetime]],
    session: AsyncClientSession | None,
) -> dict[datetime, ObjectId | None]:
    """The values version of each bucket of ``level`` in ``runs`` (a missing bucket: no
    messages)."""
    found = await _by_start(db[BUCKETS], instance, level, runs, {"vv": 1}, session)
    return {start: doc.get("vv") for start, doc in found.items()}


async def _versions_at(
    db: Database,
    instance: ObjectId,
    level: Level,
    starts: Sequence[datetime],
    session: AsyncClientSession | None,
) -> dict[datetime, ObjectId]:
    """The values version of each bucket of ``level`` at ``starts`` that holds messages
    with values (kept reads first)."""

    async def load(missing: list[datetime]) -> dict[datetime, ObjectId | None]:
        return await _versions(db, instance, level, _runs(missing, level), session)

    found = await kept_each(starts, lambda start: ("vv", instance, level.value, start), load)
    return {start: version for start, version in found.items() if version is not None}


async def _stored(
    db: Database,
    instance: ObjectId,
    level: Level,
    runs: Iterable[tuple[datetime, datetime]],
    session: AsyncClientSession | None,
) -> dict[datetime, Mapping[str, Any]]:
    return await _by_start(db[VALUE_SETS], instance, level, runs, {"vv": 1, "z": 1}, session)


async def _by_start(
    collection: Any,
    instance: ObjectId,
    level: Level,
    runs: Iterable[tuple[datetime, datetime]],
    fields: Mapping[str, int],
    session: AsyncClientSession | None,
) -> dict[datetime, Mapping[str, Any]]:
    """The documents of ``instance`` and ``level`` starting in ``runs`` (one range query
    each), by start."""
    found: dict[datetime, Mapping[str, Any]] = {}
    projection = {"_id": 0, "t": 1, **fields}
    for low, high in runs:
        query = {"i": instance, "l": level.value, "t": {"$gte": low, "$lt": high}}
        async for doc in collection.find(query, projection, session=session):
            found[truncate_to_millis(doc["t"])] = doc
    return found


async def stale(
    *, db: Database, instance: ObjectId, level: Level, start: datetime, end: datetime
) -> list[datetime]:
    """The buckets of ``level`` in ``[start, end)`` that hold values and have no kept set
    of their current version, newest first (what ``warm.py`` reads ahead)."""
    span = [(start, end)]
    versions = await _versions(db, instance, level, span, None)
    sets = await _by_start(db[VALUE_SETS], instance, level, span, {"vv": 1}, None)
    held = {start: version for start, version in versions.items() if version is not None}
    found = [start for start, version in held.items() if sets.get(start, {}).get("vv") != version]
    return sorted(found, reverse=True)


async def _read(
    db: Database,
    instance: ObjectId,
    low: datetime,
    high: datetime,
    session: AsyncClientSession | None,
) -> Values:
    """The distinct values of the raw messages dated in ``[low, high)``, per flag; with
    kept reads (``cache.py``) and the interval inside one UTC hour, the hour's messages
    are read and kept."""
    hour = floor_to(low, Level.HOUR)
    after = hour + Level.HOUR.width
    if current() is None or high > after:
        return _union((await _read_hours(db, instance, low, high, session)).values())
    held = await kept(
        ("raw values", instance, hour), lambda: _raw_parts(db, instance, hour, after, session)
    )
    inside = [part for part in held if low <= part[0] < high]
    return _values_by_hour(inside).get(hour) or _no_values()


async def _read_hours(
    db: Database,
    instance: ObjectId,
    low: datetime,
    high: datetime,
    session: AsyncClientSession | None,
) -> dict[datetime, Values]:
    """``_read`` per UTC hour."""
    return _values_by_hour(await _raw_parts(db, instance, low, high, session))


_Part = tuple[datetime, Flag, frozenset[tuple[Kind, str]]]
"""A raw message's time, flag and values."""


async def _raw_parts(
    db: Database,
    instance: ObjectId,
    low: datetime,
    high: datetime,
    session: AsyncClientSession | None,
) -> list[_Part]:
    """The dated messages of ``instance`` in ``[low, high)`` (``iter_raw`` yields no
    other), as what their values need."""
    found = iter_raw(
        db=db, instance=instance, start=low, end=high, projection=_VALUE_FIELDS, session=session
    )
    parts = [contribution(doc) async for doc in found]
    return [(p.timestamp, p.flag, p.values) for p in parts if p is not None and p.timestamp]


def _values_by_hour(parts: Iterable[_Part]) -> dict[datetime, Values]:
    hours: dict[datetime, Values] = {}
    for moment, flag, held in parts:
        values = hours.setdefault(floor_to(moment, Level.HOUR), _no_values())
        for kind, value in held:
            values[flag][kind].add(value)
    return hours


def _union(parts: Iterable[Values]) -> Values:
    whole = _no_values()
    for values in parts:
        for flag in FLAGS:
            for kind in KINDS:
                whole[flag][kind] |= values[flag][kind]
    return whole


def _merge(found: dict[Kind, set[str]], values: Values, flags: tuple[Flag, ...]) -> None:
    for flag in flags:
        for kind in KINDS:
            found[kind] |= values[flag][kind]


def _size(values: Values) -> int:
    """About the bytes of ``values`` before compression (JSON spends ~3 per value)."""
    held = (value for kinds in values.values() for kept in kinds.values() for value in kept)
    return sum(len(value.encode()) + 3 for value in held)


def _keep(
    instance: ObjectId, level: Level, start: datetime, version: ObjectId | None, values: Values
) -> tuple[dict[str, str], dict[str, Any]]:
    """The filter and the document that keep ``values``."""
    doc: dict[str, Any] = {
        "_id": f"{instance}:{level.value}:{to_millis(start)}",
        "i": instance,
        "l": level.value,
        "t": start,
        "vv": version,
        "z": pack(values),
    }
    return {"_id": doc["_id"]}, doc


def pack(values: Values) -> Binary:
    """``values`` as one compressed JSON blob: SecantusDB copies every element of a document
    it returns, and a day of a busy instance holds tens of thousands of values."""
    plain = {
        flag: {kind: sorted(found) for kind, found in kinds.items()}
        for flag, kinds in values.items()
    }
    return Binary(zlib.compress(json.dumps(plain, separators=(",", ":")).encode(), 1))


def _add_packed(found: dict[Kind, set[str]], blob: bytes, flags: tuple[Flag, ...]) -> None:
    """``_merge`` of ``unpack(blob)`` without making its sets (the hot part of a warm range:
    a day of a busy instance holds ~15,000 values)."""
    plain = json.loads(zlib.decompress(blob))
    for flag in flags:
        for kind, values in plain.get(flag, {}).items():
            found[kind].update(values)


def unpack(blob: bytes) -> Values:
    plain = json.loads(zlib.decompress(blob))
    return {
        flag: {kind: set(plain.get(flag, {}).get(kind, ())) for kind in KINDS} for flag in FLAGS
    }
