"""The periodic reconcile: compare the rollups with the raw messages, repair drift.

A pass walks every instance (of ``instances``, or with rollups) in small steps, one
database read of bounded size at a time (the embedded database runs one operation at a
time, so nothing long may hold it):

1. plan: the instance's days with rollups, widened to raw messages dated before the
   first or after the last of them (two index range reads);
2. one step per UTC day from the first to the last: the day's messages, counted as the
   rollups should count them, against its day, hour and quarter buckets;
3. one step per month: the month bucket against the sum of its (repaired) days;
4. the instance: its all-time counters against its months plus its undated messages,
   its distinct-value counts against its values, first and last against its buckets and
   the raw messages of the extreme quarter.

Differences are repaired with ``$inc`` (so a repair and the writer's own deltas add up
in any order) and logged: instance, day, field, before, after.

"As the rollups should count them" depends on the source. The change-stream consumer
writes beside the reconcile: the rollups and ``rollup_state.token`` are read in one
snapshot, the raw messages after it, and a change stream from that token, read until
caught up, says how each message touched since was at the token (its first event's
before image); a repair commits only while the rollups' generation is unchanged. With
the watermark, the leader's own loop runs the steps, so nothing writes beside them; a
day is first brought into the ledger as it is (which finds deleted, moved and missed
messages), then compared.

Known limit: the counts of single distinct values (``rollup_values``) are compared with
the raw data only through the ledger (watermark: message by message); their number per
instance is compared in both modes.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol, TypeVar

from bson import ObjectId
from pymongo import DeleteMany, DeleteOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import OperationFailure
from pymongo.read_concern import ReadConcern

from resolvers.db import Database
from resolvers.rollups.cache import ReadCache
from resolvers.rollups.changes import VALUE_LEVELS, Changes
from resolvers.rollups.contribution import FLAGS, Flag, dated, flag_of, owner
from resolvers.rollups.events import RebuildNeeded, decode_event
from resolvers.rollups.keys import Level, floor_to, part_index
from resolvers.rollups.state import RollupState, read_state
from resolvers.rollups.store import BUCKETS, INSTANCES, VALUE_SETS, VALUES, iter_raw
from resolvers.rollups.watermark import Pair, WatermarkFollower, read_undated
from resolvers.rollups.watermark_state import COUNTED_FIELDS, day_key

__all__ = [
    "ChangeStreamView",
    "Fix",
    "Range",
    "ReconcilePass",
    "ReconcileReport",
    "Repair",
    "WatermarkView",
]

_log = logging.getLogger(__name__)

_DAY = Level.DAY.width
_MIN_DATE = datetime(1, 1, 1, tzinfo=UTC)
_READ = {**dict.fromkeys(COUNTED_FIELDS, 1)}
Document = Mapping[str, Any]
Flat = dict[str, int]
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Repair:
    """A rollup field set right: ``day`` None for the instance's all-time document."""

    instance: ObjectId
    day: datetime | None
    field: str
    before: Any
    after: Any


@dataclass(frozen=True, slots=True)
class Fix:
    """A message the watermark had not counted as it is (deleted, moved, changed, unseen)."""

    instance: ObjectId
    day: datetime | None
    message: Any
    what: str


@dataclass(slots=True)
class ReconcileReport:
    repairs: list[Repair] = field(default_factory=list)
    fixes: list[Fix] = field(default_factory=list)
    instances: int = 0
    steps: int = 0
    aborted: str | None = None


@dataclass(frozen=True, slots=True)
class Range:
    """An instance's messages dated in ``[start, end)``; ``start`` None = undated."""

    instance: ObjectId
    start: datetime | None = None
    end: datetime | None = None

    def holds(self, doc: Document | None) -> bool:
        if doc is None or owner(doc) != self.instance:
            return False
        moment = dated(doc)
        if self.start is None or self.end is None:
            return moment is None
        return moment is not None and self.start <= moment < self.end


Reader = Callable[[AsyncClientSession | None], Awaitable[_T]]


class Snapshot(Protocol):
    @property
    def generation(self) -> int: ...


class View(Protocol):
    """How a step sees the rollups and the messages they should count."""

    async def read(self, reader: Reader[_T]) -> tuple[_T, Snapshot] | None:
        """The rollups as ``reader`` reads them, consistently; None: not ready."""

    async def docs(
        self, snapshot: Snapshot, ranges: Sequence[Range]
    ) -> tuple[dict[Range, list[Document]], list[Pair]] | None:
        """The messages of each range as the rollups read by ``snapshot`` should count
        them, and message changes applied meanwhile (watermark); None: cannot tell."""

    async def write(
        self, snapshot: Snapshot, instance: ObjectId, ops: Mapping[str, list[Any]]
    ) -> bool:
        """Apply repair operations per collection; False when the rollups were rebuilt."""


# --- the change-stream source ---------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _StreamSnapshot:
    generation: int
    token: Mapping[str, Any]


class ChangeStreamView:
    """The consumer writes beside the reconcile (see the module docstring)."""

    def __init__(
        self, *, db: Database, max_events: int = 20_000, reads: ReadCache | None = None
    ) -> None:
        self._db = db
        self._max_events = max_events
        self._reads = reads or ReadCache(0)
        """The consumer's kept reads, which each repair forgets."""

    async def read(self, reader: Reader[_T]) -> tuple[_T, Snapshot] | None:
        async with (
            self._db.client.start_session(causal_consistency=False) as session,
            await session.start_transaction(read_concern=ReadConcern("snapshot")),
        ):
            state = await read_state(db=self._db, session=session)
            if state is None or state.status != "ready" or state.token is None:
                return None
            found = await reader(session)
        return found, _StreamSnapshot(state.generation, state.token)

    async def docs(
        self, snapshot: Snapshot, ranges: Sequence[Range]
    ) -> tuple[dict[Range, list[Document]], list[Pair]] | None:
        assert isinstance(snapshot, _StreamSnapshot)
        raw = {r: await _read_range(self._db, r) for r in ranges}
        firsts = await self._first_befores(snapshot.token)
        if firsts is None:
            return None
        found: dict[Range, list[Document]] = {}
        for r, docs in raw.items():
            kept = [doc for doc in docs if doc["_id"] not in firsts]
            found[r] = kept + [doc for doc in firsts.values() if doc and r.holds(doc)]
        return found, []

    async def _first_befores(self, token: Mapping[str, Any]) -> dict[Any, Document | None] | None:
        """Each message changed since ``token``, as it was at ``token`` (None: absent)."""
        firsts: dict[Any, Document | None] = {}
        try:
            stream = await self._db.messages.watch(
                full_document_before_change="whenAvailable",
                show_expanded_events=True,
                resume_after=token,
                max_await_time_ms=1,
            )
        except OperationFailure as exc:
            _log.warning("rollups reconcile: cannot read the changes since the rollups: %s", exc)
            return None
        try:
            for _ in range(self._max_events):
                event = await stream.try_next()
                if event is None:
                    return firsts
                change = decode_event(event)
                if change is not None:
                    firsts.setdefault(event["documentKey"]["_id"], change.before)
            _log.warning("rollups reconcile: the consumer is too far behind; step skipped")
            return None
        except (RebuildNeeded, OperationFailure) as exc:
            _log.warning("rollups reconcile: step skipped: %s", exc)
            return None
        finally:
            await stream.close()

    async def write(
        self, snapshot: Snapshot, instance: ObjectId, ops: Mapping[str, list[Any]]
    ) -> bool:
        with self._reads.writing():
            async with (
                self._db.client.start_session(causal_consistency=False) as session,
                await session.start_transaction(),
            ):
                state = await read_state(db=self._db, session=session)
                if not _same_rollups(state, snapshot.generation):
                    await session.abort_transaction()
                    return False
                for name, operations in ops.items():
                    if operations:
                        await self._db[name].bulk_write(operations, ordered=True, session=session)
        return True


def _same_rollups(state: RollupState | None, generation: int) -> bool:
    return state is not None and state.generation == generation and state.status == "ready"


async def _read_range(db: Database, r: Range) -> list[Document]:
    if r.start is None or r.end is None:
        return [doc async for doc in read_undated(db=db, instance=r.instance)]
    found = iter_raw(db=db, instance=r.instance, start=r.start, end=r.end, projection=_READ)
    return [doc async for doc in found]


# --- the watermark source -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _LoopSnapshot:
    generation: int = 0


class WatermarkView:
    """The leader's watermark loop runs the steps: nothing writes beside them."""

    def __init__(self, *, db: Database, follower: WatermarkFollower) -> None:
        self._db = db
        self._follower = follower

    async def read(self, reader: Reader[_T]) -> tuple[_T, Snapshot] | None:
        return await reader(None), _LoopSnapshot()

    async def docs(
        self, snapshot: Snapshot, ranges: Sequence[Range]
    ) -> tuple[dict[Range, list[Document]], list[Pair]] | None:
        found: dict[Range, list[Document]] = {}
        pairs: list[Pair] = []
        for r in ranges:
            if r.start is None or r.end is None:
                synced = await self._follower.sync_undated(instance=r.instance)
            else:
                day = floor_to(r.start, Level.DAY)
                end = max(floor_to(r.end - timedelta(milliseconds=1), Level.DAY) + _DAY, day + _DAY)
                synced = await self._follower.sync_days(instance=r.instance, start=day, end=end)
            found[r] = [doc for doc in synced.docs if r.holds(doc)]
            pairs += synced.pairs
        return found, pairs

    async def write(
        self, snapshot: Snapshot, instance: ObjectId, ops: Mapping[str, list[Any]]
    ) -> bool:
        async def operations() -> None:
            for name, operations in ops.items():
                if operations:
                    await self._db[name].bulk_write(operations, ordered=True)

        await self._follower.repair(operations, {instance})
        return True


# --- flattening -----------------------------------------------------------------------


def _flat(doc: Mapping[str, Any] | None, roots: Iterable[str]) -> Flat:
    """The integer fields under ``roots`` as dotted paths."""
    found: Flat = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, Mapping):
            for key, item in value.items():
                walk(f"{prefix}.{key}", item)
        elif isinstance(value, int) and not isinstance(value, bool):
            found[prefix] = value

    for root in roots:
        if doc is not None and root in doc:
            walk(root, doc[root])
    return found


def _differences(stored: Flat, expected: Flat) -> dict[str, tuple[int, int]]:
    return {
        path: (stored.get(path, 0), expected.get(path, 0))
        for path in sorted(stored.keys() | expected.keys())
        if stored.get(path, 0) != expected.get(path, 0)
    }


def _counters(deltas: Mapping[str, int]) -> Flat:
    return {f"c.{path}": n for path, n in deltas.items() if n}


def _expected_buckets(docs: Iterable[Document], levels: Sequence[Level]) -> dict[Any, Flat]:
    """``(level, start)`` -> the fields its bucket should hold, for these messages."""
    changes = Changes()
    for doc in docs:
        changes.add(before=None, after=doc)
    buckets: dict[Any, Flat] = {}
    for level in levels:
        for (_, start), deltas in changes.bucket_counters(level).items():
            buckets.setdefault((level, start), {}).update(_counters(deltas))
        if level.finer is None:
            continue
        for (_, start), deltas in changes.bucket_counters(level.finer).items():
            parent = buckets.setdefault((level, floor_to(start, level)), {})
            for flag in FLAGS:
                if deltas.get(f"{flag}.n"):
                    parent[f"n.{part_index(start, level)}.{flag}"] = deltas[f"{flag}.n"]
    return buckets


def _bucket_ops(
    instance: ObjectId,
    key: tuple[Level, datetime],
    stored: Flat | None,
    expected: Flat,
) -> list[Any]:
    level, start = key
    query = {"i": instance, "l": level.value, "t": start}
    if not any(expected.values()):
        return [] if stored is None else [DeleteOne(query)]
    diff = {p: e - s for p, (s, e) in _differences(stored or {}, expected).items()}
    if not diff:
        return []
    update: dict[str, Any] = {"$inc": diff}
    if level in VALUE_LEVELS:  # its messages were not what the rollups said: nor its values
        update["$set"] = {"vv": ObjectId()}
    return [UpdateOne(query, update, upsert=True)]


# --- a pass ---------------------------------------------------------------------------

Step = Callable[[], Awaitable[None]]


class _Aborted(Exception):
    """The rollups are not ready (a rebuild started): the pass ends."""


class ReconcilePass:
    """One reconcile of every instance (or of ``instances``), a step at a time."""

    def __init__(
        self, *, db: Database, view: View, instances: Sequence[ObjectId] | None = None
    ) -> None:
        self._db = db
        self._view = view
        self.report = ReconcileReport()
        self._queue: deque[Step] = deque()
        if instances is None:
            self._queue.append(self._list)
        else:
            self._queue.extend(self._planner(i) for i in instances)
            self.report.instances = len(instances)

    @property
    def done(self) -> bool:
        return not self._queue or self.report.aborted is not None

    async def step(self) -> bool:
        """Run the next step; False when the pass is over."""
        if self.done:
            return False
        try:
            await self._queue.popleft()()
        except _Aborted as exc:
            self.report.aborted = str(exc)
            _log.info("rollups reconcile: stopped (%s)", exc)
            return False
        self.report.steps += 1
        if self.done:
            self._finish()
        return not self.done

    async def run(self) -> ReconcileReport:
        while await self.step():
            pass
        return self.report

    def _finish(self) -> None:
        report = self.report
        _log.info(
            "rollups reconcile: done",
            extra={
                "instances": report.instances,
                "repaired": len(report.repairs),
                "messages": len(report.fixes),
            },
        )

    async def _list(self) -> None:
        known = [doc["_id"] async for doc in self._db.instances.find({}, {"_id": 1})]
        kept = [doc["_id"] async for doc in self._db[INSTANCES].find({}, {"_id": 1})]
        ids = sorted({*known, *kept})
        self.report.instances = len(ids)
        self._queue.extend(self._planner(i) for i in ids)

    def _planner(self, instance: ObjectId) -> Step:
        async def plan() -> None:
            await self._plan(instance)

        return plan

    async def _read(self, reader: Reader[_T]) -> tuple[_T, Snapshot]:
        found = await self._view.read(reader)
        if found is None:
            raise _Aborted("the rollups are not ready")
        return found

    # --- planning -------------------------------------------------------------------

    async def _plan(self, instance: ObjectId) -> None:
        async def days_and_months(
            session: AsyncClientSession | None,
        ) -> tuple[set[datetime], set[datetime]]:
            query = {"i": instance, "l": {"$in": ["d", "m"]}}
            days: set[datetime] = set()
            months: set[datetime] = set()
            async for doc in self._db[BUCKETS].find(query, {"l": 1, "t": 1}, session=session):
                (days if doc["l"] == "d" else months).add(doc["t"])
            return days, months

        (days, months), _ = await self._read(days_and_months)
        days |= await self._raw_days(instance, days)
        steps: list[Step] = []
        if days:
            day = min(days)
            while day <= max(days):
                steps.append(functools.partial(self._day, instance, day))
                months.add(floor_to(day, Level.MONTH))
                day += _DAY
        steps += [functools.partial(self._month, instance, month) for month in sorted(months)]
        steps.append(functools.partial(self._instance, instance))
        self._queue.extendleft(reversed(steps))

    async def _raw_days(self, instance: ObjectId, days: set[datetime]) -> set[datetime]:
        """Days of raw messages outside the rollups' first to last day."""
        edges = [{"$lt": min(days)}, {"$gte": max(days) + _DAY}] if days else []
        bounds = edges or [{"$gte": _MIN_DATE}]
        found: set[datetime] = set()
        for bound in bounds:
            query = {"instanceId": instance, "timestamp": bound}
            async for doc in self._db.messages.find(query, {"instanceId": 1, "timestamp": 1}):
                moment = dated(doc)
                if moment is not None and owner(doc) == instance:
                    found.add(floor_to(moment, Level.DAY))
        return found

    # --- a day ----------------------------------------------------------------------

    async def _day(self, instance: ObjectId, day: datetime) -> None:
        async def buckets(session: AsyncClientSession | None) -> dict[Any, Flat]:
            found: dict[Any, Flat] = {}
            for level, bound in (
                (Level.DAY, day),
                (Level.HOUR, {"$gte": day, "$lt": day + _DAY}),
                (Level.QUARTER, {"$gte": day, "$lt": day + _DAY}),
            ):
                query = {"i": instance, "l": level.value, "t": bound}
                async for doc in self._db[BUCKETS].find(query, session=session):
                    found[(level, doc["t"])] = _flat(doc, ("c", "n"))
            return found

        before, snapshot = await self._read(buckets)
        r = Range(instance, day, day + _DAY)
        seen = await self._view.docs(snapshot, [r])
        if seen is None:
            return
        docs, pairs = seen
        self._record_fixes(instance, pairs)
        stored = before if not pairs else (await self._read(buckets))[0]
        expected = _expected_buckets(docs[r], (Level.DAY, Level.HOUR, Level.QUARTER))
        ops = [
            op
            for key in sorted(stored.keys() | expected.keys(), key=_bucket_order)
            for op in _bucket_ops(instance, key, stored.get(key), expected.get(key, {}))
        ]
        await self._repair(snapshot, instance, {BUCKETS: ops})
        for key in sorted(before.keys() | expected.keys(), key=_bucket_order):
            self._record(instance, day, key, before.get(key, {}), expected.get(key, {}))

    def _record_fixes(self, instance: ObjectId, pairs: Sequence[Pair]) -> None:
        for message, was, now in pairs:
            place = day_key(was) or day_key(now)
            day = None if place is None else place[1]
            what = _what(was, now)
            self.report.fixes.append(Fix(instance, day, message, what))
            _log.warning(
                "rollups reconcile: message %s %s",
                message,
                what,
                extra={"instance": str(instance), "day": _iso(day), "messageId": str(message)},
            )

    def _record(
        self,
        instance: ObjectId,
        day: datetime | None,
        key: tuple[Level, datetime],
        before: Flat,
        after: Flat,
    ) -> None:
        level, start = key
        for path, (was, now) in _differences(before, after).items():
            name = f"{BUCKETS} {level.value} {_iso(start)} {path}"
            self._log_repair(Repair(instance, day, name, was, now))

    def _log_repair(self, repair: Repair) -> None:
        self.report.repairs.append(repair)
        _log.warning(
            "rollups reconcile: repaired %s of instance %s: %s -> %s",
            repair.field,
            repair.instance,
            repair.before,
            repair.after,
            extra={
                "instance": str(repair.instance),
                "day": _iso(repair.day),
                "field": repair.field,
                "before": repair.before,
                "after": repair.after,
            },
        )

    async def _repair(
        self, snapshot: Snapshot, instance: ObjectId, ops: Mapping[str, list[Any]]
    ) -> None:
        if not any(ops.values()):
            return
        # the instance's kept value sets may have been read from the same drift
        ops = {**ops, VALUE_SETS: [DeleteMany({"i": instance})]}
        if not await self._view.write(snapshot, instance, ops):
            raise _Aborted("the rollups were rebuilt during the reconcile")

    # --- a month --------------------------------------------------------------------

    async def _month(self, instance: ObjectId, month: datetime) -> None:
        end = floor_to(month + timedelta(days=31), Level.MONTH)

        async def month_and_days(session: AsyncClientSession | None) -> tuple[Flat | None, Flat]:
            stored: Flat | None = None
            expected: Flat = {}
            query = {"i": instance, "l": {"$in": ["m", "d"]}, "t": {"$gte": month, "$lt": end}}
            async for doc in self._db[BUCKETS].find(query, session=session):
                if doc["l"] == "m":
                    stored = _flat(doc, ("c", "n")) if doc["t"] == month else stored
                    continue
                counters = _flat(doc, ("c",))
                for path, n in counters.items():
                    expected[path] = expected.get(path, 0) + n
                for flag in FLAGS:
                    if counters.get(f"c.{flag}.n"):
                        index = part_index(doc["t"], Level.MONTH)
                        expected[f"n.{index}.{flag}"] = counters[f"c.{flag}.n"]
            return stored, expected

        (stored, expected), snapshot = await self._read(month_and_days)
        key = (Level.MONTH, month)
        await self._repair(
            snapshot, instance, {BUCKETS: _bucket_ops(instance, key, stored, expected)}
        )
        self._record(instance, month, key, stored or {}, expected)

    # --- the instance ---------------------------------------------------------------

    async def _instance(self, instance: ObjectId) -> None:
        found, snapshot = await self._read(
            lambda session: self._instance_rollups(instance, session)
        )
        doc, months, uniques, extremes = found
        quarters = {q for q in extremes.values() if q is not None}
        ranges = [Range(instance), *(Range(instance, q, q + Level.QUARTER.width) for q in quarters)]
        seen = await self._view.docs(snapshot, ranges)
        if seen is None:
            return
        docs, pairs = seen
        self._record_fixes(instance, pairs)
        if pairs:
            found, _ = await self._read(lambda session: self._instance_rollups(instance, session))
            doc, months, uniques, extremes = found
        undated = Changes()
        for message in docs[Range(instance)]:
            undated.add(before=None, after=message)
        expected = dict(months)
        for path, n in _counters(undated.instance_counters().get(instance, {})).items():
            expected[path] = expected.get(path, 0) + n
        expected.update(uniques)
        stored = _flat(doc, ("c", "u"))
        width = Level.QUARTER.width
        times = {
            path: _extreme(docs, None if q is None else Range(instance, q, q + width), path)
            for path, q in extremes.items()
        }
        await self._repair_instance(snapshot, instance, doc, stored, expected, times)

    async def _instance_rollups(
        self, instance: ObjectId, session: AsyncClientSession | None
    ) -> tuple[Document | None, Flat, Flat, dict[str, datetime | None]]:
        doc = await self._db[INSTANCES].find_one({"_id": instance}, session=session)
        months: Flat = {}
        month_docs = []
        async for month in self._db[BUCKETS].find({"i": instance, "l": "m"}, session=session):
            month_docs.append(month)
            for path, n in _flat(month, ("c",)).items():
                months[path] = months.get(path, 0) + n
        uniques: Flat = {}
        async for value in self._db[VALUES].find(
            {"i": instance}, {"k": 1, "o": 1, "g": 1}, session=session
        ):
            o, g = int(value.get("o", 0)), int(value.get("g", 0))
            for suffix, present in (("a", o + g > 0), ("o", o > 0)):
                if present:
                    path = f"u.{value.get('k')}.{suffix}"
                    uniques[path] = uniques.get(path, 0) + 1
        extremes = {
            f"{name}.{flag}": await self._extreme_quarter(
                instance, flag, lowest=name == "first", months=month_docs, session=session
            )
            for name in ("first", "last")
            for flag in FLAGS
        }
        return doc, months, uniques, extremes

    async def _extreme_quarter(
        self,
        instance: ObjectId,
        flag: Flag,
        *,
        lowest: bool,
        months: Sequence[Document],
        session: AsyncClientSession | None,
    ) -> datetime | None:
        """The quarter hour holding the first (or last) message of ``flag``, by the
        buckets' part counts (None: no dated message of that flag)."""
        holding = [m for m in months if _flat(m, ("c",)).get(f"c.{flag}.n", 0) > 0]
        if not holding:
            return None
        bucket: Document | None = (min if lowest else max)(holding, key=lambda m: m["t"])
        for level in (Level.MONTH, Level.DAY, Level.HOUR):
            assert bucket is not None
            finer = level.finer
            assert finer is not None
            parts = _flat(bucket, ("n",))
            indexes = [
                int(p.split(".")[1]) for p, n in parts.items() if p.endswith(f".{flag}") and n > 0
            ]
            if not indexes:
                return None
            start: datetime = bucket["t"] + (min if lowest else max)(indexes) * finer.width
            if finer is Level.QUARTER:
                return start
            query = {"i": instance, "l": finer.value, "t": start}
            bucket = await self._db[BUCKETS].find_one(query, session=session)
            if bucket is None:
                return None
        return None

    async def _repair_instance(
        self,
        snapshot: Snapshot,
        instance: ObjectId,
        doc: Document | None,
        stored: Flat,
        expected: Flat,
        times: Mapping[str, Any],
    ) -> None:
        diff = {p: e - s for p, (s, e) in _differences(stored, expected).items()}
        current = {
            f"{name}.{flag}": ((doc or {}).get(name) or {}).get(flag)
            for name in ("first", "last")
            for flag in FLAGS
        }
        # a quarter whose messages do not show the flag after all: leave that one alone
        wanted = {
            path: current[path] if times[path] is _UNKNOWN else times[path] for path in current
        }
        moved = {p: v for p, v in wanted.items() if v != current[p]}
        ops: list[Any] = []
        if not any(expected.values()) and not any(wanted.values()):
            ops = [] if doc is None else [DeleteOne({"_id": instance})]
        elif diff or moved:
            update: dict[str, Any] = {}
            if diff:
                update["$inc"] = diff
            if sets := {p: v for p, v in moved.items() if v is not None}:
                update["$set"] = sets
            if unsets := {p: "" for p, v in moved.items() if v is None}:
                update["$unset"] = unsets
            ops = [UpdateOne({"_id": instance}, update, upsert=True)]
        await self._repair(snapshot, instance, {INSTANCES: ops})
        for path, (was, now) in _differences(stored, expected).items():
            self._log_repair(Repair(instance, None, f"{INSTANCES} {path}", was, now))
        for path, value in moved.items():
            self._log_repair(Repair(instance, None, f"{INSTANCES} {path}", current[path], value))


_UNKNOWN: Any = object()


def _extreme(docs: Mapping[Range, list[Document]], r: Range | None, path: str) -> Any:
    """The first or last timestamp (``path``: ``first.o``...) in ``r``; None when ``r``
    is None (no dated message of that flag), ``_UNKNOWN`` when ``r`` has none."""
    if r is None:
        return None
    name, flag = path.split(".")
    times = [moment for doc in docs.get(r, []) if flag_of(doc) == flag and (moment := dated(doc))]
    return (min if name == "first" else max)(times, default=_UNKNOWN)


def _what(was: Document | None, now: Document | None) -> str:
    if was is None:
        return "was not counted (written without a newer updatedAt?)"
    if now is None:
        return "is gone (deleted, or no longer counts for an instance)"
    if day_key(was) != day_key(now):
        return "moved to another day or instance"
    return "changed without a newer updatedAt"


def _bucket_order(key: tuple[Level, datetime]) -> tuple[str, datetime]:
    return key[0].value, key[1]


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()
