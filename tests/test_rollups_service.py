"""The service answers from the rollups, exactly, read-your-writes, one consumer per database."""

from __future__ import annotations

import asyncio
import dataclasses
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest

from graph import Settings
from graph.rest import LEGACY_FIELDS
from graph.types import format_datetime
from resolvers import Database, InstanceRef, fetch_metrics
from resolvers import metrics as metrics_module
from resolvers.pipeline import MetricsResult
from resolvers.rollups import service as service_module
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from resolvers.rollups.service import RollupService
from resolvers.timeranges import Interval, TimeRange, series_bounds
from tests.factories import NOW, Tenant, app_client, make_tenant, message
from tests.test_rollups_consumer import settle

QUERY = {"query": f'{{ metrics(instances: ["sales", "support"]) {{ {LEGACY_FIELDS} }} }}'}


async def _wait_ready(client: httpx.AsyncClient, *, tries: int = 300) -> str:
    state = ""
    for _ in range(tries):
        state = (await client.get("/health")).json()["checks"]["rollups"]["state"]
        if state == "ready":
            return state
        await asyncio.sleep(0.1)
    return state


async def _scan(db: Database, tenant: Tenant) -> dict[str, Any]:
    """The full-scan answer, reshaped like the GraphQL one, for the same instances."""
    refs = [
        InstanceRef(id=tenant.instance_ids["sales"], name="sales", ignore_group_messages=False),
        InstanceRef(id=tenant.instance_ids["support"], name="support", ignore_group_messages=True),
    ]
    return _as_graphql(await fetch_metrics(db=db, instances=refs, now=NOW))


def _as_graphql(result: MetricsResult) -> dict[str, Any]:
    """Every field of a ``MetricsResult`` as GraphQL writes it."""
    answer: dict[str, Any] = {}
    for field in dataclasses.fields(result):
        value = getattr(result, field.name)
        first, *rest = field.name.split("_")
        if isinstance(value, dict):
            value = [{"key": key, "count": count} for key, count in value.items()]
        elif isinstance(value, datetime):
            value = format_datetime(value)
        answer[first + "".join(word.capitalize() for word in rest)] = value
    return answer


def _subset(answer: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    assert len(expected) == 16  # every metric
    return {key: answer[key] for key in expected}


@dataclasses.dataclass
class _Scans:
    allowed: bool = True


def _forbid_scans(monkeypatch: pytest.MonkeyPatch) -> _Scans:
    """While ``allowed`` is false, building the full-scan pipeline fails the request."""
    scans = _Scans()
    build = metrics_module.build_metrics_pipeline

    def guarded(**kwargs: Any) -> Any:
        if not scans.allowed:
            raise AssertionError("the service scanned the messages")
        return build(**kwargs)

    monkeypatch.setattr(metrics_module, "build_metrics_pipeline", guarded)
    return scans


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    ids = tenant.instance_ids
    await db.messages.insert_many(
        [message(ids["sales"], days_ago=d, status="sent") for d in (1, 3, 9, 40)]
        + [message(ids["support"], days_ago=2, isGroup=True, chatId="g@g.us")]
    )
    return tenant


async def test_writes_are_visible_in_the_next_answer_without_a_scan(
    settings: Settings, db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = {"token": tenant.account_token}
    patient = settings.model_copy(update={"rollups_wait_ms": 10_000})  # a loaded machine
    async with app_client(patient) as client:
        assert await _wait_ready(client) == "ready"

        scanning = _forbid_scans(monkeypatch)
        ids = tenant.instance_ids
        for step in range(3):
            await db.messages.insert_one(message(ids["sales"], days_ago=0.5, status="pending"))
            await db.messages.update_one(
                {"instanceId": ids["sales"], "status": "sent"}, {"$set": {"status": "read"}}
            )
            await db.messages.delete_one({"instanceId": ids["sales"], "status": "pending"})
            await db.messages.insert_one(message(ids["support"], days_ago=1, chatId=f"c{step}"))
            scanning.allowed = False
            answer = (await client.post("/graphql", json=QUERY, headers=headers)).json()
            scanning.allowed = True
            assert "errors" not in answer, answer
            expected = await _scan(db, tenant)
            assert _subset(answer["data"]["metrics"], expected) == expected


async def test_an_instance_not_built_yet_is_answered_by_the_scan(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    async with app_client(settings.model_copy(update={"rollups": False})) as client:
        answer = (
            await client.post("/graphql", json=QUERY, headers={"token": tenant.account_token})
        ).json()
    expected = await _scan(db, tenant)
    assert _subset(answer["data"]["metrics"], expected) == expected


async def test_two_apps_on_one_database_have_one_consumer_and_both_answer_exactly(
    settings: Settings, db: Database, tenant: Tenant
) -> None:
    headers = {"token": tenant.account_token}
    async with app_client(settings) as first, app_client(settings) as second:
        assert await _wait_ready(first) == "ready"
        assert await _wait_ready(second) == "ready"
        states = [(await app.get("/health")).json()["checks"]["rollups"] for app in (first, second)]
        await db.messages.insert_one(message(tenant.instance_ids["sales"], days_ago=0.1))
        expected = await _scan(db, tenant)
        for app in (first, second):
            answer = (await app.post("/graphql", json=QUERY, headers=headers)).json()
            assert _subset(answer["data"]["metrics"], expected) == expected
    assert [state["state"] for state in states] == ["ready", "ready"]
    assert sorted(state["leader"] for state in states) == [False, True]


def _forbid_all_scans(monkeypatch: pytest.MonkeyPatch) -> _Scans:
    """While ``allowed`` is false, any full-scan aggregation (metrics, a range, a series
    or the instance counts) fails the request."""
    scans = _Scans()
    for name in ("build_metrics_pipeline", "build_range_pipeline", "build_match"):
        _guard(monkeypatch, scans, metrics_module, name)
    _guard(monkeypatch, scans, metrics_module, "build_series_pipeline")
    return scans


def _guard(monkeypatch: pytest.MonkeyPatch, scans: _Scans, module: Any, name: str) -> None:
    original = getattr(module, name)

    def guarded(**kwargs: Any) -> Any:
        if not scans.allowed:
            raise AssertionError(f"the service scanned the messages ({name})")
        return original(**kwargs)

    monkeypatch.setattr(module, name, guarded)


async def test_ranges_series_and_summaries_come_from_the_rollups_after_each_write(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    refs = [
        InstanceRef(id=tenant.instance_ids["sales"], name="sales", ignore_group_messages=False),
        InstanceRef(id=tenant.instance_ids["support"], name="support", ignore_group_messages=True),
    ]
    span = TimeRange(NOW - timedelta(days=5, hours=7, minutes=3), NOW + timedelta(hours=1))
    consumer = RollupConsumer(db=db, holder="test", options=ConsumerOptions(idle_poll=0.01))
    consumer.start()
    service = RollupService(db=db, consumer=consumer, wait_s=10)  # a loaded machine
    scanner = RollupService(db=db, consumer=None)
    try:
        await settle(db, consumer)
        scanning = _forbid_all_scans(monkeypatch)
        for step in range(3):
            await db.messages.insert_one(message(refs[0].id, days_ago=0.5 + step, status="sent"))
            await db.messages.insert_one(
                message(refs[1].id, days_ago=2 + step, isGroup=True, chatId="g@g.us")
            )
            await db.messages.delete_one({"instanceId": refs[0].id, "status": "sent"})
            scanning.allowed = False
            answers = await _everything(service, refs, span)
            scanning.allowed = True
            assert answers == await _everything(scanner, refs, span), step
    finally:
        await consumer.stop()


async def _everything(service: RollupService, refs: list[InstanceRef], span: TimeRange) -> Any:
    bounds = series_bounds(range=span, interval=Interval.DAY, timezone="Asia/Kolkata")
    series = await service.series(instances=refs, interval=Interval.DAY, bounds=bounds)
    return (
        await service.metrics(instances=refs, now=NOW, range=span),
        await service.metrics_by_instance(instances=refs, now=NOW, range=span),
        await service.metrics_by_instance(instances=refs, now=NOW),
        series,
        await service.summaries(instances=refs),
    )


async def test_value_sets_are_kept_only_from_rollups_the_state_vouches_for(
    db: Database, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rebuild that begins between the freshness check and the snapshot: the request is
    answered by the scan, and nothing read from the rollups it no longer trusts is kept."""
    ref = InstanceRef(id=tenant.instance_ids["sales"], name="sales", ignore_group_messages=False)
    span = TimeRange(NOW - timedelta(days=20), NOW - timedelta(hours=1))
    consumer = RollupConsumer(db=db, holder="test", options=ConsumerOptions(idle_poll=0.01))
    consumer.start()
    service = RollupService(db=db, consumer=consumer, wait_s=10)
    real = service_module.check_freshness

    async def then_a_rebuild_begins(**kwargs: Any) -> Any:
        found = await real(**kwargs)
        await db.rollup_state.update_one({"_id": "consumer"}, {"$inc": {"generation": 1}})
        return found

    try:
        await settle(db, consumer)
        monkeypatch.setattr(service_module, "check_freshness", then_a_rebuild_begins)
        answer = await service.metrics(instances=[ref], now=NOW, range=span)
    finally:
        await consumer.stop()
    assert answer == await fetch_metrics(db=db, instances=[ref], now=NOW, range=span)
    assert answer.unique_chats == 1
    assert await db.rollup_value_sets.count_documents({}) == 0
