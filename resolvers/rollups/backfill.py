"""Building the rollups while messages keep changing: one read at a time, corrected
by the events that arrive around it.

The consumer reads a set of keys (``Step``) only when it has applied every event so
far, then keeps reading the stream until it is caught up again. Each message a read
returned, or an event in that window touched, ends up counted in the read's keys by
its latest state: the state of its last event in the window if it had one, else what
the read returned. That is exact however a read interleaves with writes, because every
write to a message during the window is an event in the window. Events that touch keys
already built are applied as deltas; parts touching keys not built yet are left to the
read of those keys (``route``).

Steps in order: list the instances with messages (every other instance is then built,
empty); per instance find its first and last dated day (days outside are built,
empty), read its undated messages if it has some, then its days a span at a time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Protocol

from bson import ObjectId

from resolvers.db import Database
from resolvers.rollups.build import build_keys, instances_with_messages, read_key
from resolvers.rollups.changes import Changes
from resolvers.rollups.events import DocumentChange
from resolvers.rollups.keys import Level
from resolvers.rollups.state import Build, InstanceProgress, MessageKey, message_key
from resolvers.rollups.store import iter_raw

__all__ = [
    "Days",
    "Listing",
    "Ranging",
    "Step",
    "Undated",
    "Window",
    "next_span",
    "read_next_step",
    "route",
]

Document = Mapping[str, Any]
_DAY = Level.DAY.width


class Step(Protocol):
    """Keys one read covers, and the build once they are built."""

    def covers(self, key: MessageKey) -> bool: ...

    def advance(self, build: Build) -> Build: ...


@dataclass(frozen=True, slots=True)
class Listing:
    """The instances with messages; the read covers every other instance."""

    listed: tuple[ObjectId, ...]

    def covers(self, key: MessageKey) -> bool:
        return key[0] not in self.listed

    def advance(self, build: Build) -> Build:
        return replace(build, listed=self.listed)


@dataclass(frozen=True, slots=True)
class Ranging:
    """An instance's first and last dated days (None: it has none); the read covers the
    days outside them, and the undated key when it has no undated messages."""

    instance: ObjectId
    low: datetime | None
    high: datetime | None
    has_undated: bool

    def covers(self, key: MessageKey) -> bool:
        instance, day = key
        if instance != self.instance:
            return False
        if day is None:
            return not self.has_undated
        return self.low is None or self.high is None or not self.low <= day <= self.high

    def advance(self, build: Build) -> Build:
        progress = InstanceProgress(
            ranged=True, low=self.low, high=self.high, undated=not self.has_undated
        )
        return build.with_progress(self.instance, progress)


@dataclass(frozen=True, slots=True)
class Undated:
    """An instance's undated messages."""

    instance: ObjectId

    def covers(self, key: MessageKey) -> bool:
        return key == (self.instance, None)

    def advance(self, build: Build) -> Build:
        progress = build.progress.get(self.instance, InstanceProgress())
        return build.with_progress(self.instance, replace(progress, undated=True))


@dataclass(frozen=True, slots=True)
class Days:
    """An instance's days in ``[start, end)``."""

    instance: ObjectId
    start: datetime
    end: datetime

    def covers(self, key: MessageKey) -> bool:
        instance, day = key
        return instance == self.instance and day is not None and self.start <= day < self.end

    def advance(self, build: Build) -> Build:
        progress = build.progress.get(self.instance, InstanceProgress())
        return build.with_progress(self.instance, replace(progress, next_day=self.end))


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
) -> None:
    """Count one event: as a delta on built keys (every key when ``build`` is None),
    and in the open read's window."""
    if window is not None:
        window.observe(doc_id, change)
    if build is None:
        changes.add(before=change.before, after=change.after)
        return
    changes.add(before=_if_built(change.before, build), after=_if_built(change.after, build))


def _if_built(doc: Document | None, build: Build) -> Document | None:
    key = message_key(doc)
    return doc if key is not None and build.built(key) else None


async def read_next_step(*, db: Database, build: Build, span_days: int) -> Window | None:
    """Read the next keys to build (None: everything is built)."""
    if build.listed is None:
        return Window(Listing(tuple(await instances_with_messages(db=db))), [])
    instance = build.next_instance()
    if instance is None:
        return None
    progress = build.progress.get(instance, InstanceProgress())
    if not progress.ranged:
        return Window(await _ranging(db=db, instance=instance), [])
    if not progress.undated:
        docs = [doc async for doc in read_key(db=db, instance=instance, key=None)]
        return Window(Undated(instance), docs)
    assert progress.low is not None and progress.high is not None  # else it would be done
    start = progress.next_day or progress.low
    end = min(start + span_days * _DAY, progress.high + _DAY)
    docs = [
        doc
        async for doc in iter_raw(db=db, instance=instance, start=start, end=end, projection=None)
    ]
    return Window(Days(instance, start, end), docs)


async def _ranging(*, db: Database, instance: ObjectId) -> Ranging:
    keys = await build_keys(db=db, instance=instance)
    days = [key for key in keys if key is not None]
    return Ranging(
        instance=instance,
        low=min(days, default=None),
        high=max(days, default=None),
        has_undated=None in keys,
    )


def next_span(*, span_days: int, read: int, target: int) -> int:
    """Days per read after a read of ``read`` messages: doubled while reads are small,
    halved when they are large (at least one day, at most 64)."""
    if read < target // 2:
        return min(span_days * 2, 64)
    if read > target:
        return max(span_days // 2, 1)
    return span_days
