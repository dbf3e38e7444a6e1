"""Reading the value sets of recent days before the first range needs them.

The first range over a day reads its raw messages (``valuesets.py``): a dashboard's 30-day
view of a busy instance waits for a month of them (22 s for 300,000 on SecantusDB), later
views about 0.3 s. The process that holds the consumer lease reads the last ``days`` whole
UTC days of every instance ahead, one day per snapshot (the same guarded read a request
makes, so only rollups the state vouches for are kept), pausing so that reading takes at
most ``duty`` of its time, and comes back every ``every`` seconds for the days that ended
or changed since.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from bson import ObjectId

from resolvers.db import Database
from resolvers.rollups.keys import Level, floor_to, truncate_to_millis
from resolvers.rollups.store import BUCKETS, INSTANCES, VALUE_SETS

__all__ = ["WarmOptions", "days_to_read", "warm_pass"]

_log = logging.getLogger(__name__)
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class WarmOptions:
    days: int = 35
    """Whole days before today to keep read (0: none; a 30-day view spans 31)."""
    every: float = 600.0
    """Seconds between two passes."""
    duty: float = 0.25
    """Share of the time a pass spends reading at most."""


ReadDay = Callable[[ObjectId, datetime], Awaitable[bool]]
"""Read one day of one instance through the guarded path; False: the rollups could not
vouch for it (building, behind), so the pass stops."""


async def days_to_read(
    *, db: Database, instance: ObjectId, start: datetime, end: datetime
) -> list[datetime]:
    """The whole days in ``[start, end)`` whose bucket holds values and has no kept set of
    its current version, newest first."""
    span = {"i": instance, "l": Level.DAY.value, "t": {"$gte": start, "$lt": end}}
    versions = {
        truncate_to_millis(doc["t"]): doc.get("vv")
        async for doc in db[BUCKETS].find(span, {"_id": 0, "t": 1, "vv": 1})
    }
    kept = {
        truncate_to_millis(doc["t"]): doc.get("vv")
        async for doc in db[VALUE_SETS].find(span, {"_id": 0, "t": 1, "vv": 1})
    }
    stale = [day for day, version in versions.items() if version is not None]
    return sorted((day for day in stale if kept.get(day) != versions[day]), reverse=True)


async def warm_pass(
    *,
    db: Database,
    now: datetime,
    options: WarmOptions,
    read_day: ReadDay,
    leading: Callable[[], bool],
) -> int:
    """One pass over every instance with rollups; the number of days read."""
    end = floor_to(now, Level.DAY)
    start = end - options.days * _DAY
    read = 0
    # listed first: a cursor left open through the pauses would time out on a long pass
    instances = [doc["_id"] async for doc in db[INSTANCES].find({}, {"_id": 1})]
    for instance in instances:
        for day in await days_to_read(db=db, instance=instance, start=start, end=end):
            if not leading():
                return read
            began = time.monotonic()
            if not await read_day(instance, day):
                return read
            read += 1
            spent = time.monotonic() - began
            await asyncio.sleep(spent * (1 - options.duty) / options.duty)
    if read:
        _log.info("rollups: read the values of %d recent days ahead of ranges", read)
    return read
