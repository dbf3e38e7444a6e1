"""A stateful test of the whole engine on a real server: random interleavings of writes,
setting toggles, clock advances, consumer restarts and crashes, and queries; after
every query the rollups answer exactly what the full scan answers, field by field.
Queries go through the service, as requests do, so they also use and keep the
consumer's kept reads (``cache.py``) between writes."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from datetime import datetime, timedelta
from typing import Any, TypeVar
from uuid import uuid4

import strawberry
from bson import ObjectId
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    multiple,
    rule,
    run_state_machine_as_test,
)
from strawberry.schema.config import StrawberryConfig

from graph.execution import PlainExecutionContext
from graph.types import DATETIME_SCALAR, format_datetime
from graph.types import SeriesPoint as GraphPoint
from resolvers import InstanceRef, ensure_indexes, fetch_metrics, open_client
from resolvers.metrics import fetch_series
from resolvers.pipeline import combine_metrics
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from resolvers.rollups.freshness import check_freshness
from resolvers.rollups.service import RollupService
from resolvers.timeranges import Interval, SeriesPoint, TimeRange, series_bounds
from tests.factories import NOW
from tests.strategies import INSTANCE_IDS, as_contract
from tests.strategies import messages as message_docs
from tests.test_rollups_consumer import settle
from tests.test_series import _as_reference

T = TypeVar("T")
OPTIONS = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, build_target=20)
QUERIED = INSTANCE_IDS[:3]
_MS = timedelta(milliseconds=1)

# dates from 40 days before the start clock to 5 days after it; the clock moves forward
_dates = st.integers(-40 * 86_400_000, 5 * 86_400_000).map(lambda ms: NOW + ms * _MS)
_statuses = st.sampled_from(["pending", "sent", "delivered", "read", "played", "failed", ""])
# forward moves of the clock, some landing a message right on a window's edge
_advances = st.one_of(
    st.integers(1, 3 * 86_400_000).map(lambda ms: ms * _MS),
    st.sampled_from([timedelta(days=7), timedelta(days=23), timedelta(minutes=15)]),
)


_SERIES_SPANS = {
    Interval.HOUR: timedelta(days=2),
    Interval.DAY: timedelta(days=20),
    Interval.WEEK: timedelta(days=60),
    Interval.MONTH: timedelta(days=150),
}


class Crash(Exception):
    """The consumer's process died between applying a batch and committing it."""


class RollupsMachine(RuleBasedStateMachine):
    uri: str = ""

    stored = Bundle("stored")

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.client = open_client(self.uri, server_selection_timeout_ms=5_000)
        self.db = self.client[f"stateful_{uuid4().hex[:12]}"]
        self.now: datetime = NOW
        self.ignore = dict.fromkeys(QUERIED, False)
        self.crashing = False
        self.consumer: RollupConsumer | None = None
        self.service: RollupService | None = None

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return self.loop.run_until_complete(coro)

    async def _hook(self) -> None:
        if self.crashing:
            self.crashing = False
            raise Crash

    def _start_consumer(self) -> RollupConsumer:
        consumer = RollupConsumer(
            db=self.db, holder="machine", options=OPTIONS, fault_hook=self._hook
        )
        self.run(_started(consumer))
        self.consumer = consumer
        self.service = RollupService(db=self.db, consumer=consumer)
        return consumer

    @initialize(target=stored, docs=st.lists(message_docs(_dates), max_size=12))
    def start(self, docs: list[dict[str, Any]]) -> Any:
        """Some history exists before the consumer first starts: it is built."""
        self.run(ensure_indexes(self.db))
        ids = self.run(self.db.messages.insert_many(docs)).inserted_ids if docs else []
        self._start_consumer()
        return multiple(*ids)

    @rule(target=stored, doc=message_docs(_dates))
    def insert(self, doc: dict[str, Any]) -> ObjectId:
        return self.run(self.db.messages.insert_one(doc)).inserted_id

    @rule(doc_id=stored, status=_statuses, late=st.integers(0, 600_000))
    def update_status(self, doc_id: ObjectId, status: str, late: int) -> None:
        update = {"$set": {"status": status, "updatedAt": self.now + late * _MS}}
        self.run(self.db.messages.update_one({"_id": doc_id}, update))

    @rule(doc_id=stored, when=_dates)
    def move_in_time(self, doc_id: ObjectId, when: datetime) -> None:
        self.run(self.db.messages.update_one({"_id": doc_id}, {"$set": {"timestamp": when}}))

    @rule(
        doc_id=stored,
        change=st.sampled_from(
            [
                {"$set": {"instanceId": [QUERIED[0]]}},
                {"$set": {"instanceId": QUERIED[1]}},
                {"$set": {"isGroup": "true", "fromMe": None}},
                {"$set": {"isGroup": True, "fromMe": False, "sender": "z@s.whatsapp.net"}},
                {"$unset": {"chatId": "", "type": "", "timestamp": ""}},
                {"$set": {"media": {"type": "a.b"}}},
                {"$set": {"timestamp": "2026-11-20"}},
            ]
        ),
    )
    def odd_update(self, doc_id: ObjectId, change: dict[str, Any]) -> None:
        self.run(self.db.messages.update_one({"_id": doc_id}, change))

    @rule(doc_id=consumes(stored))
    def delete(self, doc_id: ObjectId) -> None:
        self.run(self.db.messages.delete_one({"_id": doc_id}))

    @rule(instance=st.sampled_from(QUERIED))
    def toggle_ignore_group_messages(self, instance: ObjectId) -> None:
        self.ignore[instance] = not self.ignore[instance]

    @rule(step=_advances)
    def advance_clock(self, step: timedelta) -> None:
        self.now += step

    @rule(release=st.booleans())
    def restart_consumer(self, release: bool) -> None:
        assert self.consumer is not None
        self.run(self.consumer.stop(release=release))
        self._start_consumer()

    @rule(doc=message_docs(_dates))
    def crash_between_apply_and_commit(self, doc: dict[str, Any]) -> None:
        """The next commit dies after its writes; a new process takes over."""
        assert self.consumer is not None
        self.crashing = True
        self.run(self.db.messages.insert_one(doc))
        task = self.consumer.task
        assert task is not None
        done = self.run(asyncio.wait([task], timeout=30))[0]
        assert task in done and isinstance(task.exception(), Crash)
        self.run(self.consumer.stop(release=False))
        self._start_consumer()

    @rule(picked=st.lists(st.sampled_from(QUERIED), min_size=1, max_size=3, unique=True))
    def query(self, picked: list[ObjectId]) -> None:
        """A request for some instances: the rollups may answer it, and do so exactly."""
        self._check([picked, *([i] for i in picked)])

    @rule(
        picked=st.lists(st.sampled_from(QUERIED), min_size=1, max_size=3, unique=True),
        low=_dates,
        length=st.one_of(
            st.integers(0, 20 * 86_400_000), st.sampled_from([0, 1, 900_000, 86_400_000])
        ),
    )
    def query_range(self, picked: list[ObjectId], low: datetime, length: int) -> None:
        """Metrics over a range, from the rollups, equal the full scan's."""
        span = TimeRange(low, low + length * _MS)
        refs = self._refs(picked)
        self._settle_usable(picked)
        scan = self.run(fetch_metrics(db=self.db, instances=refs, now=self.now, range=span))
        found = self.run(
            self._service().metrics_by_instance(instances=refs, now=self.now, range=span)
        )
        assert as_contract(combine_metrics(found)) == as_contract(scan), (picked, span, self.now)

    @rule(
        picked=st.lists(st.sampled_from(QUERIED), min_size=1, max_size=3, unique=True),
        zone=st.sampled_from(["UTC", "Asia/Kolkata", "America/New_York", "Pacific/Chatham"]),
        interval=st.sampled_from(list(Interval)),
        low=_dates,
        length=st.floats(0, 1),
    )
    def query_series(
        self, picked: list[ObjectId], zone: str, interval: Interval, low: datetime, length: float
    ) -> None:
        """A series from the rollups equals the full scan's, point by point."""
        span = TimeRange(low, low + _SERIES_SPANS[interval] * length // _MS * _MS)
        bounds = series_bounds(range=span, interval=interval, timezone=zone)
        refs = self._refs(picked)
        self._settle_usable(picked)
        scan = self.run(fetch_series(db=self.db, instances=refs, bounds=bounds))
        found = self.run(self._service().series(instances=refs, interval=interval, bounds=bounds))
        assert found == scan, (picked, zone, interval, span)
        # answered twice through GraphQL: the second time from what the first completed
        # (graph.reuse), where the points were kept
        for _ in range(2):
            assert _answered(found) == _as_json(scan), (picked, zone, interval, span)

    def _refs(self, picked: list[ObjectId]) -> list[InstanceRef]:
        return [
            InstanceRef(id=i, name=str(i), ignore_group_messages=self.ignore[i]) for i in picked
        ]

    def _service(self) -> RollupService:
        assert self.service is not None
        return self.service

    def _settle_usable(self, asked: list[ObjectId]) -> None:
        """Wait for the consumer, and check that the rollups (not the scan) will answer."""
        assert self.consumer is not None
        self.run(settle(self.db, self.consumer))
        verdict = self.run(check_freshness(db=self.db, instances=asked, consumer=self.consumer))
        assert verdict.usable == set(asked), verdict

    @invariant()
    def rollups_equal_the_full_scan(self) -> None:
        """After every step, for all queried instances together (``query`` asks for
        fewer, and for each alone)."""
        self._check([QUERIED])

    def _check(self, selections: list[list[ObjectId]]) -> None:
        if self.consumer is None:
            return  # before initialize
        self._settle_usable(selections[0])
        for ids in selections:
            refs = self._refs(ids)
            scan = self.run(fetch_metrics(db=self.db, instances=refs, now=self.now))
            rollups = self.run(self._service().metrics(instances=refs, now=self.now))
            assert as_contract(rollups) == as_contract(scan), (ids, self.now)

    def teardown(self) -> None:
        try:
            if self.consumer is not None:
                self.run(self.consumer.stop())
            self.run(self.client.drop_database(self.db.name))
            self.run(self.client.close())
        finally:
            self.loop.close()


@strawberry.type
class _Points:
    @strawberry.field
    def points(self, info: strawberry.Info[list[SeriesPoint], None]) -> list[GraphPoint]:
        return [GraphPoint.from_point(point) for point in info.context]


_POINTS_SCHEMA = strawberry.Schema(
    query=_Points,
    config=StrawberryConfig(scalar_map={datetime: DATETIME_SCALAR}),
    execution_context_class=PlainExecutionContext,
)
_POINT_FIELDS = """{ points { start end totalMessages messagesSent messagesReceived
  groupMessages individualMessages messagesWithMedia
  messagesByType { key count } messagesByStatus { key count } } }"""


def _answered(points: list[SeriesPoint]) -> Any:
    """``points`` as the API answers them."""
    result = _POINTS_SCHEMA.execute_sync(_POINT_FIELDS, context_value=points)
    assert result.errors is None and result.data is not None
    return result.data["points"]


def _as_json(points: list[SeriesPoint]) -> list[dict[str, Any]]:
    """``points`` as ``_POINT_FIELDS`` should answer them, written out by hand."""
    return [
        {
            **_as_reference(point),
            "start": format_datetime(point.start),
            "end": format_datetime(point.end),
            "messagesByType": _pairs(point.messages_by_type),
            "messagesByStatus": _pairs(point.messages_by_status),
        }
        for point in points
    ]


def _pairs(counts: dict[str, int]) -> list[dict[str, Any]]:
    return [{"key": key, "count": count} for key, count in counts.items()]


async def _started(consumer: RollupConsumer) -> None:
    consumer.start()  # the task belongs to the running loop


def test_rollups_equal_the_full_scan_whatever_happens(mongodb_uri: str) -> None:
    RollupsMachine.uri = mongodb_uri
    run_state_machine_as_test(
        RollupsMachine,
        settings=settings(
            max_examples=20,
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
