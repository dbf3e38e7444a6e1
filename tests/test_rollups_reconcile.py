"""The periodic reconcile: drift in the rollups and what the watermark cannot see are
repaired, logged, and nothing is repaired that is not wrong (also while the consumer
lags behind the raw messages)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from bson import ObjectId

from graph.embedded import free_port, stop_process
from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.pipeline import MetricsResult
from resolvers.rollups import read_rollup_metrics
from resolvers.rollups.ranges import read_range_metrics
from resolvers.rollups.reconcile import ChangeStreamView, ReconcilePass, ReconcileReport
from resolvers.rollups.source import RollupSource, reconcile_period
from resolvers.timeranges import TimeRange
from tests.factories import NOW, message
from tests.server import wait_for_health
from tests.test_rollups_consumer import settle
from tests.test_rollups_watermark import FAST, ready

A, B = ObjectId(), ObjectId()
DAY = datetime(2026, 11, 24, tzinfo=UTC)  # NOW - 1 day, as message() dates it
_LOG = "resolvers.rollups.reconcile"


def _refs(*instances: ObjectId, ignore: bool = False) -> list[InstanceRef]:
    return [InstanceRef(id=i, name=str(i), ignore_group_messages=ignore) for i in instances]


async def _exact(db: Database) -> bool:
    for refs in (_refs(A, B), _refs(A, ignore=True), _refs(B)):
        expected = await fetch_metrics(db=db, instances=refs, now=NOW)
        if await read_rollup_metrics(db=db, instances=refs, now=NOW) != expected:
            return False
    return True


async def _seed(db: Database) -> None:
    now = datetime.now(UTC)
    await db.messages.insert_many(
        [
            message(A, days_ago=1, updatedAt=now),
            message(A, days_ago=1, chatId="g@g.us", isGroup=True, updatedAt=now),
            message(A, days_ago=1.01, status="sent", updatedAt=now),
            message(A, days_ago=12, updatedAt=now),
            message(B, days_ago=3, updatedAt=now),
        ]
    )


@pytest.fixture
async def watermark(standalone_db: Database) -> AsyncIterator[RollupSource]:
    await _seed(standalone_db)
    running = RollupSource(db=standalone_db, source="auto", watermark_options=FAST)
    running.start()
    await ready(running)
    yield running
    await running.stop()


@pytest.fixture
async def stream(db: Database) -> AsyncIterator[RollupSource]:
    await _seed(db)
    running = RollupSource(db=db, source="auto")
    running.start()
    await settle(db, running)
    assert running.mode == "change-stream"
    yield running
    await running.stop()


def _fields(report: ReconcileReport) -> dict[str, tuple[Any, Any]]:
    return {repair.field: (repair.before, repair.after) for repair in report.repairs}


# --- what the watermark cannot see ----------------------------------------------------------


async def test_a_delete_is_repaired_by_the_reconcile_and_logged(
    standalone_db: Database, watermark: RollupSource, caplog: pytest.LogCaptureFixture
) -> None:
    gone = await standalone_db.messages.find_one({"instanceId": A, "status": "sent"})
    assert gone is not None
    await standalone_db.messages.delete_one({"_id": gone["_id"]})
    assert await watermark.watermark.position.wait_for(datetime.now(UTC), timeout=10)
    assert not await _exact(standalone_db)  # a delete moves no updatedAt: still counted

    with caplog.at_level(logging.INFO, logger=_LOG):
        report = await watermark.reconcile()

    assert [(fix.message, fix.instance, fix.day) for fix in report.fixes] == [(gone["_id"], A, DAY)]
    fields = _fields(report)
    assert fields["rollup_buckets d 2026-11-24T00:00:00+00:00 c.o.n"] == (2, 1)
    assert fields["rollup_buckets d 2026-11-24T00:00:00+00:00 c.o.st.sent"] == (1, 0)
    lines = [(r.getMessage(), r.__dict__) for r in caplog.records if r.name == _LOG]
    assert any(f"message {gone['_id']} is gone" in text for text, _ in lines), lines
    assert any(
        extra.get("field") == "rollup_buckets d 2026-11-24T00:00:00+00:00 c.o.n"
        and (extra["instance"], extra["day"]) == (str(A), DAY.isoformat())
        and (extra["before"], extra["after"]) == (2, 1)
        for _, extra in lines
    ), lines
    assert await _exact(standalone_db)
    again = await watermark.reconcile()
    assert (again.repairs, again.fixes, again.aborted) == ([], [], None)


async def test_writes_that_leave_updated_at_behind_are_repaired(
    standalone_db: Database, watermark: RollupSource
) -> None:
    stale = datetime.now(UTC) - timedelta(hours=1)  # a writer's clock an hour behind
    await standalone_db.messages.insert_one(message(B, days_ago=3, updatedAt=stale))
    await standalone_db.messages.update_one(
        {"instanceId": A, "status": "sent"}, {"$set": {"status": "read", "updatedAt": stale}}
    )
    assert await watermark.watermark.position.wait_for(datetime.now(UTC), timeout=10)
    assert not await _exact(standalone_db)

    report = await watermark.reconcile()

    whats = sorted(fix.what for fix in report.fixes)
    assert whats == [
        "changed without a newer updatedAt",
        "was not counted (written without a newer updatedAt?)",
    ]
    assert await _exact(standalone_db)


async def test_the_reconcile_runs_by_itself_every_period(standalone_db: Database) -> None:
    await _seed(standalone_db)
    running = RollupSource(
        db=standalone_db,
        source="watermark",
        watermark_options=FAST,
        reconcile_every=timedelta(seconds=0.3),
    )
    running.start()
    try:
        await ready(running)
        await standalone_db.messages.delete_many({"instanceId": B})
        for _ in range(200):
            if await _exact(standalone_db):
                break
            await asyncio.sleep(0.05)
        assert await _exact(standalone_db)
    finally:
        await running.stop()


# --- drift in the rollups themselves ----------------------------------------------------------


async def _inject_drift(db: Database) -> None:
    day = {"i": A, "l": "d", "t": DAY}
    await db.rollup_buckets.update_one(day, {"$inc": {"c.o.n": 3, "c.o.st.read": 1}})
    await db.rollup_buckets.update_one(
        {"i": A, "l": "h", "t": DAY + timedelta(hours=11)}, {"$inc": {"c.o.t.text": -1}}
    )
    await db.rollup_buckets.delete_one({"i": A, "l": "q", "t": DAY + timedelta(hours=12)})
    await db.rollup_buckets.update_one(
        {"i": A, "l": "m", "t": datetime(2026, 11, 1, tzinfo=UTC)}, {"$inc": {"n.23.g": 2}}
    )
    stray = DAY - timedelta(days=5)
    await db.rollup_buckets.insert_one({"i": A, "l": "d", "t": stray, "c": {"o": {"n": 4}}})
    await db.rollup_instances.update_one(
        {"_id": A},
        {"$inc": {"c.g.n": 7, "u.chat.a": 1}, "$set": {"first.o": DAY - timedelta(days=99)}},
    )


_DRIFT = {
    "rollup_buckets d 2026-11-24T00:00:00+00:00 c.o.n": (5, 2),
    "rollup_buckets d 2026-11-24T00:00:00+00:00 c.o.st.read": (2, 1),
    "rollup_buckets h 2026-11-24T11:00:00+00:00 c.o.t.text": (0, 1),
    "rollup_buckets q 2026-11-24T12:00:00+00:00 c.g.n": (0, 1),
    "rollup_buckets d 2026-11-19T00:00:00+00:00 c.o.n": (4, 0),
    "rollup_buckets m 2026-11-01T00:00:00+00:00 n.23.g": (3, 1),
    "rollup_instances c.g.n": (8, 1),
    "rollup_instances u.chat.a": (3, 2),
    "rollup_instances first.o": (DAY - timedelta(days=99), NOW - timedelta(days=12)),
}


async def _drift_is_repaired(db: Database, running: RollupSource) -> None:
    await _inject_drift(db)
    assert not await _exact(db)

    report = await running.reconcile()

    fields = _fields(report)
    for name, values in _DRIFT.items():
        if values[0] != values[1]:
            assert fields.get(name) == values, (name, fields)
    assert report.fixes == [] and report.aborted is None
    assert await _exact(db)
    again = await running.reconcile()
    assert again.repairs == [] and again.aborted is None


async def test_drift_is_repaired_beside_the_change_stream(
    db: Database, stream: RollupSource
) -> None:
    await _drift_is_repaired(db, stream)


async def test_drift_is_repaired_with_the_watermark(
    standalone_db: Database, watermark: RollupSource
) -> None:
    await _drift_is_repaired(standalone_db, watermark)


async def test_a_day_the_reconcile_makes_again_counts_its_values_in_a_range(
    db: Database, stream: RollupSource
) -> None:
    """A repaired day gets a new values version, so a range reads its values again (a
    day without one is taken for a day without values)."""
    span = TimeRange(DAY - timedelta(days=2), DAY + timedelta(days=1))

    async def uniques(read: Any) -> tuple[int, int, int]:
        found = await read(db=db, instances=_refs(A), now=NOW, range=span)
        found = found if isinstance(found, MetricsResult) else found[A]
        return found.unique_chats, found.unique_groups, found.unique_contacts

    expected = await uniques(fetch_metrics)
    assert expected[0] == 2 and await uniques(read_range_metrics) == expected  # sets kept
    await db.rollup_buckets.delete_one({"i": A, "l": "d", "t": DAY})

    assert (await stream.reconcile()).repairs
    assert await uniques(read_range_metrics) == expected


async def test_no_repair_while_the_consumer_lags_behind_the_messages(
    db: Database, stream: RollupSource
) -> None:
    """Writes the consumer has not applied yet are not drift."""
    await stream.stop()
    await db.messages.insert_one(message(A, days_ago=1))
    await db.messages.update_one({"instanceId": A, "status": "sent"}, {"$set": {"status": "x"}})
    await db.messages.delete_one({"instanceId": B})
    await db.messages.update_one({"instanceId": A, "isGroup": True}, {"$set": {"timestamp": NOW}})

    report = await ReconcilePass(db=db, view=ChangeStreamView(db=db)).run()

    assert (report.repairs, report.aborted, report.instances) == ([], None, 2)
    restarted = RollupSource(db=db, source="change-stream")
    restarted.start()
    try:
        await settle(db, restarted)
        assert await _exact(db)
    finally:
        await restarted.stop()


# --- when it runs -----------------------------------------------------------------------------


def test_the_period_setting() -> None:
    assert reconcile_period(None) == timedelta(minutes=60)
    assert reconcile_period(0) is None
    assert reconcile_period(5) == timedelta(minutes=5)


async def test_serve_on_the_embedded_database_does_not_reconcile_by_default(
    tmp_path: Path,
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("MONGODB_URI",)}
    env.update(
        PORT=str(port),
        EMBEDDED_PORT=str(free_port()),
        EMBEDDED_DATA_DIR=str(tmp_path / "data"),
        DEMO_MESSAGES="5",
        LOG_LEVEL="warning",
    )
    env.pop("ROLLUPS_RECONCILE_MINUTES", None)
    log = tmp_path / "serve.log"
    script = Path(sys.executable).with_name("message-metrics")
    with log.open("wb") as out:
        process = subprocess.Popen(
            [str(script), "serve"], env=env, stdout=out, stderr=subprocess.STDOUT
        )
    try:
        url = f"http://127.0.0.1:{port}/health"
        await asyncio.to_thread(wait_for_health, url, process, log)
        async with httpx.AsyncClient() as client:
            rollups = (await client.get(url)).json()["checks"]["rollups"]
        assert rollups["reconcileMinutes"] is None, rollups
    finally:
        process.send_signal(signal.SIGTERM)
        await asyncio.to_thread(stop_process, process, grace=15)
