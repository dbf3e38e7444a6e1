"""Building the rollups from raw messages when nothing writes meanwhile (the CLI's
rebuild, tests): the consumer's steps (``backfill.py``) without a change stream.

Each step is one bounded read; the reads of one instance are folded into a
``Changes`` and written every ``chunk`` entries (buckets, values, timestamps) and when
the instance is done, so memory is bounded by a chunk whatever the history.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from bson import ObjectId

from resolvers.db import Database
from resolvers.rollups.backfill import (
    Listing,
    Span,
    Sweep,
    ensure_undated_index,
    list_instances,
    read_next_step,
    read_undated,
)
from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import dated
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.state import Build
from resolvers.rollups.store import apply_changes, drop_rollups, iter_raw

__all__ = [
    "BuildKey",
    "build_rollups",
    "instances_with_messages",
    "key_of",
    "read_key",
]

BuildKey = datetime | None
"""A UTC day (its midnight), or None for the undated messages."""


async def build_rollups(
    *,
    db: Database,
    instance_ids: Iterable[ObjectId] | None = None,
    chunk: int = 100_000,
    target: int = 5_000,
) -> None:
    """Replace the rollups of ``instance_ids`` by a fold of their raw messages (None =
    all rollups, also of instances that no longer have messages)."""
    await ensure_undated_index(db=db)
    if instance_ids is None:
        await drop_rollups(db=db)
        build = Build()
    else:
        ids = tuple(sorted(set(instance_ids)))
        await drop_rollups(db=db, instances=ids)
        build = Build(listed=ids)
    sweep, fold = Sweep(target=target), Changes(adds_only=True)
    while True:
        now = datetime.now(UTC)
        window = await read_next_step(db=db, build=build, sweep=sweep, now=now, surveying=False)
        if window is None:
            break
        window.fold(fold)
        if isinstance(window.step, Span):
            sweep.observe(window.step, len(window))
        before, build = build, window.advance(build)
        if len(fold) >= chunk or before.next_instance() != build.next_instance():
            await apply_changes(db=db, changes=fold)
            fold = Changes(adds_only=True)
    await apply_changes(db=db, changes=fold)


async def instances_with_messages(*, db: Database) -> list[ObjectId]:
    """Every instance some message may count for (``list_instances``: no scan)."""
    return list(Listing(await list_instances(db=db)).listed)


def key_of(doc: Mapping[str, Any]) -> BuildKey:
    """The key whose read returns ``doc``: the UTC day of its date, or None (undated)."""
    moment = dated(doc)
    return None if moment is None else floor_to(moment, Level.DAY)


async def read_key(
    *, db: Database, instance: ObjectId, key: BuildKey
) -> AsyncIterator[Mapping[str, Any]]:
    """The messages of ``instance`` whose ``key_of`` is ``key``, whole documents: one
    index range for a day, the undated index otherwise."""
    if key is not None:
        end = key + Level.DAY.width
        async for doc in iter_raw(db=db, instance=instance, start=key, end=end, projection=None):
            yield doc
        return
    for undated in await read_undated(db=db, instance=instance):
        yield undated
