"""The consumer's kept reads: a repeated request reads only the state, and every answer
is the one the database would give, whatever was written between two requests."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from graph import Settings
from graph.context import Context
from graph.query import schema
from graph.types import format_datetime
from resolvers import Database, InstanceRef, authenticate
from resolvers.rollups import ranges
from resolvers.rollups.cache import ReadCache
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from resolvers.rollups.service import RollupService
from resolvers.timeranges import Interval, TimeRange, series_bounds
from tests.factories import NOW, Tenant, app_client, make_tenant, message
from tests.test_rollups_consumer import settle

# the 7- and 30-day cutoffs fall inside a quarter hour, whose messages are read raw
LATER = NOW + timedelta(minutes=5)
SPAN = TimeRange(NOW - timedelta(days=9, hours=7, minutes=3), NOW + timedelta(hours=1))


# --- the cache alone ------------------------------------------------------------------


def _key(name: str, instance: str = "i1") -> tuple[str, str]:
    return (name, instance)


A, B, C, Z = _key("a"), _key("b"), _key("c"), _key("z")


def test_a_view_serves_what_was_kept_in_its_epoch() -> None:
    cache = ReadCache(10)
    view = cache.view(cache.mark())
    assert view is not None
    assert view.get(A) == (False, None)
    view.put(A, 1)
    view.put(B, None)  # that something does not exist is kept too
    again = cache.view(cache.mark())
    assert again is not None
    assert again.get(A) == (True, 1)
    assert again.take({"x": A, "y": B, "z": Z}) == ({"x": 1, "y": None}, ["z"])


def test_a_write_forgets_everything_and_ends_the_views_of_its_epoch() -> None:
    cache = ReadCache(10)
    mark = cache.mark()
    view = cache.view(mark)
    assert view is not None
    view.put(A, 1)
    with cache.writing():
        assert cache.mark() is None  # no request starts an epoch while a write is under way
        assert view.get(A) == (False, None)
        view.put(B, 2)
    view.put(C, 3)
    assert len(cache) == 0
    assert cache.view(mark) is None  # a request whose snapshot may hold the write
    fresh = cache.view(cache.mark())
    assert fresh is not None and fresh.get(A) == (False, None)


def test_a_write_to_some_instances_forgets_and_ends_only_their_reads() -> None:
    cache = ReadCache(10)
    mark = cache.mark()
    view = cache.view(mark)
    assert view is not None
    ours, theirs = _key("a", "ours"), _key("a", "theirs")
    view.put(ours, 1)
    view.put(theirs, 2)
    with cache.writing(["theirs"]):
        assert cache.mark() is not None  # other instances' reads go on
        assert view.get(theirs) == (False, None)
        view.put(theirs, 3)  # read before or after the write: not kept
        assert view.get(ours) == (True, 1)
        during = cache.view(cache.mark())
        assert during is not None
        during.put(theirs, 4)
        assert during.get(theirs) == (False, None)
    view.put(theirs, 5)  # this request's snapshot may be from before the write
    assert view.get(ours) == (True, 1) and view.get(theirs) == (False, None)
    after = cache.view(cache.mark())
    assert after is not None
    after.put(theirs, 6)
    assert after.get(theirs) == (True, 6) and after.get(ours) == (True, 1)
    assert len(cache) == 2


def test_the_least_recently_used_are_forgotten_past_the_limit() -> None:
    cache = ReadCache(2)
    view = cache.view(cache.mark())
    assert view is not None
    view.put(A, 1)
    view.put(B, 2)
    view.get(A)
    view.put(C, 3)
    assert len(cache) == 2
    assert [view.get(key)[0] for key in (A, B, C)] == [True, False, True]
    with cache.writing(["i1"]):  # what was forgotten for room is not forgotten again
        pass
    assert len(cache) == 0


def test_a_cache_of_no_entries_is_off() -> None:
    cache = ReadCache(0)
    assert cache.view(cache.mark()) is None


def test_lasting_entries_outlive_writes_within_their_budget() -> None:
    cache = ReadCache(10, lasting_values=5)
    cache.keep_lasting("a", {"x"}, size=1)
    cache.keep_lasting("b", {"y", "z"}, size=2)
    with cache.writing():
        pass
    assert cache.lasting("a") == {"x"}
    cache.keep_lasting("c", set("pqr"), size=3)  # the least recently used makes room
    assert [cache.lasting(key) is not None for key in "abc"] == [True, False, True]
    cache.keep_lasting("d", set("abcdef"), size=6)  # larger than the budget: not kept
    assert cache.lasting("d") is None and cache.lasting("c") is not None


# --- in the service ---------------------------------------------------------------------


class _Finds(monitoring.CommandListener):
    """Queries sent, by collection, and transactions committed."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find":
            self.counts[str(event.command["find"])] += 1
        elif event.command_name == "commitTransaction":
            self.counts["commitTransaction"] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def tenant(db: Database) -> Tenant:
    tenant = await make_tenant(db, instances={"sales": False, "support": True})
    sales, support = tenant.instance_ids["sales"], tenant.instance_ids["support"]
    docs = [
        message(sales, days_ago=days, chatId=f"c{k}", status=status)
        for k, (days, status) in enumerate(
            [(0.1, "sent"), (2, "read"), (6.999, "sent"), (7.001, "read"), (29.999, "sent")]
        )
    ]
    docs += [
        message(support, days_ago=6.998, isGroup=True, chatId="g@g.us", sender="p@s"),
        message(support, days_ago=7.002),
        message(support, days_ago=30.001, type="image", media={"type": "image"}),
    ]
    await db.messages.insert_many(docs)
    return tenant


@contextlib.asynccontextmanager
async def _served(
    db: Database, uri: str, options: ConsumerOptions
) -> AsyncIterator[tuple[RollupService, RollupConsumer, _Finds]]:
    """A service whose consumer leads, on a client whose reads are counted, settled."""
    finds = _Finds()
    client: AsyncMongoClient[dict[str, Any]]
    client = AsyncMongoClient(uri, tz_aware=True, event_listeners=[finds])
    async with client:
        consumer = RollupConsumer(db=client[db.name], holder="kept", options=options)
        consumer.start()
        try:
            await settle(db, consumer)
            yield RollupService(db=client[db.name], consumer=consumer, wait_s=10), consumer, finds
        finally:
            await consumer.stop()


def _refs(tenant: Tenant) -> list[InstanceRef]:
    ids = tenant.instance_ids
    return [
        InstanceRef(id=ids["sales"], name="sales", ignore_group_messages=False),
        InstanceRef(id=ids["support"], name="support", ignore_group_messages=True),
    ]


async def _everything(service: RollupService, refs: list[InstanceRef]) -> Any:
    kolkata = series_bounds(range=SPAN, interval=Interval.DAY, timezone="Asia/Kolkata")
    hours = series_bounds(range=SPAN, interval=Interval.HOUR, timezone="Asia/Kathmandu")
    return (
        await service.metrics(instances=refs, now=LATER),
        await service.metrics_by_instance(instances=refs, now=LATER),
        await service.metrics(instances=refs, now=LATER, range=SPAN, unique=False),
        await service.metrics_by_instance(instances=refs, now=LATER, range=SPAN),
        await service.series(instances=refs, interval=Interval.DAY, bounds=kolkata),
        await service.series(instances=refs, interval=Interval.HOUR, bounds=hours),
        await service.summaries(instances=refs),
    )


_ROLLUP_READS = ("rollup_instances", "rollup_buckets", "rollup_value_sets", "messages")


async def test_a_repeated_request_reads_only_the_state(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    refs = _refs(tenant)
    scanner = RollupService(db=db, consumer=None)
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, _, finds):
        first = await _everything(service, refs)
        read_first = {name: finds.counts[name] for name in _ROLLUP_READS}
        again = await _everything(service, refs)
        read_again = {name: finds.counts[name] - read_first[name] for name in _ROLLUP_READS}
    assert first == again == await _everything(scanner, refs)
    assert read_first["rollup_buckets"] > 0 and read_first["messages"] > 0
    assert read_again == dict.fromkeys(_ROLLUP_READS, 0)


async def test_a_request_whose_reads_are_all_kept_needs_no_snapshot(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """It reads the state once, for its cluster time, and starts no transaction."""
    refs = _refs(tenant)
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, _, finds):
        await _everything(service, refs)
        before = finds.counts.copy()
        await _everything(service, refs)
        again = finds.counts - before
    requests = 7  # in _everything
    assert again["rollup_state"] == requests and not again["commitTransaction"], again


async def test_each_write_after_a_kept_read_is_in_the_next_answer(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """Every kind of change that reaches a kept document or quarter, each followed at
    once (no settling: the request waits for its own cluster time) by a request."""
    refs = _refs(tenant)
    sales = refs[0].id
    scanner = RollupService(db=db, consumer=None)
    edge = NOW - timedelta(days=7)
    changes = [
        lambda: db.messages.insert_one(message(sales, timestamp=edge + timedelta(minutes=7))),
        lambda: db.messages.update_many({"instanceId": sales}, {"$set": {"status": "played"}}),
        # within the cutoff's quarter hour, across the cutoff: no bucket count changes
        lambda: db.messages.update_one(
            {"timestamp": edge + timedelta(minutes=7)},
            {"$set": {"timestamp": edge + timedelta(minutes=2)}},
        ),
        lambda: db.messages.update_one({"chatId": "c0"}, {"$set": {"isGroup": True}}),
        lambda: db.messages.delete_one({"chatId": "c2"}),
        lambda: db.messages.insert_one(message(sales, days_ago=8.5, chatId="new")),
    ]
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, *_):
        await _everything(service, refs)
        for step, change in enumerate(changes):
            await change()
            answers = await _everything(service, refs)
            assert answers == await _everything(scanner, refs), step


async def test_a_write_to_one_instance_leaves_what_was_kept_of_the_others(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """A busy instance's writes do not send the quiet ones back to the database; every
    answer is still the scan's."""
    sales, support = _refs(tenant)
    scanner = RollupService(db=db, consumer=None)
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, _, finds):
        await _everything(service, [sales, support])
        for days_ago in (0.01, 3.0, 7.0001):
            await db.messages.insert_one(message(support.id, days_ago=days_ago))
            before = finds.counts.copy()
            quiet = await _everything(service, [sales])
            read = finds.counts - before
            assert not any(read[name] for name in _ROLLUP_READS), read
            assert quiet == await _everything(scanner, [sales])
            assert await _everything(service, [support]) == await _everything(scanner, [support])


async def test_rollups_another_process_wrote_are_read_from_the_database(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """Only this process's writes reach the rollups while it leads; should another have
    written meanwhile (a lease taken over while this process stalled), the state names
    another holder and nothing kept is used."""
    refs = _refs(tenant)
    quiet = ConsumerOptions(idle_poll=0.01, refresh_every=3600)  # never notices by refreshing
    async with _served(db, mongodb_uri, quiet) as (service, consumer, _):
        kept = await service.metrics(instances=refs[:1], now=LATER)
        await db.rollup_state.update_one({"_id": "consumer"}, {"$set": {"holder": "another"}})
        await db.rollup_instances.update_one({"_id": refs[0].id}, {"$inc": {"c.o.n": 1000}})
        assert consumer.status().phase == "ready"
        found = await service.metrics(instances=refs[:1], now=LATER)
    assert found.total_messages == kept.total_messages + 1000


async def test_the_cache_holds_at_most_its_limit_and_stays_exact(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    refs = _refs(tenant)
    scanner = RollupService(db=db, consumer=None)
    options = ConsumerOptions(idle_poll=0.01, cache_entries=5)
    async with _served(db, mongodb_uri, options) as (service, consumer, _):
        first = await _everything(service, refs)
        assert len(consumer.reads) == 5
        again = await _everything(service, refs)
    assert first == again == await _everything(scanner, refs)


@pytest.mark.parametrize("entries", [0, 10_000])
async def test_the_app_keeps_reads_unless_told_not_to(
    settings: Settings, db: Database, tenant: Tenant, entries: int
) -> None:
    """Seen through a rollup document changed behind the consumer's back (which only a
    process that leads may do): kept, the answer does not move; with
    ``ROLLUPS_CACHE_ENTRIES=0`` every request reads it."""
    query = {"query": '{ metrics(instances: ["sales"]) { totalMessages } }'}
    headers = {"token": tenant.account_token}
    patient = settings.model_copy(
        update={"rollups_wait_ms": 10_000, "rollups_cache_entries": entries}
    )
    async with app_client(patient) as client:
        for _ in range(300):
            if (await client.get("/health")).json()["checks"]["rollups"]["state"] == "ready":
                break
            await asyncio.sleep(0.1)
        before = (await client.post("/graphql", json=query, headers=headers)).json()
        sales = tenant.instance_ids["sales"]
        await db.rollup_instances.update_one({"_id": sales}, {"$inc": {"c.o.n": 1000}})
        after = (await client.post("/graphql", json=query, headers=headers)).json()
    moved = after["data"]["metrics"]["totalMessages"] - before["data"]["metrics"]["totalMessages"]
    assert moved == (1000 if entries == 0 else 0)


async def test_answers_while_writes_arrive_are_states_between_before_and_after(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """Requests through the kept reads while inserts arrive (one at a time): each answer
    holds every insert acknowledged before it began and none not sent by its end, and
    its parts agree with each other (no mix of two states); once settled, the scan's."""
    refs = _refs(tenant)[:1]
    sales = refs[0].id
    base = await db.messages.count_documents({"instanceId": sales})
    dated = {"$gte": SPAN.start, "$lt": SPAN.end}
    base_span = await db.messages.count_documents({"instanceId": sales, "timestamp": dated})
    acked, sent, stop = 0, 0, asyncio.Event()

    async def writer() -> None:
        nonlocal acked, sent
        while not stop.is_set():
            sent += 1
            days = (sent % 18) / 2  # across the 7-day edge, and in the series' span
            doc = message(sales, days_ago=days, chatId=f"w{sent}", status="sent")
            await db.messages.insert_one(doc)
            acked += 1
            await asyncio.sleep(0.003)

    bounds = series_bounds(range=SPAN, interval=Interval.DAY, timezone="Asia/Kolkata")
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, *_):
        writing = asyncio.create_task(writer())
        try:
            for _ in range(25):
                low = acked
                found = await service.metrics(instances=refs, now=LATER)
                assert base + low <= found.total_messages <= base + sent
                assert sum(found.messages_by_type.values()) == found.total_messages
                assert sum(found.messages_by_status.values()) == found.total_messages
                assert found.messages_sent + found.messages_received == found.total_messages
                assert found.messages_last_7_days <= found.messages_last_30_days
                low = acked
                points = await service.series(instances=refs, interval=Interval.DAY, bounds=bounds)
                in_span = sum(point.total_messages for point in points)
                assert base_span + low <= in_span <= base_span + sent
        finally:
            stop.set()
            await writing
        everything = await _everything(service, _refs(tenant))
    assert everything == await _everything(RollupService(db=db, consumer=None), _refs(tenant))


async def test_a_series_plans_only_the_points_not_kept(
    db: Database, mongodb_uri: str, tenant: Tenant, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A series whose range moved (a new first and last point around kept ones, as a
    repeated "last 7 days" is) plans and reads only its new points; every answer is the
    scan's."""
    refs = _refs(tenant)[:1]
    scanner = RollupService(db=db, consumer=None)
    planned: list[int] = []
    plan = ranges.plan_series

    def planning(cuts: Any, **kwargs: Any) -> Any:
        planned.append(len(cuts) - 1)
        return plan(cuts, **kwargs)

    monkeypatch.setattr(ranges, "plan_series", planning)
    first = series_bounds(range=SPAN, interval=Interval.HOUR, timezone="Asia/Kolkata")
    moved = TimeRange(SPAN.start + timedelta(minutes=17), SPAN.end + timedelta(minutes=41))
    later = series_bounds(range=moved, interval=Interval.HOUR, timezone="Asia/Kolkata")
    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, *_):
        for bounds in (first, later):
            found = await service.series(instances=refs, interval=Interval.HOUR, bounds=bounds)
            assert found == await scanner.series(
                instances=refs, interval=Interval.HOUR, bounds=bounds
            )
    # +05:30: hours start at :30 UTC. The start moved from 04:57 to 05:14 within a point
    # (a new first point); the end from 13:00 to 13:41, past 13:30: [12:30, 13:30) and
    # [13:30, 13:41) are new, the rest was kept. (The first run is planned twice: once
    # reading from kept documents alone, which lack its raw quarter, then in a snapshot.)
    assert planned[0] == len(first) and sorted(set(planned[1:])) == [1, 2], planned


async def test_a_repeated_series_shows_the_points_it_showed(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """The points of kept tallies are made once: a repeated series gives the same point
    objects, equal to the scan's; after a write to its instance, new ones, equal to it."""
    refs = _refs(tenant)[:1]
    scanner = RollupService(db=db, consumer=None)
    bounds = series_bounds(range=SPAN, interval=Interval.HOUR, timezone="Asia/Kolkata")

    async def both() -> list[Any]:
        found = await service.series(instances=refs, interval=Interval.HOUR, bounds=bounds)
        assert found == await scanner.series(instances=refs, interval=Interval.HOUR, bounds=bounds)
        return found

    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, *_):
        first, again = await both(), await both()
        await db.messages.insert_one(message(refs[0].id, days_ago=30, chatId="late"))
        after = await both()
    same = sum(point is shown for point, shown in zip(again, first, strict=True))
    assert same >= len(bounds) - 2  # all but the first and last point, at most
    assert not any(point is shown for point, shown in zip(after, again, strict=True))


SERIES = """query ($range: TimeRange!) {
  series(instances: ["sales"], range: $range, interval: HOUR, timezone: "Asia/Kolkata") {
    points { start end totalMessages messagesSent
      messagesByType { key count } messagesByStatus { key count } }
  }
}"""


async def test_a_repeated_series_answers_with_the_points_it_answered(
    db: Database, mongodb_uri: str, tenant: Tenant
) -> None:
    """What the API makes of kept points is made once: a repeated series answers with
    the same completed points, as the scan answers; after a write in its range, with
    new ones, as the scan answers."""
    caller = await authenticate(db=db, token=tenant.account_token)
    span = {"from": format_datetime(SPAN.start), "to": format_datetime(SPAN.end)}

    async def both(service: RollupService) -> list[Any]:
        answers = []
        for rollups in (service, None):  # None: the full scan
            context = Context(db=db, caller=caller, clock=lambda: LATER, rollups=rollups)
            result = await schema.execute(
                SERIES, variable_values={"range": span}, context_value=context
            )
            assert result.errors is None and result.data is not None
            answers.append(result.data["series"]["points"])
        assert answers[0] == answers[1]
        return answers[0]

    async with _served(db, mongodb_uri, ConsumerOptions(idle_poll=0.01)) as (service, *_):
        first, again = await both(service), await both(service)
        await db.messages.insert_one(message(tenant.instance_ids["sales"], days_ago=2))
        after = await both(service)
    same = sum(point is shown for point, shown in zip(again, first, strict=True))
    assert same >= len(first) - 2  # all but the first and last point, at most
    assert sum(p["totalMessages"] for p in after) == sum(p["totalMessages"] for p in again) + 1
    assert not any(point is shown for point, shown in zip(after, again, strict=True))


@pytest.mark.parametrize(
    ("missing", "runs"),
    [
        ([], []),
        ([0, 1, 2], [(0, 3)]),
        ([0, 5, 6, 9], [(0, 1), (5, 7), (9, 10)]),
        ([0, 2, 4, 6], [(0, 1), (2, 3), (4, 5), (6, 7)]),
        ([0, 2, 4, 6, 8], [(0, 9)]),  # past four runs, one from the first to the last
    ],
)
def test_the_points_not_kept_are_read_in_a_few_runs(
    missing: list[int], runs: list[tuple[int, int]]
) -> None:
    assert ranges._point_runs(missing) == runs
