"""Rollups without a change stream: the ``updatedAt`` watermark on a standalone server
(SecantusDB ``--standalone``), against the full scan."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, monitoring

from graph import Settings
from resolvers import Database, InstanceRef, fetch_metrics
from resolvers import metrics as metrics_module
from resolvers.rollups import read_rollup_metrics
from resolvers.rollups.freshness import check_freshness, confirm
from resolvers.rollups.service import RollupService
from resolvers.rollups.source import RollupSource
from resolvers.rollups.watermark import WatermarkOptions
from resolvers.rollups.watermark_state import LEDGER
from tests.factories import NOW, app_client, make_tenant, message
from tests.reference import KNOWN_STATUSES
from tests.strategies import INSTANCE_IDS, as_contract, messages

FAST = WatermarkOptions(idle_poll=0.02, refresh_every=0.02, retry_delay=0.05)


async def ready(source: RollupSource, *, timeout: float = 30.0) -> None:
    """Until the source has built the rollups and polled after this moment."""
    deadline = time.monotonic() + timeout
    while source.status().phase != "ready":
        task = source.task
        if task is not None and task.done():
            task.result()
        assert time.monotonic() < deadline, source.status()
        await asyncio.sleep(0.02)
    assert await source.watermark.position.wait_for(datetime.now(UTC), timeout=timeout)


@pytest.fixture
async def source(standalone_db: Database) -> AsyncIterator[RollupSource]:
    running = RollupSource(db=standalone_db, source="auto", watermark_options=FAST)
    running.start()
    await ready(running)
    yield running
    await running.stop()


def _ref(instance: ObjectId, *, ignore: bool = False) -> InstanceRef:
    return InstanceRef(id=instance, name=str(instance), ignore_group_messages=ignore)


async def _assert_exact(db: Database, instances: list[ObjectId], *, now: datetime) -> None:
    for refs in ([_ref(i) for i in instances], *([_ref(i, ignore=True)] for i in instances)):
        expected = as_contract(await fetch_metrics(db=db, instances=refs, now=now))
        got = as_contract(await read_rollup_metrics(db=db, instances=refs, now=now))
        assert got == expected, refs


async def test_auto_takes_the_watermark_where_there_is_no_change_stream(
    source: RollupSource,
) -> None:
    assert source.mode == "watermark"
    status = source.status()
    assert (status.phase, status.percent, status.behind) == ("ready", 100.0, 0)


async def test_a_build_and_the_polls_after_it_count_each_message_once(
    standalone_db: Database,
) -> None:
    """Messages written before the start are read by the build and again by the first
    poll (their updatedAt is inside its window)."""
    now = datetime.now(UTC)
    a = ObjectId()
    await standalone_db.messages.insert_many(
        [message(a, days_ago=d, updatedAt=now) for d in (0.5, 1, 8, 40)]
    )
    running = RollupSource(db=standalone_db, source="watermark", watermark_options=FAST)
    running.start()
    try:
        await ready(running)
        await _assert_exact(standalone_db, [a], now=now)
    finally:
        await running.stop()


# --- inserts and updates, against the full scan -----------------------------------------

_SETTINGS = settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

_updates = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["sent", "delivered", "read", "played", "", None]),
        "isGroup": st.sampled_from([True, False, None]),
        "fromMe": st.booleans(),
        "chatId": st.sampled_from(["a@s.whatsapp.net", "g1@g.us", "new@s.whatsapp.net"]),
        "timestamp": st.sampled_from([NOW - timedelta(days=d) for d in (0.01, 3, 8, 31)]),
    },
)
_steps = st.lists(
    st.one_of(
        st.tuples(st.just("insert"), messages()),
        st.tuples(st.just("status"), st.integers(0, 99), st.sampled_from(["read", "played"])),
        st.tuples(st.just("update"), st.integers(0, 99), _updates),
    ),
    min_size=1,
    max_size=10,
)


def _fresh_owner(doc: dict[str, Any], ids: dict[ObjectId, ObjectId]) -> dict[str, Any]:
    """``doc`` for this example's own instances (odd owners stay odd)."""
    owner = doc.get("instanceId")
    if isinstance(owner, ObjectId):
        doc["instanceId"] = ids[owner]
    elif isinstance(owner, list):
        doc["instanceId"] = [ids.get(item, item) for item in owner]
    elif isinstance(owner, str):
        doc["instanceId"] = str(ids[ObjectId(owner)])
    return doc


async def _write(
    db: Database, step: tuple[Any, ...], written: list[Any], ids: dict[Any, Any]
) -> None:
    kind, *args = step
    if kind == "insert":
        doc = _fresh_owner(dict(args[0]), ids) | {"updatedAt": datetime.now(UTC)}
        written.append((await db.messages.insert_one(doc)).inserted_id)
    elif written:
        changes = {"status": args[1]} if kind == "status" else dict(args[1])
        target = written[args[0] % len(written)]
        await db.messages.update_one(
            {"_id": target}, {"$set": {**changes, "updatedAt": datetime.now(UTC)}}
        )


@_SETTINGS
@given(steps=_steps)
async def test_inserts_and_updates_read_back_as_the_full_scan(
    standalone_db: Database, source: RollupSource, steps: list[tuple[Any, ...]]
) -> None:
    ids = {i: ObjectId() for i in INSTANCE_IDS}
    written: list[Any] = []
    for step in steps:
        await _write(standalone_db, step, written, ids)
    asked = list(ids.values())
    verdict = await check_freshness(db=standalone_db, instances=asked, consumer=source, wait=10)
    assert verdict.usable == set(asked), verdict.reason
    await _assert_exact(standalone_db, asked, now=NOW)


# --- idempotent, crash-safe, one leader -------------------------------------------------


async def test_polls_that_read_the_same_messages_again_change_nothing(
    standalone_db: Database,
) -> None:
    """With an overlap of an hour every poll reads every message written here again."""
    options = WatermarkOptions(overlap=timedelta(hours=1), idle_poll=0.02, refresh_every=0.02)
    running = RollupSource(db=standalone_db, source="watermark", watermark_options=options)
    running.start()
    a, b = ObjectId(), ObjectId()
    try:
        await ready(running)
        for days in (0.2, 2, 9):
            await standalone_db.messages.insert_one(
                message(a, days_ago=days, updatedAt=datetime.now(UTC))
            )
        await standalone_db.messages.insert_one(
            message(b, isGroup=True, updatedAt=datetime.now(UTC))
        )
        await standalone_db.messages.update_many(
            {"instanceId": a}, {"$set": {"status": "played", "updatedAt": datetime.now(UTC)}}
        )
        for _ in range(4):
            running.watermark.forget_seen()  # compare with the ledger, not this process's memory
            assert await running.watermark.position.wait_for(datetime.now(UTC), timeout=10)
            await _assert_exact(standalone_db, [a, b], now=NOW)
        assert await standalone_db[LEDGER].count_documents({}) == 4
    finally:
        await running.stop()


async def test_a_batch_cut_off_half_written_is_built_again(standalone_db: Database) -> None:
    a, b = ObjectId(), ObjectId()
    await standalone_db.messages.insert_many(
        [message(a, days_ago=d, updatedAt=datetime.now(UTC)) for d in (1, 2)]
        + [message(b, updatedAt=datetime.now(UTC))]
    )
    first = RollupSource(db=standalone_db, source="watermark", watermark_options=FAST)
    first.start()
    await ready(first)
    await first.stop()
    # what a crash between the rollups and the ledger of a batch leaves: A counted twice
    await standalone_db.rollup_instances.update_one({"_id": a}, {"$inc": {"c.o.n": 2}})
    await standalone_db.rollup_state.update_one(
        {"_id": "consumer"}, {"$inc": {"seq": 1}, "$set": {"dirty": [a]}}
    )
    refs = [_ref(a), _ref(b)]
    expected = await fetch_metrics(db=standalone_db, instances=refs, now=NOW)
    assert await read_rollup_metrics(db=standalone_db, instances=refs, now=NOW) != expected

    second = RollupSource(db=standalone_db, source="watermark", watermark_options=FAST)
    second.start()
    try:
        await ready(second)
        verdict = await check_freshness(db=standalone_db, instances=[a, b], consumer=second)
        assert verdict.usable == {a, b}
        assert await read_rollup_metrics(db=standalone_db, instances=refs, now=NOW) == expected
    finally:
        await second.stop()


async def test_half_written_instances_are_not_vouched_for(standalone_db: Database) -> None:
    a, b = ObjectId(), ObjectId()
    running = RollupSource(db=standalone_db, source="watermark", watermark_options=FAST)
    running.start()
    try:
        await ready(running)
        verdict = await check_freshness(db=standalone_db, instances=[a, b], consumer=running)
        assert verdict.usable == {a, b}
        # a batch to A starts between the request's check and its read of the rollups
        await standalone_db.rollup_state.update_one(
            {"_id": "consumer"}, {"$inc": {"seq": 1}, "$set": {"dirty": [a]}}
        )
        assert await confirm(db=standalone_db, freshness=verdict) == frozenset()
        async with (
            standalone_db.client.start_session() as session,
            await session.start_transaction(),
        ):
            assert await confirm(db=standalone_db, freshness=verdict, session=session) == {b}
    finally:
        await running.stop(release=True)


async def test_one_leader_the_other_reads_its_watermark_and_takes_over(
    standalone_db: Database,
) -> None:
    options = WatermarkOptions(
        idle_poll=0.02, refresh_every=0.02, lease_ttl=timedelta(seconds=1), renew_every=0.2
    )
    first, second = (
        RollupSource(db=standalone_db, source="auto", watermark_options=options, holder=name)
        for name in ("first", "second")
    )
    first.start()
    await ready(first)
    second.start()
    a = ObjectId()
    try:
        await asyncio.sleep(0.3)
        assert second.status().phase == "standby"
        await standalone_db.messages.insert_one(message(a, updatedAt=datetime.now(UTC)))
        verdict = await check_freshness(db=standalone_db, instances=[a], consumer=second, wait=10)
        assert verdict.usable == {a}
        await _assert_exact(standalone_db, [a], now=NOW)

        await first.stop(release=False)  # as if it died: its lease runs out
        await standalone_db.messages.insert_one(message(a, days_ago=3, updatedAt=datetime.now(UTC)))
        await ready(second)
        await _assert_exact(standalone_db, [a], now=NOW)
    finally:
        await first.stop()
        await second.stop()


# --- the service --------------------------------------------------------------------------

_QUERY = {
    "query": '{ metrics(instances: ["sales"]) '
    "{ totalMessages messagesLast7Days uniqueChats messagesByStatus { key count } } }"
}


async def _health(client: httpx.AsyncClient) -> dict[str, Any]:
    for _ in range(300):
        rollups: dict[str, Any] = (await client.get("/health")).json()["checks"]["rollups"]
        if rollups["state"] == "ready":
            return rollups
        await asyncio.sleep(0.05)
    raise AssertionError(rollups)


async def test_the_service_on_a_standalone_answers_writes_at_once_without_a_scan(
    standalone_uri: str, standalone_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant = await make_tenant(standalone_db)
    sales = tenant.instance_ids["sales"]
    await standalone_db.messages.insert_one(message(sales, days_ago=10, status="sent"))
    patient = Settings(
        mongodb_uri=standalone_uri,
        mongodb_database=standalone_db.name,
        rollups_wait_ms=10_000,  # a loaded machine
    )
    async with app_client(patient) as client:
        rollups = await _health(client)
        assert rollups["source"] == "watermark" and rollups["leader"] is True
        assert (rollups["percent"], rollups["behind"], rollups["reconcileMinutes"]) == (100, 0, 60)
        assert rollups["lagSeconds"] >= 0

        build = metrics_module.build_metrics_pipeline

        def forbidden(**kwargs: Any) -> Any:
            raise AssertionError("the service scanned the messages")

        monkeypatch.setattr(metrics_module, "build_metrics_pipeline", forbidden)
        for step in range(3):
            now = datetime.now(UTC)
            await standalone_db.messages.insert_one(
                message(sales, days_ago=0.1, chatId=f"c{step}@s.whatsapp.net", updatedAt=now)
            )
            await standalone_db.messages.update_many(
                {"instanceId": sales}, {"$set": {"status": f"s{step}", "updatedAt": now}}
            )
            headers = {"token": tenant.account_token}
            answer = (await client.post("/graphql", json=_QUERY, headers=headers)).json()
            assert answer["data"]["metrics"] == {
                "totalMessages": step + 2,
                "messagesLast7Days": step + 1,
                "uniqueChats": step + 2,
                "messagesByStatus": [
                    *({"key": key, "count": 0} for key in KNOWN_STATUSES),
                    {"key": f"s{step}", "count": step + 2},
                ],
            }
        monkeypatch.setattr(metrics_module, "build_metrics_pipeline", build)


async def test_health_names_the_change_stream_on_a_replica_set(http: httpx.AsyncClient) -> None:
    rollups = await _health(http)
    assert rollups["source"] == "change-stream"


class _Transactions(monitoring.CommandListener):
    """Counts the commands that start a transaction."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.count += bool(event.command.get("startTransaction"))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_without_transactions_the_rollups_are_read_plainly_and_checked(
    standalone_uri: str, standalone_db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A standalone mongod has no transactions: the service reads the rollups without
    one, and a batch written between two of its reads sends it to the scan."""
    counter = _Transactions()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        standalone_uri, tz_aware=True, event_listeners=[counter]
    )
    async with client:
        db = client[standalone_db.name]
        running = RollupSource(
            db=db, source="watermark", watermark_options=FAST, transactions=False
        )
        service = RollupService(db=db, consumer=running, wait_s=10)
        service.start()
        a = ObjectId()
        try:
            await ready(running)
            await db.messages.insert_one(message(a, updatedAt=datetime.now(UTC)))
            build = metrics_module.build_metrics_pipeline

            def forbidden(**kwargs: Any) -> Any:
                raise AssertionError("the service scanned the messages")

            monkeypatch.setattr(metrics_module, "build_metrics_pipeline", forbidden)
            got = await service.metrics(instances=[_ref(a)], now=NOW)
            monkeypatch.setattr(metrics_module, "build_metrics_pipeline", build)
            assert got == await fetch_metrics(db=db, instances=[_ref(a)], now=NOW)
            assert counter.count == 0

            verdict = await check_freshness(db=db, instances=[a], consumer=running)
            assert verdict.usable == {a} and not verdict.snapshot
            await db.messages.insert_one(message(a, days_ago=2, updatedAt=datetime.now(UTC)))
            assert await running.watermark.position.wait_for(datetime.now(UTC), timeout=10)
            assert await confirm(db=db, freshness=verdict) == frozenset()
        finally:
            await service.stop()
