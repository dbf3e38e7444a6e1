"""Building the rollups of a large history on a real server: every read of ``messages``
is bounded (SecantusDB runs one operation at a time, so one read of a whole instance
stalls every request), and the result is exact."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Mapping
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from resolvers import Database, InstanceRef, ensure_indexes, fetch_metrics
from resolvers.rollups import build_rollups, read_rollup_metrics
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from tests.factories import NOW, make_tenant, message
from tests.test_rollups_consumer import settle

TARGET = 60
_READS = ("find", "aggregate", "count", "distinct")


class MessageReads(monitoring.CommandListener):
    """Every command on ``messages`` and how many documents each cursor returned."""

    def __init__(self) -> None:
        self.commands: list[tuple[str, Mapping[str, Any]]] = []
        self.returned: dict[int, int] = {}
        self._requests: dict[int, int] = {}  # request id -> command index
        self._cursors: dict[int, int] = {}  # cursor id -> command index

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, body = event.command_name, event.command
        stream = name == "aggregate" and "$changeStream" in body["pipeline"][0]
        if name in _READS and body.get(name) == "messages" and not stream:
            self.commands.append((name, body))
            self._requests[event.request_id] = len(self.commands) - 1
        elif name == "getMore" and body["getMore"] in self._cursors:
            self._requests[event.request_id] = self._cursors[body["getMore"]]

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        index = self._requests.pop(event.request_id, None)
        cursor = event.reply.get("cursor")
        if index is None or not isinstance(cursor, Mapping):
            return
        batch = cursor.get("firstBatch", cursor.get("nextBatch", []))
        self.returned[index] = self.returned.get(index, 0) + len(batch)
        if cursor.get("id"):
            self._cursors[cursor["id"]] = index

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        self._requests.pop(event.request_id, None)


@pytest.fixture
async def watched(
    mongodb_uri: str, database_name: str
) -> AsyncIterator[tuple[Database, MessageReads]]:
    reads = MessageReads()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        mongodb_uri, tz_aware=True, event_listeners=[reads]
    )
    async with client:
        db = client[database_name]
        await ensure_indexes(db)
        try:
            yield db, reads
        finally:
            await client.drop_database(database_name)


async def _history(db: Database) -> tuple[ObjectId, ...]:
    """An instance with 2,400 messages over 120 days, denser towards now (as the benchmark
    seeds them), an instance without a document, and odd documents of every kind."""
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    sales, support = tenant.instance_ids["sales"], tenant.instance_ids["support"]
    orphan = ObjectId()
    rng = random.Random(9)
    docs = [
        message(sales, days_ago=120 * rng.random() ** 1.5, status=rng.choice(["read", "sent"]))
        for _ in range(2_400)
    ]
    docs += [message(orphan, days_ago=d) for d in (0.5, 40, 400)]
    docs += [message(support, days_ago=3, isGroup=True), message(support, days_ago=-2)]
    docs += [
        message(sales, timestamp=odd)
        for odd in ("2026-11-20", None, 7, 1.5, {"at": 1}, [], [NOW], [1], True, ObjectId())
    ]
    docs += [{"instanceId": sales}, {"instanceId": [sales], "timestamp": "x"}, {}]
    await db.messages.insert_many(docs)
    return sales, support, orphan


async def _assert_exact(db: Database, instances: tuple[ObjectId, ...]) -> None:
    """The rollups answer what the full scan answers, for all instances together (a scan
    of 2,400 messages takes a second on SecantusDB: one is enough here)."""
    refs = [InstanceRef(id=i, name=str(i), ignore_group_messages=False) for i in instances]
    assert await read_rollup_metrics(db=db, instances=refs, now=NOW) == await fetch_metrics(
        db=db, instances=refs, now=NOW
    )


def _assert_bounded(reads: MessageReads) -> None:
    assert reads.commands, "the build read no messages"
    for index, (name, body) in enumerate(reads.commands):
        assert name == "find", (name, body)  # no aggregation over messages
        query = body["filter"]
        timestamp = query.get("timestamp", "absent")
        if isinstance(query.get("instanceId"), Mapping):  # listing: between two instances
            assert set(query) == {"instanceId"}, body
        else:  # an instance's dates in a range, or its undated messages
            assert isinstance(query.get("instanceId"), ObjectId), body
            assert timestamp is None or set(timestamp) & {"$gte", "$lt", "$type"}, body
        assert reads.returned.get(index, 0) <= 4 * TARGET, (reads.returned[index], body)


async def test_the_consumer_builds_a_long_history_in_bounded_reads(
    watched: tuple[Database, MessageReads],
) -> None:
    db, reads = watched
    instances = await _history(db)
    options = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, build_target=TARGET)
    consumer = RollupConsumer(db=db, holder="build", options=options)
    consumer.start()
    try:
        await settle(db, consumer)
    finally:
        await consumer.stop()
    _assert_bounded(reads)
    await _assert_exact(db, instances)


async def test_an_offline_build_reads_the_same_bounded_way(
    watched: tuple[Database, MessageReads],
) -> None:
    db, reads = watched
    instances = await _history(db)
    await build_rollups(db=db, target=TARGET)
    _assert_bounded(reads)
    await _assert_exact(db, instances)
