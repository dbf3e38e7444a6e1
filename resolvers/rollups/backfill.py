"""Building the rollups while messages keep changing: bounded reads, each corrected by
the events that arrive around it.

The consumer reads a set of keys (``Step``) only when it has applied every event so
far, then keeps reading the stream until it is caught up again. Each message a read
returned, or an event in that window touched, ends up counted in the read's keys by
its latest state: the state of its last event in the window if it had one, else what
the read returned. That is exact however a read interleaves with writes, because every
write to a message during the window is an event in the window. Events that touch keys
already built are applied as deltas; parts touching keys not built yet are left to the
read of those keys (``route``).

Every read is small, because SecantusDB runs one operation at a time (a long one stalls
every request) and spends about 50 µs per document read whatever limit a query has:

- ``Listing``: the ids in ``instances``, plus the ids of messages between two of them
  (one index range each, empty unless messages name an instance that has no document);
- ``Start``: a survey of the instance (14 reads of a narrow slice of time, each further
  back) that estimates how many messages it has, for the percentage, and how wide a
  first span should be;
- ``Undated``: its messages whose ``timestamp`` is not a date, from the partial index
  ``instanceId_undated`` (``ensure_undated_index``) and ``timestamp: null``;
- ``Span``: its dated messages in one span of time, sweeping up from the pivot (the
  moment the instance started) to the last message, then down to the first. The span
  adapts to the messages the last read returned (``Sweep``, about ``target`` a read);
  once nothing was found for as long as the instance's history so far (a day at least,
  a year at most), the last span of each direction is open-ended.

A span is at least a millisecond: a single millisecond holding more messages than the
target is read at once, and so is an open-ended span beyond a long silence (messages
older than a gap of a year, say); those are the limits of "small".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any, Protocol

from bson import ObjectId
from pymongo.errors import OperationFailure

from resolvers.db import Database
from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import dated, owner
from resolvers.rollups.events import DocumentChange
from resolvers.rollups.keys import truncate_to_millis
from resolvers.rollups.state import Build, InstanceProgress, MessageKey, message_key
from resolvers.rollups.store import iter_dated, read_raw

__all__ = [
    "UNDATED_INDEX",
    "Listing",
    "Span",
    "Start",
    "Step",
    "Survey",
    "Sweep",
    "Undated",
    "Window",
    "ensure_undated_index",
    "estimate",
    "list_instances",
    "read_next_step",
    "read_undated",
    "route",
    "survey",
]

Document = Mapping[str, Any]
_log = logging.getLogger(__name__)

_MS = timedelta(milliseconds=1)
_MINUTE, _HOUR, _DAY = timedelta(minutes=1), timedelta(hours=1), timedelta(days=1)
_LONGEST_SPAN, _LONGEST_GAP = timedelta(days=30), timedelta(days=366)
_DATE_MIN = datetime(1, 1, 1, tzinfo=UTC)
_DATE_MAX = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
_OID_MIN, _OID_MAX = ObjectId("0" * 24), ObjectId("f" * 24)

UNDATED_INDEX = "instanceId_undated"
_NOT_A_DATE = [-1, 1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 127]
"""Every BSON type but a date (9), as ``$type`` numbers."""
_UNDATED = {"timestamp": {"$type": _NOT_A_DATE}}
_SURVEY_STEPS = 14
"""Slices from now back to 4^12 minutes (32 years)."""


# --- reads ------------------------------------------------------------------------------


async def list_instances(*, db: Database) -> tuple[ObjectId, ...]:
    """Every instance a message may count for: the ids in ``instances`` (a small
    collection) and the ObjectIds messages name between them (an index range per gap;
    a gap holds no messages unless an instance's document is missing)."""
    ids = [doc["_id"] async for doc in db.instances.find({}, {"_id": 1})]
    known = sorted(instance for instance in ids if isinstance(instance, ObjectId))
    found = set(known)
    fences = [_OID_MIN, *known, _OID_MAX]
    for low, high in pairwise(fences):
        bounds = {"$gte" if low is _OID_MIN else "$gt": low}
        bounds["$lte" if high is _OID_MAX else "$lt"] = high
        cursor = db.messages.find({"instanceId": bounds}, {"_id": 0, "instanceId": 1})
        found.update([instance async for doc in cursor if (instance := owner(doc)) is not None])
    return tuple(sorted(found))


async def ensure_undated_index(*, db: Database) -> bool:
    """Create ``instanceId_undated`` on ``messages``: ``{instanceId: 1}`` over the messages
    whose ``timestamp`` is present and not a date. It holds only those, so reading an
    instance's undated messages costs what they are, not its history. Built once; on a
    large collection that first build is one long operation. False when it cannot be
    made (the reads then scan the instance)."""
    try:
        await db.messages.create_index(
            [("instanceId", 1)], name=UNDATED_INDEX, partialFilterExpression=_UNDATED
        )
    except OperationFailure as exc:
        _log.warning("rollups: no index for undated messages (%s); builds scan instead", exc)
        return False
    return True


async def read_undated(*, db: Database, instance: ObjectId) -> list[Document]:
    """The messages of ``instance`` whose timestamp is missing or not a date: ``null``
    (missing included) on the main index, every other type on ``instanceId_undated``;
    without that index, one scan of the instance."""
    found: dict[Any, Document] = {}
    query = {"instanceId": instance, "timestamp": None}
    async for doc in db.messages.find(query):
        found[doc["_id"]] = doc
    try:
        cursor = db.messages.find({"instanceId": instance, **_UNDATED}).hint(UNDATED_INDEX)
        async for doc in cursor:
            found[doc["_id"]] = doc
    except OperationFailure:
        pipeline: list[dict[str, Any]] = [
            {"$match": {"instanceId": instance}},
            {"$match": {"$expr": {"$ne": [{"$type": "$timestamp"}, "date"]}}},
        ]
        async for doc in await db.messages.aggregate(pipeline):
            found[doc["_id"]] = doc
    return [doc for doc in found.values() if owner(doc) == instance and dated(doc) is None]


@dataclass(frozen=True, slots=True)
class Survey:
    """What a few narrow reads say about an instance: about how many dated messages it
    has before the pivot, and a first span that should read about ``target``."""

    estimate: int
    span: timedelta


async def survey(*, db: Database, instance: ObjectId, pivot: datetime, target: int) -> Survey:
    """Count the messages in slices ending 0, 1, 4, 16 … 4^12 minutes before ``pivot``,
    each 1/32 as wide as it is far (a minute at least), and integrate their densities."""
    samples: list[tuple[float, float]] = []  # (seconds before the pivot, messages a second)
    for step in range(_SURVEY_STEPS):
        distance = _MINUTE * (4 ** (step - 1)) if step else timedelta(0)
        width = _whole_ms(max(_MINUTE, distance / 32))
        end = pivot - distance
        if end - width < _DATE_MIN:
            break
        docs = await read_raw(db=db, instance=instance, start=end - width, end=end)
        middle = (distance + width / 2).total_seconds()
        samples.append((middle, len(docs) / width.total_seconds()))
    near = samples[0][1] if samples else 0.0
    span = _HOUR if near <= 0 else min(max(timedelta(seconds=target / near), _MINUTE), _DAY)
    return Survey(estimate=round(estimate(samples)), span=_whole_ms(span))


def estimate(samples: Sequence[tuple[float, float]]) -> float:
    """Messages under a density known at some distances (seconds, messages a second):
    trapezoids between them, the first density from distance 0."""
    if not samples:
        return 0.0
    total = samples[0][0] * samples[0][1]
    for (x0, y0), (x1, y1) in pairwise(samples):
        total += (y0 + y1) / 2 * (x1 - x0)
    return total


# --- steps ------------------------------------------------------------------------------


class Step(Protocol):
    """Keys one read covers, and the build once they are built (``read``: the messages
    the read counted)."""

    def covers(self, key: MessageKey) -> bool: ...

    def advance(self, build: Build, read: int) -> Build: ...


@dataclass(frozen=True, slots=True)
class Listing:
    """The instances with messages; the read covers every other instance."""

    listed: tuple[ObjectId, ...]

    def covers(self, key: MessageKey) -> bool:
        return key[0] not in self.listed

    def advance(self, build: Build, read: int) -> Build:
        return replace(build, listed=self.listed)


@dataclass(frozen=True, slots=True)
class Start:
    """An instance's survey: it covers no key; the sweep starts at ``pivot``."""

    instance: ObjectId
    pivot: datetime
    estimate: int

    def covers(self, key: MessageKey) -> bool:
        return False

    def advance(self, build: Build, read: int) -> Build:
        progress = build.progress.get(self.instance, InstanceProgress())
        started = replace(progress, low=self.pivot, high=self.pivot, estimate=self.estimate)
        return build.with_progress(self.instance, started)


@dataclass(frozen=True, slots=True)
class Undated:
    """An instance's undated messages."""

    instance: ObjectId

    def covers(self, key: MessageKey) -> bool:
        return key == (self.instance, None)

    def advance(self, build: Build, read: int) -> Build:
        progress = build.progress.get(self.instance, InstanceProgress())
        done = replace(progress, undated=True, read=progress.read + read)
        return build.with_progress(self.instance, done)


@dataclass(frozen=True, slots=True)
class Span:
    """An instance's dated messages in ``[start, end)`` (None: open on that side), below
    the built interval (``downward``) or above it."""

    instance: ObjectId
    start: datetime | None
    end: datetime | None
    downward: bool

    def covers(self, key: MessageKey) -> bool:
        instance, moment = key
        if instance != self.instance or moment is None:
            return False
        return (self.start is None or self.start <= moment) and (
            self.end is None or moment < self.end
        )

    def advance(self, build: Build, read: int) -> Build:
        p = build.progress[self.instance]
        if self.downward:
            p = replace(p, low=self.start or p.low, below=self.start is None)
        else:
            p = replace(p, high=self.end or p.high, above=self.end is None)
        return build.with_progress(self.instance, replace(p, read=p.read + read))

    @property
    def width(self) -> timedelta | None:
        return None if self.start is None or self.end is None else self.end - self.start


class Window:
    """A read's result, corrected by the events seen until the stream is caught up."""

    def __init__(self, step: Step, docs: list[Document]) -> None:
        self.step = step
        self._seen = {doc["_id"]: doc for doc in docs if self._covers(doc)}
        self._latest: dict[Any, Document | None] = {}

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, doc_id: Any, change: DocumentChange) -> None:
        """An event in the window: remember the latest state of a message that is or
        was in the covered keys."""
        if self._covers(change.before) or self._covers(change.after):
            self._latest[doc_id] = change.after

    def fold(self, changes: Changes) -> None:
        """Add the covered keys' messages, each by its latest state, to ``changes``."""
        for doc_id in self._seen.keys() | self._latest.keys():
            doc = self._latest[doc_id] if doc_id in self._latest else self._seen[doc_id]
            if self._covers(doc):
                changes.add(before=None, after=doc)

    def advance(self, build: Build) -> Build:
        return self.step.advance(build, len(self))

    def _covers(self, doc: Document | None) -> bool:
        key = message_key(doc)
        return key is not None and self.step.covers(key)


def route(
    *,
    changes: Changes,
    change: DocumentChange,
    doc_id: Any,
    build: Build | None,
    window: Window | None,
    saved: Build | None = None,
    deferred: Changes | None = None,
) -> None:
    """Count one event: as a delta on built keys (every key when ``build`` is None), and
    in the open read's window. With ``saved`` (the keys whose rollups are written) and
    ``deferred``, the parts on keys built since then go to ``deferred``, written later
    together with those keys."""
    if window is not None:
        window.observe(doc_id, change)
    if build is None and (saved is None or deferred is None):
        changes.add(before=change.before, after=change.after)
        return
    for doc, removed in ((change.before, True), (change.after, False)):
        key = message_key(doc)
        if key is None or (build is not None and not build.built(key)):
            continue
        later = deferred is not None and saved is not None and not saved.built(key)
        target = deferred if later and deferred is not None else changes
        if removed:
            target.add(before=doc, after=None)
        else:
            target.add(before=None, after=doc)


# --- the sweep ------------------------------------------------------------------------


class Sweep:
    """Where the next span of the instance being built begins and how wide it is (kept
    in memory: after a restart it starts again from the stored interval with an hour)."""

    def __init__(self, *, target: int) -> None:
        self.target = target
        self._instance: ObjectId | None = None
        self._downward = False
        self._first = self._span = _HOUR
        self._empty = timedelta(0)
        """Time read without finding a message, in this direction, since the last one."""

    def begin(self, instance: ObjectId, span: timedelta) -> None:
        self._instance, self._downward = instance, False
        self._first = self._span = span
        self._empty = timedelta(0)

    def next(self, instance: ObjectId, progress: InstanceProgress) -> Span:
        """The next span of ``instance``: above the built interval, then below it."""
        low, high = progress.low, progress.high
        assert low is not None and high is not None, "the sweep starts after the survey"
        downward = progress.above
        if instance != self._instance:
            self.begin(instance, _HOUR)
        if downward != self._downward:
            self._downward, self._span, self._empty = downward, self._first, timedelta(0)
        silent = self._empty >= min(max(_DAY, high - low), _LONGEST_GAP)
        if downward:
            start = None if silent or low - _DATE_MIN <= self._span else low - self._span
            return Span(instance, start, low, downward=True)
        end = None if silent or _DATE_MAX - high <= self._span else high + self._span
        return Span(instance, high, end, downward=False)

    def observe(self, span: Span, read: int) -> None:
        """After a span read ``read`` messages: widen while reads are small or empty,
        narrow in proportion when one read more than the target."""
        width = span.width
        if width is None:
            return
        if read == 0:
            self._empty += width
            self._span = min(self._span * 2, _LONGEST_SPAN)
            return
        self._empty = timedelta(0)
        if read < self.target // 2:
            self._span = min(self._span * 2, _LONGEST_SPAN)
        elif read > self.target:
            self._span = _whole_ms(max(self._span * (self.target / read), _MS))


def _whole_ms(span: timedelta) -> timedelta:
    """``span`` in whole milliseconds (bounds are stored as BSON dates)."""
    return max(span // _MS, 1) * _MS


async def read_next_step(
    *, db: Database, build: Build, sweep: Sweep, now: datetime, surveying: bool = True
) -> Window | None:
    """Read the next keys to build (None: everything is built); without ``surveying``
    an instance starts with no estimate (no percentage) and no reads."""
    if build.listed is None:
        return Window(Listing(await list_instances(db=db)), [])
    instance = build.next_instance()
    if instance is None:
        return None
    progress = build.progress.get(instance, InstanceProgress())
    if progress.low is None:
        pivot = truncate_to_millis(now).replace(second=0, microsecond=0)
        found = Survey(estimate=0, span=_HOUR)
        if surveying:
            found = await survey(db=db, instance=instance, pivot=pivot, target=sweep.target)
        sweep.begin(instance, found.span)
        return Window(Start(instance, pivot, found.estimate), [])
    if not progress.undated:
        return Window(Undated(instance), await read_undated(db=db, instance=instance))
    span = sweep.next(instance, progress)
    reading = iter_dated(db=db, instance=instance, start=span.start, end=span.end, projection=None)
    return Window(span, [doc async for doc in reading])
