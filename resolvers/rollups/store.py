"""Writing a ``Changes`` to the rollup collections (the layout is in docs/metrics.md).

- ``rollup_instances``: ``_id`` = instance; ``c.<flag>.<counter>`` all-time counters,
  ``u.<kind>.a`` / ``u.<kind>.o`` distinct values with messages of any flag / of flag o,
  ``first.<flag>`` / ``last.<flag>`` smallest / largest dated timestamp.
- ``rollup_buckets``: ``i`` instance, ``l`` level (``d`` UTC day, ``h`` hour, ``q``
  quarter hour), ``t`` start, ``c.<flag>.<counter>``, on days and hours ``vv`` (the
  version of their distinct values, for ``valuesets.py``); an hour also keeps the message
  count of each of its quarters, ``q.<0-3>.<flag>``. One small document per bucket with
  messages; the three levels share a collection so one bulk write updates them all.
- ``rollup_values``: ``_id`` = ``<instance>:<kind>:<value>``, ``i``, ``k``, ``v``, and
  ``o`` / ``g`` messages of each flag with that value.

One call costs up to two reads (touched values; stored first/last when a dated message
went away) and one ordered bulk write per collection (SecantusDB spends about a
millisecond per write command, whatever it holds), cut into commands of at most
``BULK`` writes so that no single command holds the server for long (it runs one
operation at a time); a value not stored yet is inserted (a third of an upsert's cost
on SecantusDB). Buckets and values that reach zero are deleted, so nothing accumulates.
A removed first/last is looked up again from the buckets (day, hour, quarter) and at
most a quarter hour of raw messages.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import DeleteOne, InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database
from resolvers.indexes import ensure_indexes
from resolvers.rollups.cache import current, kept, kept_each
from resolvers.rollups.changes import Changes, next_extreme
from resolvers.rollups.contribution import FLAGS, Flag, Kind, dated, flag_of, owner
from resolvers.rollups.keys import Level, ceil_to, floor_to, part_index, truncate_to_millis

__all__ = [
    "BUCKETS",
    "BULK",
    "COLLECTIONS",
    "INSTANCES",
    "VALUES",
    "VALUE_SETS",
    "apply_changes",
    "drop_rollups",
    "find_by_ids",
    "instance_docs",
    "iter_dated",
    "iter_raw",
    "read_raw",
    "read_raw_kept",
    "value_id",
]

INSTANCES = "rollup_instances"
BUCKETS = "rollup_buckets"
VALUES = "rollup_values"
VALUE_SETS = "rollup_value_sets"
COLLECTIONS = (INSTANCES, BUCKETS, VALUES, VALUE_SETS)
"""Every collection that holds rollups (not the consumer's state or lease)."""

_MS = timedelta(milliseconds=1)
IN_BATCH = 50
"""Ids per ``$in`` on ``_id``: SecantusDB's cost grows with the square of the list
(1,000 ids cost 0.7 ms each, 50 ids 0.07 ms each)."""
RAW_BATCH = 500
"""Raw messages per reply at most: SecantusDB runs one operation at a time and spends
~0.1 ms a message, so a reply of its default size (16 MB, a day of a busy instance) held
every other request for a second; 500 hold it ~60 ms."""
BULK = 1_000
"""Writes per command at most: about half a second of SecantusDB's time."""
_Update = InsertOne[Any] | UpdateOne | DeleteOne
Pause = Callable[[], Awaitable[None]]
"""Called between the commands of a long write (the consumer renews its lease there)."""


def value_id(instance: ObjectId, kind: Kind, value: str) -> str:
    return f"{instance}:{kind}:{value}"


async def apply_changes(
    *,
    db: Database,
    changes: Changes,
    session: AsyncClientSession | None = None,
    pause: Pause | None = None,
) -> None:
    """Write every effect of ``changes``: counters, distinct values and their counts,
    first/last (looked up again when an extreme went away). Inside the caller's
    transaction when ``session`` has one; ``pause`` runs between write commands."""
    if changes.is_empty():
        return
    stored_values = await _read_values(db=db, changes=changes, session=session)
    stored_extremes = await _read_extremes(db=db, changes=changes, session=session)
    stored_buckets = await _read_buckets(db=db, changes=changes, session=session)
    write = _Writer(session=session, pause=pause)
    await write(db[VALUES], _value_ops(changes, stored_values))
    await write(db[BUCKETS], _bucket_ops(changes, stored_buckets))
    unique = _unique_increments(changes, stored_values)
    plan = _ExtremePlan(changes, stored_extremes)
    await write(db[INSTANCES], _instance_ops(changes, unique, plan))
    for instance, flag, lowest in plan.lookups:
        found = await _look_up_extreme(
            db=db, instance=instance, flag=flag, lowest=lowest, session=session
        )
        await _set_extreme(
            db=db, instance=instance, path=_extreme_path(flag, lowest), value=found, session=session
        )


async def drop_rollups(
    *,
    db: Database,
    instances: Collection[ObjectId] | None = None,
    session: AsyncClientSession | None = None,
) -> None:
    """Delete the rollups of ``instances`` (None = of every instance: outside a
    transaction the collections are dropped and their indexes made again, a command each
    where deleting is a write per document; SecantusDB never commits a transaction with
    more writes than its oplog holds)."""
    if instances is None and session is None:
        for name in COLLECTIONS:
            await db.drop_collection(name)
        await ensure_indexes(db)
        return
    if instances is None:
        for name in COLLECTIONS:
            await db[name].delete_many({}, session=session)
        return
    for instance in instances:
        await db[INSTANCES].delete_one({"_id": instance}, session=session)
        for name in (BUCKETS, VALUES, VALUE_SETS):
            await db[name].delete_many({"i": instance}, session=session)


class _Writer:
    """Ordered bulk writes, ``BULK`` at a time, with ``pause`` between two commands."""

    def __init__(self, *, session: AsyncClientSession | None, pause: Pause | None) -> None:
        self._session, self._pause, self._written = session, pause, False

    async def __call__(self, collection: Any, ops: list[_Update]) -> None:
        for start in range(0, len(ops), BULK):
            if self._written and self._pause is not None:
                await self._pause()
            chunk = ops[start : start + BULK]
            await collection.bulk_write(chunk, ordered=True, session=self._session)
            self._written = True


# --- distinct values ----------------------------------------------------------------


async def _read_values(
    *, db: Database, changes: Changes, session: AsyncClientSession | None
) -> dict[str, Mapping[str, Any]]:
    ids = [value_id(*key) for key in changes.value_counts()]
    found: dict[str, Mapping[str, Any]] = {}
    async for doc in find_by_ids(db[VALUES], ids, {"o": 1, "g": 1}, session=session):
        found[doc["_id"]] = doc
    return found


async def instance_docs(
    *, db: Database, ids: Sequence[ObjectId], session: AsyncClientSession | None = None
) -> dict[ObjectId, dict[str, Any]]:
    """The ``rollup_instances`` documents of ``ids`` that exist (kept reads first)."""

    async def load(missing: list[ObjectId]) -> dict[ObjectId, dict[str, Any]]:
        found = find_by_ids(db[INSTANCES], missing, session=session)
        return {doc["_id"]: doc async for doc in found}

    return await kept_each(ids, lambda instance: ("instance", instance), load)


async def find_by_ids(
    collection: Any,
    ids: Sequence[Any],
    projection: Mapping[str, Any] | None = None,
    *,
    session: AsyncClientSession | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """The documents with these ``_id``s, ``IN_BATCH`` ids per query."""
    for start in range(0, len(ids), IN_BATCH):
        query = {"_id": {"$in": list(ids[start : start + IN_BATCH])}}
        async for doc in collection.find(query, projection, session=session):
            yield doc


def _counts(doc: Mapping[str, Any] | None) -> tuple[int, int]:
    return (0, 0) if doc is None else (int(doc.get("o", 0)), int(doc.get("g", 0)))


def _new_counts(old: tuple[int, int], delta: Mapping[Flag, int]) -> tuple[int, int]:
    return old[0] + delta.get("o", 0), old[1] + delta.get("g", 0)


def _value_ops(changes: Changes, stored: Mapping[str, Mapping[str, Any]]) -> list[_Update]:
    ops: list[_Update] = []
    for (instance, kind, value), delta in changes.value_counts().items():
        key = value_id(instance, kind, value)
        new = _new_counts(_counts(stored.get(key)), delta)
        if new == (0, 0):
            if key in stored:
                ops.append(DeleteOne({"_id": key}))
            continue
        if key not in stored:
            doc = {"_id": key, "i": instance, "k": kind, "v": value, "o": new[0], "g": new[1]}
            ops.append(InsertOne(doc))
            continue
        update = {
            "$set": {"o": new[0], "g": new[1]},
            "$setOnInsert": {"i": instance, "k": kind, "v": value},
        }
        ops.append(UpdateOne({"_id": key}, update, upsert=True))
    return ops


def _unique_increments(
    changes: Changes, stored: Mapping[str, Mapping[str, Any]]
) -> dict[ObjectId, dict[str, int]]:
    """``u.<kind>.a`` / ``u.<kind>.o`` changes: values whose count crossed zero."""
    increments: dict[ObjectId, dict[str, int]] = {}
    for key, delta in changes.value_counts().items():
        instance, kind, _ = key
        old = _counts(stored.get(value_id(*key)))
        new = _new_counts(old, delta)
        entry = increments.setdefault(instance, {})
        for path, before, after in (
            (f"u.{kind}.a", sum(old) > 0, sum(new) > 0),
            (f"u.{kind}.o", old[0] > 0, new[0] > 0),
        ):
            entry[path] = entry.get(path, 0) + int(after) - int(before)
    return increments


# --- counters -----------------------------------------------------------------------


def _increments(deltas: Mapping[str, int]) -> dict[str, int]:
    """``$inc`` of counter deltas, always naming both ``n`` so emptiness is queryable."""
    return {"c.o.n": 0, "c.g.n": 0, **{f"c.{path}": delta for path, delta in deltas.items()}}


_EMPTY = {"c.o.n": {"$lte": 0}, "c.g.n": {"$lte": 0}}


def _shrinks(deltas: Mapping[str, int]) -> bool:
    return any(deltas.get(f"{flag}.n", 0) < 0 for flag in FLAGS)


_BucketId = tuple[str, ObjectId, datetime]
"""(level, instance, start)."""


async def _read_buckets(
    *, db: Database, changes: Changes, session: AsyncClientSession | None
) -> set[_BucketId] | None:
    """Which touched buckets exist, when ``changes`` only add messages (a build): the
    others are inserted. None otherwise: every bucket is upserted (a batch of events
    touches a few buckets, which mostly exist)."""
    if not changes.adds_only:
        return None
    wanted: dict[tuple[str, ObjectId], list[datetime]] = {}
    for level in Level:
        for instance, start in {*changes.bucket_counters(level), *_part_counts(changes, level)}:
            wanted.setdefault((level.value, instance), []).append(start)
    found: set[_BucketId] = set()
    for (name, instance), starts in wanted.items():
        for first in range(0, len(starts), IN_BATCH):
            query = {"i": instance, "l": name, "t": {"$in": starts[first : first + IN_BATCH]}}
            cursor = db[BUCKETS].find(query, {"_id": 0, "t": 1}, session=session)
            found.update([(name, instance, truncate_to_millis(doc["t"])) async for doc in cursor])
    return found


def _bucket_ops(changes: Changes, stored: set[_BucketId] | None) -> list[_Update]:
    """Counter increments per bucket; a bucket whose distinct values may have changed also
    gets ``vv``, a values version new to this call (an ObjectId: never reused, so a bucket
    deleted and made again never shows an old version)."""
    ops: list[_Update] = []
    version = ObjectId()
    for level in Level:
        counters, parts = changes.bucket_counters(level), _part_counts(changes, level)
        marked = changes.value_marks(level)
        # a message moving between the hours of one day changes only the day's parts
        for instance, start in sorted({*counters, *parts, *marked}):
            deltas = counters.get((instance, start), {})
            key = {"i": instance, "l": level.value, "t": start}
            part_counts = parts.get((instance, start), {})
            stamp = {"vv": version} if (instance, start) in marked else {}
            if not deltas and not part_counts:  # values changed, not counts (a new chatId)
                ops.append(UpdateOne(key, {"$set": stamp}))
                continue
            increments = {**_increments(deltas), **part_counts}
            if stored is not None and (level.value, instance, start) not in stored:
                ops.append(InsertOne(_nested(key, increments) | stamp))
                continue
            update: dict[str, Any] = {"$inc": increments}
            if stamp:
                update["$set"] = stamp
            ops.append(UpdateOne(key, update, upsert=True))
            if _shrinks(deltas):
                ops.append(DeleteOne({**key, **_EMPTY}))
    return ops


def _nested(doc: Mapping[str, Any], fields: Mapping[str, int]) -> dict[str, Any]:
    """``doc`` with dotted ``fields`` as nested documents (what ``$inc`` would make)."""
    made: dict[str, Any] = dict(doc)
    for path, value in fields.items():
        *parents, leaf = path.split(".")
        node = made
        for name in parents:
            node = node.setdefault(name, {})
        node[leaf] = value
    return made


def _part_counts(changes: Changes, level: Level) -> dict[tuple[ObjectId, datetime], dict[str, int]]:
    """``n.<index>.<flag>`` increments of each bucket of ``level``: the message counts of
    the finer buckets it is cut into (a month's days, a day's hours, an hour's quarters)."""
    found: dict[tuple[ObjectId, datetime], dict[str, int]] = {}
    if level.finer is None:
        return found
    for (instance, start), deltas in changes.bucket_counters(level.finer).items():
        index = part_index(start, level)
        for flag in FLAGS:
            if deltas.get(f"{flag}.n"):
                entry = found.setdefault((instance, floor_to(start, level)), {})
                entry[f"n.{index}.{flag}"] = deltas[f"{flag}.n"]
    return found


def _instance_ops(
    changes: Changes, unique: Mapping[ObjectId, Mapping[str, int]], plan: _ExtremePlan
) -> list[_Update]:
    ops: list[_Update] = []
    counters = changes.instance_counters()
    for instance in changes.instances:
        deltas = counters.get(instance, {})
        increments = _increments(deltas)
        increments.update((path, n) for path, n in unique.get(instance, {}).items() if n)
        update: dict[str, Any] = {"$inc": increments, **plan.updates.get(instance, {})}
        ops.append(UpdateOne({"_id": instance}, update, upsert=True))
        if _shrinks(deltas):
            ops.append(DeleteOne({"_id": instance, **_EMPTY}))
    return ops


# --- first and last -----------------------------------------------------------------


def _extreme_path(flag: Flag, lowest: bool) -> str:
    return f"{'first' if lowest else 'last'}.{flag}"


async def _read_extremes(
    *, db: Database, changes: Changes, session: AsyncClientSession | None
) -> dict[ObjectId, Mapping[str, Any]]:
    """Stored first/last of the instances that lost a dated message (only they need it)."""
    losing = sorted(
        {instance for (instance, _), times in changes.timestamps().items() if _loses(times)}
    )
    if not losing:
        return {}
    found = find_by_ids(db[INSTANCES], losing, {"first": 1, "last": 1}, session=session)
    return {doc["_id"]: doc async for doc in found}


def _loses(times: Mapping[datetime, int]) -> bool:
    return any(net < 0 for net in times.values())


class _ExtremePlan:
    """Per instance: ``$min``/``$max``/``$set`` of first/last that follow from the stored
    values and the net changes, and the ``lookups`` that must be drilled down."""

    def __init__(self, changes: Changes, stored: Mapping[ObjectId, Mapping[str, Any]]) -> None:
        self.updates: dict[ObjectId, dict[str, dict[str, datetime]]] = {}
        self.lookups: list[tuple[ObjectId, Flag, bool]] = []
        for (instance, flag), times in changes.timestamps().items():
            for lowest in (True, False):
                self._plan(instance, flag, lowest, times, stored.get(instance))

    def _plan(
        self,
        instance: ObjectId,
        flag: Flag,
        lowest: bool,
        times: Mapping[datetime, int],
        doc: Mapping[str, Any] | None,
    ) -> None:
        name = "first" if lowest else "last"
        read = _loses(times)
        current = (doc or {}).get(name, {}).get(flag) if read else None
        known, value = next_extreme(stored=current, times=times, lowest=lowest)
        if not known:
            self.lookups.append((instance, flag, lowest))
            return
        if value is not None:
            operator = "$set" if read else ("$min" if lowest else "$max")
            entry = self.updates.setdefault(instance, {})
            entry.setdefault(operator, {})[_extreme_path(flag, lowest)] = value


async def _set_extreme(
    *,
    db: Database,
    instance: ObjectId,
    path: str,
    value: datetime | None,
    session: AsyncClientSession | None,
) -> None:
    update = {"$unset": {path: ""}} if value is None else {"$set": {path: value}}
    await db[INSTANCES].update_one({"_id": instance}, update, session=session)


async def _look_up_extreme(
    *,
    db: Database,
    instance: ObjectId,
    flag: Flag,
    lowest: bool,
    session: AsyncClientSession | None,
) -> datetime | None:
    """The smallest or largest dated timestamp of ``instance`` and ``flag``: the first
    month with such messages, its first day, hour and quarter, then the raw messages of
    that quarter. Later buckets are tried when raw data has moved on meanwhile."""
    return await _drill(
        db, instance=instance, flag=flag, lowest=lowest, levels=_DRILL, within=None, session=session
    )


_DRILL = (Level.MONTH, Level.DAY, Level.HOUR, Level.QUARTER)


async def _drill(
    db: Database,
    *,
    instance: ObjectId,
    flag: Flag,
    lowest: bool,
    levels: tuple[Level, ...],
    within: tuple[datetime, datetime] | None,
    session: AsyncClientSession | None,
) -> datetime | None:
    if not levels:
        assert within is not None
        return await _raw_extreme(db, instance, flag, lowest, within, session)
    level, finer = levels[0], levels[1:]
    query: dict[str, Any] = {"i": instance, "l": level.value, f"c.{flag}.n": {"$gt": 0}}
    if within is not None:
        query["t"] = {"$gte": within[0], "$lt": within[1]}
    cursor = db[BUCKETS].find(query, {"_id": 0, "t": 1}, session=session)
    async for doc in cursor.sort("t", 1 if lowest else -1):
        bucket = (doc["t"], ceil_to(doc["t"] + _MS, level))
        found = await _drill(
            db,
            instance=instance,
            flag=flag,
            lowest=lowest,
            levels=finer,
            within=bucket,
            session=session,
        )
        if found is not None:
            return found
    return None


async def _raw_extreme(
    db: Database,
    instance: ObjectId,
    flag: Flag,
    lowest: bool,
    quarter: tuple[datetime, datetime],
    session: AsyncClientSession | None,
) -> datetime | None:
    start, end = quarter
    docs = await read_raw(db=db, instance=instance, start=start, end=end, session=session)
    times = [moment for doc in docs if flag_of(doc) == flag and (moment := dated(doc))]
    return (min if lowest else max)(times, default=None)


_EDGE_FIELDS = {"_id": 0, "instanceId": 1, "isGroup": 1, "timestamp": 1}


async def read_raw_kept(
    *,
    db: Database,
    instance: ObjectId,
    start: datetime,
    end: datetime,
    projection: Mapping[str, Any] = _EDGE_FIELDS,
    session: AsyncClientSession | None = None,
) -> list[dict[str, Any]]:
    """``read_raw``; with kept reads (``cache.py``) and ``[start, end)`` inside one
    quarter hour, the whole quarter is read and kept, and its messages in the interval
    returned."""
    quarter = floor_to(start, Level.QUARTER)
    after = quarter + Level.QUARTER.width
    if current() is None or end > after:
        return await read_raw(
            db=db, instance=instance, start=start, end=end, projection=projection, session=session
        )

    async def load() -> list[dict[str, Any]]:
        return await read_raw(
            db=db,
            instance=instance,
            start=quarter,
            end=after,
            projection=projection,
            session=session,
        )

    docs = await kept(("raw", instance, quarter, tuple(sorted(projection))), load)
    return [doc for doc in docs if (moment := dated(doc)) is not None and start <= moment < end]


async def read_raw(
    *,
    db: Database,
    instance: ObjectId,
    start: datetime,
    end: datetime,
    projection: Mapping[str, Any] | None = _EDGE_FIELDS,
    session: AsyncClientSession | None = None,
) -> list[dict[str, Any]]:
    """Messages of ``instance`` dated in ``[start, end)``: an index range scan on
    instanceId+timestamp. The query also matches an array ``instanceId`` holding the id
    or an array ``timestamp`` holding such a date; those count for no bucket and are
    dropped here. ``projection`` must keep instanceId and timestamp (None = all)."""
    found = iter_raw(
        db=db, instance=instance, start=start, end=end, projection=projection, session=session
    )
    return [doc async for doc in found]


async def iter_raw(
    *,
    db: Database,
    instance: ObjectId,
    start: datetime,
    end: datetime,
    projection: Mapping[str, Any] | None = _EDGE_FIELDS,
    session: AsyncClientSession | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """``read_raw`` one document at a time."""
    found = iter_dated(
        db=db, instance=instance, start=start, end=end, projection=projection, session=session
    )
    async for doc in found:
        yield doc


async def iter_dated(
    *,
    db: Database,
    instance: ObjectId,
    start: datetime | None,
    end: datetime | None,
    projection: Mapping[str, Any] | None = _EDGE_FIELDS,
    session: AsyncClientSession | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """``iter_raw`` where either end may be open (None): one index range read. Without
    both ends it still reads only dates (a range on a date matches nothing else)."""
    bounds: dict[str, datetime] = {}
    if start is not None:
        bounds["$gte"] = start
    if end is not None:
        bounds["$lt"] = end
    if not bounds:
        raise ValueError("iter_dated needs a start or an end")
    query = {"instanceId": instance, "timestamp": bounds}
    found = db.messages.find(query, projection, session=session, batch_size=RAW_BATCH)
    async for doc in found:
        if _inside(doc, instance=instance, start=start, end=end):
            yield doc


def _inside(
    doc: Mapping[str, Any], *, instance: ObjectId, start: datetime | None, end: datetime | None
) -> bool:
    moment = dated(doc)
    if owner(doc) != instance or moment is None:
        return False
    return (start is None or start <= moment) and (end is None or moment < end)
