"""Reading recent days' value sets ahead (resolvers/rollups/warm.py): the days a pass reads,
that a range over them then reads no day raw, and that the service does it by itself."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from graph import Settings
from resolvers import Database, InstanceRef
from resolvers.rollups import valuesets as valuesets_module
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.ranges import read_range_metrics
from resolvers.rollups.service import RollupService
from resolvers.rollups.store import VALUE_SETS
from resolvers.rollups.valuesets import stale
from resolvers.rollups.warm import WarmOptions
from resolvers.timeranges import TimeRange
from tests.factories import NOW, app_client, make_tenant, message
from tests.reference import reference_metrics
from tests.strategies import INSTANCE_IDS
from tests.test_rollups_consumer import settle

A = INSTANCE_IDS[0]
TODAY = floor_to(NOW, Level.DAY)
EAGER = WarmOptions(days=10, duty=1.0)  # no pause between days


def _history() -> list[dict[str, Any]]:
    """Messages on 4 of the last 10 days (one without values), and one 20 days back."""
    docs = [message(A, days_ago=days, chatId=f"{days}@s.whatsapp.net") for days in (1, 2, 2.2, 6)]
    docs.append(message(A, days_ago=4, chatId=None))
    docs.append(message(A, days_ago=20, chatId="old@s.whatsapp.net"))
    return docs


@pytest.fixture
async def service(db: Database) -> AsyncIterator[RollupService]:
    await db.messages.insert_many(_history())
    consumer = RollupConsumer(db=db, holder="test", options=ConsumerOptions(idle_poll=0.01))
    running = RollupService(db=db, consumer=consumer, wait_s=10)
    running.start()
    await settle(db, consumer)
    yield running
    await running.stop()


def _days(*days_ago: float) -> list[Any]:
    return [floor_to(NOW - timedelta(days=days), Level.DAY) for days in days_ago]


async def test_the_days_to_read_are_those_with_values_not_kept_newest_first(
    db: Database, service: RollupService
) -> None:
    start = TODAY - timedelta(days=10)
    assert await stale(db=db, instance=A, level=Level.DAY, start=start, end=TODAY) == _days(1, 2, 6)

    assert await service.warm(now=NOW, options=EAGER) == 3
    assert await stale(db=db, instance=A, level=Level.DAY, start=start, end=TODAY) == []
    assert await service.warm(now=NOW, options=EAGER) == 0

    late = message(A, days_ago=6, chatId="late@s.whatsapp.net")
    await db.messages.insert_one(late)
    assert service.consumer is not None
    await settle(db, service.consumer)
    assert await stale(db=db, instance=A, level=Level.DAY, start=start, end=TODAY) == _days(6)


async def test_the_hours_of_today_that_have_ended_are_read_ahead_too(
    db: Database, service: RollupService
) -> None:
    await db.messages.insert_one(message(A, days_ago=2 / 24, chatId="today@s.whatsapp.net"))
    assert service.consumer is not None
    await settle(db, service.consumer)
    hour = floor_to(NOW - timedelta(hours=2), Level.HOUR)
    assert await stale(db=db, instance=A, level=Level.HOUR, start=TODAY, end=NOW) == [hour]

    assert await service.warm(now=NOW, options=EAGER) == 4  # three days, one hour
    kept = {(doc["l"], doc["t"]) async for doc in db[VALUE_SETS].find({}, {"l": 1, "t": 1})}
    assert ("h", hour) in kept and ("d", TODAY) not in kept
    assert await stale(db=db, instance=A, level=Level.HOUR, start=TODAY, end=NOW) == []


async def test_a_range_over_days_read_ahead_reads_none_of_their_days_or_hours_raw(
    db: Database, service: RollupService, monkeypatch: pytest.MonkeyPatch
) -> None:
    await service.warm(now=NOW, options=EAGER)
    reads: list[Any] = []
    real = valuesets_module._read

    async def counted(*args: Any) -> Any:
        reads.append(args[2:4])
        return await real(*args)

    monkeypatch.setattr(valuesets_module, "_read", counted)
    # from half past an hour 9 days back to an hour before the end of the last day
    span = TimeRange(TODAY - timedelta(days=9, minutes=30), TODAY - timedelta(hours=1))
    ref = InstanceRef(id=A, name="a", ignore_group_messages=False)
    found = (await read_range_metrics(db=db, instances=[ref], now=NOW, range=span))[A]
    expected = reference_metrics(
        await db.messages.find({}).to_list(),
        instances=[(A, False)],
        now=NOW,
        range=(span.start, span.end),
    )
    assert found.unique_chats == expected["uniqueChats"] == 4
    assert reads == [(span.start, span.start + timedelta(minutes=30))]  # its raw edge only


async def test_nothing_is_read_ahead_while_the_rollups_are_not_ready(db: Database) -> None:
    await db.messages.insert_many(_history())
    stopped = RollupService(
        db=db, consumer=RollupConsumer(db=db, holder="test"), warm=WarmOptions()
    )
    assert await stopped.warm(now=NOW, options=EAGER) == 0
    assert await db[VALUE_SETS].count_documents({}) == 0


async def test_the_service_reads_recent_days_ahead_by_itself(
    settings: Settings, db: Database
) -> None:
    tenant = await make_tenant(db, instances={"sales": False})
    sales = tenant.instance_ids["sales"]
    now = datetime.now(UTC)  # the service reads the days before its own today
    await db.messages.insert_many(
        [message(sales, timestamp=now - timedelta(days=d)) for d in (1, 3, 40)]
    )
    warming = settings.model_copy(update={"rollups_warm_days": 7})
    async with app_client(warming) as client:
        for _ in range(300):
            kept = {
                (doc["l"], doc["t"])
                async for doc in db[VALUE_SETS].find({"i": sales}, {"l": 1, "t": 1})
            }
            if len(kept) == 4:
                break
            await asyncio.sleep(0.1)
        assert (await client.get("/health")).status_code == 200
    # the two days of the last 7 with messages and their hours; not 40 days back
    expected = {
        (level.value, floor_to(now - timedelta(days=d), level))
        for d in (1, 3)
        for level in (Level.DAY, Level.HOUR)
    }
    assert kept == expected
