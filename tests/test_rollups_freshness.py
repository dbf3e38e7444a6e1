"""Read-your-writes: a request answers from the rollups only when they hold every write
acknowledged before it began, and otherwise says which instances to scan."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

import resolvers.db
from graph import Settings
from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.rollups import read_rollup_metrics
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer, stored_status
from resolvers.rollups.freshness import check_freshness, confirm
from resolvers.rollups.state import STATE_COLLECTION, start_build
from tests.factories import NOW, app_client, make_tenant, message
from tests.test_rollups_consumer import settle

A, B = ObjectId(f"{1:024x}"), ObjectId(f"{2:024x}")
OPTIONS = ConsumerOptions(idle_poll=0.05, retry_delay=0.05, refresh_every=0.05)


@pytest.fixture
async def consumer(db: Database) -> AsyncIterator[RollupConsumer]:
    running = RollupConsumer(db=db, holder="here", options=OPTIONS)
    running.start()
    await settle(db, running)
    yield running
    await running.stop()


async def _exact_from_rollups(db: Database, instance: ObjectId) -> bool:
    refs = [InstanceRef(id=instance, name="x", ignore_group_messages=False)]
    scan = await fetch_metrics(db=db, instances=refs, now=NOW)
    return await read_rollup_metrics(db=db, instances=refs, now=NOW) == scan


async def test_a_write_is_in_the_next_answer_through_this_process_consumer(
    db: Database, consumer: RollupConsumer
) -> None:
    for days in (1, 2, 8, 31):
        await db.messages.insert_one(message(A, days_ago=days))
        await db.messages.update_many({"instanceId": A}, {"$set": {"status": f"s{days}"}})
        verdict = await check_freshness(db=db, instances=[A], consumer=consumer, wait=5)
        assert verdict.usable == {A} and verdict.all_usable and verdict.reason is None
        assert await _exact_from_rollups(db, A)


async def test_a_write_is_in_the_next_answer_through_another_process_state(
    db: Database, consumer: RollupConsumer
) -> None:
    """Without a consumer of its own, a process waits for rollup_state.appliedAt."""
    for days in (1, 9):
        await db.messages.insert_one(message(B, days_ago=days))
        verdict = await check_freshness(db=db, instances=[B], consumer=None, wait=5)
        assert verdict.usable == {B}
        assert await _exact_from_rollups(db, B)


async def test_nothing_is_usable_before_a_build(db: Database) -> None:
    verdict = await check_freshness(db=db, instances=[A, B])
    assert verdict.usable == frozenset() and verdict.fallback == {A, B}
    assert verdict.reason == "the rollups have not been built yet"


async def test_a_consumer_that_stopped_leaves_every_request_to_the_scan(
    db: Database, consumer: RollupConsumer
) -> None:
    await consumer.stop()
    await db.messages.insert_one(message(A))
    verdict = await check_freshness(db=db, instances=[A], consumer=None, wait=0.2)
    assert verdict.fallback == {A} and verdict.reason == "the rollup consumer is behind"


async def test_instances_still_building_fall_back_and_the_others_do_not(
    db: Database, consumer: RollupConsumer
) -> None:
    await db.messages.insert_one(message(A))
    await settle(db, consumer)
    # as the consumer leaves it while A is listed and not read yet
    await db[STATE_COLLECTION].update_one(
        {"_id": "consumer"},
        {"$set": {"status": "building", "build": {"listed": [A], "progress": {}}}},
    )
    verdict = await check_freshness(db=db, instances=[A, B], consumer=None, wait=5)
    assert verdict.usable == {B} and verdict.fallback == {A}
    assert verdict.reason is not None and verdict.reason.startswith("building")


async def test_confirm_refuses_rollups_read_across_a_rebuild(
    db: Database, consumer: RollupConsumer
) -> None:
    verdict = await check_freshness(db=db, instances=[A], consumer=consumer, wait=5)
    assert await confirm(db=db, freshness=verdict) == {A}
    await consumer.stop()
    async with db.client.start_session() as session:
        await start_build(db=db, holder="here", session=session)
    assert await confirm(db=db, freshness=verdict) == frozenset()


async def test_stored_status_tells_other_processes_how_far_the_consumer_is(
    db: Database, consumer: RollupConsumer
) -> None:
    status = await stored_status(db=db)
    assert (status.phase, status.percent, status.error) == ("ready", 100.0, None)
    assert status.applied_at is not None and status.lag_seconds >= 0
    await consumer.stop()
    stopped = await stored_status(db=db)
    assert stopped.phase == "standby" and stopped.error == "no process holds the consumer lease"


async def test_stored_status_before_any_build(db: Database) -> None:
    status = await stored_status(db=db)
    assert (status.phase, status.percent, status.applied_at) == ("stopped", 0.0, None)


class _Commands(monitoring.CommandListener):
    """The commands a client sends to ``database`` while ``on``."""

    def __init__(self, database: str) -> None:
        self.database = database
        self.on = False
        self.sent: list[dict[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if self.on and event.database_name == self.database:
            self.sent.append(dict(event.command))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def _rollups_ready(client: httpx.AsyncClient) -> bool:
    for _ in range(300):
        if (await client.get("/health")).json()["checks"]["rollups"]["state"] == "ready":
            return True
        await asyncio.sleep(0.1)
    return False


async def test_a_metrics_request_reads_the_rollup_state_at_most_twice(
    settings: Settings, db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once for its cluster time, once in the snapshot that reads the rollups (``confirm``):
    the embedded database runs one operation at a time, so each extra read is latency."""
    tenant = await make_tenant(db, instances={"sales": False})
    sales = tenant.instance_ids["sales"]
    await db.messages.insert_one(message(sales, days_ago=1))
    commands = _Commands(db.name)
    listening = functools.partial(AsyncMongoClient, event_listeners=[commands])
    monkeypatch.setattr(resolvers.db, "AsyncMongoClient", listening)  # the app's own client
    patient = settings.model_copy(  # a loaded machine; no reconcile reading beside it
        update={"rollups_wait_ms": 10_000, "rollups_reconcile_minutes": 0}
    )
    query = {"query": '{ metrics(instances: ["sales"]) { totalMessages } }'}
    async with app_client(patient) as client:
        assert await _rollups_ready(client)
        await db.messages.insert_one(message(sales, days_ago=2))  # the request waits for it
        commands.on = True
        answer = await client.post("/graphql", json=query, headers={"token": tenant.account_token})
        commands.on = False
    assert answer.json()["data"] == {"metrics": {"totalMessages": 2}}
    reads = [sent for sent in commands.sent if sent.get("find") == STATE_COLLECTION]
    confirmed = [sent for sent in reads if "txnNumber" in sent]
    assert len(confirmed) == 1, reads  # the rollups answered, vouched for in their snapshot
    assert len(reads) <= 2, reads
