"""Building the rollups from raw messages (no concurrent writes assumed).

The build folds the same ``contribution`` as the change stream (inserts of every
document) and writes with ``apply_changes``. Per instance it reads one key at a time:
each UTC day from the first dated message to the last (an index range scan), then the
undated messages; it writes every ``chunk`` documents, so memory stays bounded by a
chunk whatever the history. The keys are public so a build under concurrent writes
(the consumer) can read and correct one key at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import datetime
from typing import Any

from bson import ObjectId

from resolvers.db import Database
from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import dated, owner
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.store import apply_changes, drop_rollups, iter_raw

__all__ = [
    "BuildKey",
    "build_keys",
    "build_rollups",
    "instances_with_messages",
    "key_of",
    "read_key",
]

BuildKey = datetime | None
"""A UTC day (its midnight), or None for the undated messages."""

_DATE = {"$eq": [{"$type": "$timestamp"}, "date"]}


async def build_rollups(
    *, db: Database, instance_ids: Iterable[ObjectId] | None = None, chunk: int = 20_000
) -> None:
    """Replace the rollups of ``instance_ids`` by a fold of their raw messages (None =
    all rollups, also of instances that no longer have messages)."""
    if instance_ids is None:
        await drop_rollups(db=db)
        ids = await instances_with_messages(db=db)
    else:
        ids = list(instance_ids)
        await drop_rollups(db=db, instances=ids)
    for instance in ids:
        folder = _Folder(db=db, chunk=chunk)
        for key in await build_keys(db=db, instance=instance):
            async for doc in read_key(db=db, instance=instance, key=key):
                await folder.add(doc)
        await folder.flush()


async def instances_with_messages(*, db: Database) -> list[ObjectId]:
    """Every instance some message counts for (a scan of ``messages``)."""
    cursor = await db.messages.aggregate([{"$group": {"_id": "$instanceId"}}])
    found = [row["_id"] async for row in cursor]
    return sorted(instance for instance in found if isinstance(instance, ObjectId))


def key_of(doc: Mapping[str, Any]) -> BuildKey:
    """The key whose read returns ``doc``: the UTC day of its date, or None (undated)."""
    moment = dated(doc)
    return None if moment is None else floor_to(moment, Level.DAY)


async def build_keys(*, db: Database, instance: ObjectId) -> list[BuildKey]:
    """The keys of ``instance``: every UTC day from its first dated message to its last,
    then None when it has undated messages (one aggregation over its index range)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"instanceId": instance}},
        {"$match": {"$expr": {"$ne": [{"$type": "$instanceId"}, "array"]}}},
        {
            "$group": {
                "_id": _DATE,
                "first": {"$min": "$timestamp"},
                "last": {"$max": "$timestamp"},
            }
        },
    ]
    rows = await (await db.messages.aggregate(pipeline)).to_list()
    spans = {row["_id"]: row for row in rows}
    keys: list[BuildKey] = []
    if True in spans:
        day = floor_to(spans[True]["first"], Level.DAY)
        while day <= spans[True]["last"]:
            keys.append(day)
            day += Level.DAY.width
    if False in spans:
        keys.append(None)
    return keys


async def read_key(
    *, db: Database, instance: ObjectId, key: BuildKey
) -> AsyncIterator[Mapping[str, Any]]:
    """The messages of ``instance`` whose ``key_of`` is ``key``, whole documents."""
    if key is not None:
        end = key + Level.DAY.width
        async for doc in iter_raw(db=db, instance=instance, start=key, end=end, projection=None):
            yield doc
        return
    pipeline: list[dict[str, Any]] = [
        {"$match": {"instanceId": instance}},
        {"$match": {"$expr": {"$not": [_DATE]}}},
    ]
    async for doc in await db.messages.aggregate(pipeline):
        if owner(doc) == instance:
            yield doc


class _Folder:
    """Inserts folded into a ``Changes``, written every ``chunk`` documents."""

    def __init__(self, *, db: Database, chunk: int) -> None:
        self._db, self._chunk = db, chunk
        self._changes, self._folded = Changes(), 0

    async def add(self, doc: Mapping[str, Any]) -> None:
        self._changes.add(before=None, after=doc)
        self._folded += 1
        if self._folded >= self._chunk:
            await self.flush()

    async def flush(self) -> None:
        await apply_changes(db=self._db, changes=self._changes)
        self._changes, self._folded = Changes(), 0
