"""Reading the value sets of recent days before the first range needs them.

The first range over a day reads its raw messages (``valuesets.py``): a dashboard's 30-day
view of a busy instance waits for a month of them (22 s for 300,000 on SecantusDB), later
views about 0.3 s. The process that holds the consumer lease reads the last ``days`` whole
UTC days of every instance ahead, with their hours, and the hours of today that have
ended, one day or hour per snapshot (the same guarded read a request makes, so only
rollups the state vouches for are kept), pausing so that reading takes at most ``duty`` of
its time, and comes back every ``every`` seconds for what ended or changed since.
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
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.store import INSTANCES
from resolvers.rollups.valuesets import stale

__all__ = ["Read", "WarmOptions", "warm_pass"]

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


Read = Callable[[ObjectId, Level, datetime], Awaitable[bool]]
"""Read one day (with its hours) or one hour of one instance through the guarded path;
False: the rollups could not vouch for it (building, behind), so the pass stops."""


async def warm_pass(
    *,
    db: Database,
    now: datetime,
    options: WarmOptions,
    read: Read,
    leading: Callable[[], bool],
) -> int:
    """One pass over every instance with rollups: the whole days of the window, then the
    hours of today that have ended. Returns the number of days and hours read."""
    today = floor_to(now, Level.DAY)
    done = 0
    # listed first: a cursor left open through the pauses would time out on a long pass
    instances = [doc["_id"] async for doc in db[INSTANCES].find({}, {"_id": 1})]
    for instance in instances:
        for level, start, end in (
            (Level.DAY, today - options.days * _DAY, today),
            (Level.HOUR, today, floor_to(now, Level.HOUR)),
        ):
            for moment in await stale(db=db, instance=instance, level=level, start=start, end=end):
                if not leading():
                    return done
                began = time.monotonic()
                if not await read(instance, level, moment):
                    return done
                done += 1
                spent = time.monotonic() - began
                await asyncio.sleep(spent * (1 - options.duty) / options.duty)
    if done:
        _log.info("rollups: read the values of %d recent days and hours ahead of ranges", done)
    return done
