"""Series in local calendars: the full scan and the rollups both equal the plain-Python
reference (brute-force local labels with zoneinfo), with messages on and beside the
local boundaries; the points sum to the metrics of the same range."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bson import ObjectId
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from pymongo import AsyncMongoClient, monitoring

from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.metrics import fetch_series
from resolvers.rollups import build_rollups, drop_rollups, ranges
from resolvers.rollups.keys import Level
from resolvers.rollups.ranges import SERIES_TOPS, read_series_tallies
from resolvers.rollups.store import BUCKETS
from resolvers.series import Tally, plan_scans, to_points
from resolvers.timeranges import Interval, SeriesPoint, TimeRange, series_bounds
from tests.reference import SERIES_FIELDS, reference_bounds, reference_series
from tests.strategies import INSTANCE_IDS, as_contract, messages, near, selections

_MS = timedelta(milliseconds=1)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


# each zone near its DST changes (Sao Paulo in 2018, when DST began at midnight)
ANCHORS = {
    "UTC": [_utc(2026, 11, 25, 12), _utc(2026, 12, 31, 20)],
    "America/New_York": [_utc(2026, 3, 8, 7), _utc(2026, 11, 1, 6)],
    "America/Sao_Paulo": [_utc(2018, 11, 4, 3), _utc(2018, 2, 18, 2)],
    "Asia/Kolkata": [_utc(2026, 11, 25, 12), _utc(2026, 2, 28, 18, 30)],
    "Asia/Kathmandu": [_utc(2026, 11, 25, 12), _utc(2026, 5, 31, 18, 15)],
    "Pacific/Chatham": [_utc(2026, 4, 4, 14), _utc(2026, 9, 26, 14)],
}
SPANS = {
    Interval.HOUR: timedelta(days=1),
    Interval.DAY: timedelta(days=6),
    Interval.WEEK: timedelta(days=30),
    Interval.MONTH: timedelta(days=120),
}


def _beside(mark: datetime) -> st.SearchStrategy[datetime]:
    """``mark``, a millisecond either side, or a few minutes off it."""
    return st.sampled_from([mark, mark, mark - _MS, mark + _MS, mark + timedelta(minutes=7)])


@st.composite
def series_cases(draw: st.DrawFn) -> dict[str, Any]:
    """A timezone, an interval, a range near a DST change (its ends on, beside or off
    the local boundaries) and messages on and beside the boundaries inside it."""
    zone = draw(st.sampled_from(sorted(ANCHORS)), label="zone")
    interval = draw(st.sampled_from(list(Interval)), label="interval")
    anchor = draw(st.sampled_from(ANCHORS[zone]))
    span = SPANS[interval]
    around = (anchor - span, anchor + span)
    bounds = reference_bounds(around, interval=interval.value, timezone=zone)
    marks = [low for low, _ in bounds[1:]]  # the local boundaries, not the window's ends
    first = draw(st.integers(0, len(marks) - 2))
    last = draw(st.integers(first + 1, min(first + 8, len(marks) - 1)))
    low, high = draw(_beside(marks[first])), draw(_beside(marks[last]))
    if draw(st.sampled_from([False] * 9 + [True])):
        high = low  # an empty range has no points
    inside = marks[first : last + 1]
    anywhere = st.integers(0, max(0, (high - low) // _MS - 1)).map(lambda ms: low + ms * _MS)
    dates = st.one_of(near(inside), st.sampled_from(inside).flatmap(_beside), anywhere)
    docs = draw(st.lists(messages(dates=dates), max_size=25), label="docs")
    return {"zone": zone, "interval": interval, "range": (low, high), "docs": docs}


def _refs(selection: list[tuple[ObjectId, bool]]) -> list[InstanceRef]:
    settings_by_id = dict(reversed(selection))
    return [
        InstanceRef(id=i, name=str(i), ignore_group_messages=settings_by_id[i])
        for i in dict.fromkeys(i for i, _ in selection)
    ]


def _as_reference(point: SeriesPoint) -> dict[str, Any]:
    return {
        "start": point.start,
        "end": point.end,
        "totalMessages": point.total_messages,
        "messagesSent": point.messages_sent,
        "messagesReceived": point.messages_received,
        "groupMessages": point.group_messages,
        "individualMessages": point.individual_messages,
        "messagesWithMedia": point.messages_with_media,
        "messagesByType": point.messages_by_type,
        "messagesByStatus": point.messages_by_status,
    }


def _sum(points: list[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for field in SERIES_FIELDS:
        values = [point[field] for point in points]
        if field in ("messagesByType", "messagesByStatus"):
            summed: Counter[str] = Counter()
            for value in values:
                summed.update(value)
            total[field] = {key: n for key, n in summed.items() if n}
        else:
            total[field] = sum(values)
    return total


def _shared(metrics: dict[str, Any]) -> dict[str, Any]:
    found = {field: metrics[field] for field in SERIES_FIELDS}
    for field in ("messagesByType", "messagesByStatus"):
        found[field] = {key: n for key, n in found[field].items() if n}
    return found


async def _rollup_series(
    db: Database, refs: list[InstanceRef], bounds: list[tuple[datetime, datetime]], top: Level
) -> list[SeriesPoint]:
    cuts = [bounds[0][0], *(end for _, end in bounds)] if bounds else []
    tallies = [Tally() for _ in bounds]
    if bounds:
        found = await read_series_tallies(db=db, instances=refs, cuts=cuts, tops=[top])
        for per_instance in found.values():
            for tally, part in zip(tallies, per_instance, strict=True):
                tally.add(part)
    return to_points(bounds, tallies)


@settings(
    max_examples=70,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(case=series_cases(), selection=selections)
@example(  # a local month from 10:15 UTC is the next UTC month minus that day plus ten
    # hours and a quarter: pieces before the instant, shared by the cut-short first point
    case={
        "zone": "Pacific/Chatham",
        "interval": Interval.MONTH,
        "range": (_utc(2020, 1, 18, 8, 55, 26), _utc(2020, 4, 1)),
        "docs": [
            {"instanceId": INSTANCE_IDS[0], "timestamp": _utc(2020, 1, 31, 5)},
            {"instanceId": INSTANCE_IDS[0], "timestamp": _utc(2020, 1, 31, 10, 14)},
            {"instanceId": INSTANCE_IDS[0], "timestamp": _utc(2020, 1, 31, 11)},
        ],
    },
    selection=[(INSTANCE_IDS[0], False)],
)
@example(  # the first point is cut by the range's start, off the scan's group grid
    case={
        "zone": "UTC",
        "interval": Interval.DAY,
        "range": (_utc(2026, 11, 25, 12), _utc(2026, 11, 28)),
        "docs": [{"instanceId": INSTANCE_IDS[0], "timestamp": _utc(2026, 11, 25, 13)}],
    },
    selection=[(INSTANCE_IDS[0], False)],
)
async def test_series_equal_the_reference_and_sum_to_the_metrics(
    db: Database, case: dict[str, Any], selection: list[tuple[ObjectId, bool]]
) -> None:
    docs, (low, high) = case["docs"], case["range"]
    zone, interval = case["zone"], case["interval"]
    await db.messages.delete_many({})
    await drop_rollups(db=db)
    if docs:
        await db.messages.insert_many([dict(doc) for doc in docs])
    await build_rollups(db=db)
    refs = _refs(selection)
    expected = reference_series(
        docs,
        instances=[(ref.id, ref.ignore_group_messages) for ref in refs],
        range=(low, high),
        interval=interval.value,
        timezone=zone,
    )
    bounds = series_bounds(range=TimeRange(low, high), interval=interval, timezone=zone)

    scanned = [_as_reference(p) for p in await fetch_series(db=db, instances=refs, bounds=bounds)]
    assert scanned == expected, "full scan"
    for top in Level:
        rolled = [_as_reference(p) for p in await _rollup_series(db, refs, bounds, top)]
        assert rolled == expected, f"rollups through {top}"

    metrics = await fetch_metrics(db=db, instances=refs, now=high, range=TimeRange(low, high))
    assert _sum(scanned) == _shared(as_contract(metrics))


async def test_a_scan_cut_into_several_aggregations_adds_up(db: Database) -> None:
    """More groups than one aggregation may make: the plan is split, nothing is lost."""
    a = ObjectId()
    start = _utc(2026, 1, 1)
    quarter = timedelta(minutes=15)
    step = timedelta(hours=7, minutes=1)
    await db.messages.insert_many(
        [{"instanceId": a, "timestamp": start + k * step} for k in range(400)]
    )
    bounds = [(start + k * quarter, start + (k + 1) * quarter) for k in range(4 * 24 * 120)]
    assert len(plan_scans(bounds)) > 1

    refs = [InstanceRef(id=a, name="a", ignore_group_messages=False)]
    points = await fetch_series(db=db, instances=refs, bounds=bounds)

    found = {k: point.total_messages for k, point in enumerate(points) if point.total_messages}
    assert found == Counter(k * step // quarter for k in range(400))


class _BucketFinds(monitoring.CommandListener):
    """Counts the ``find`` commands on the rollup buckets (a driver event, not a mock)."""

    def __init__(self) -> None:
        self.count = 0

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        if event.command_name == "find" and event.command.get("find") == BUCKETS:
            self.count += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


async def test_a_series_of_decades_reads_only_the_months_of_the_instances_history(
    db: Database, mongodb_uri: str, database_name: str
) -> None:
    """Eighty years by month at +05:30 over an instance with three weeks of messages:
    the buckets of the years without messages are not asked for (a handful of queries,
    not one per month edge), and the points are still exact."""
    a, b = INSTANCE_IDS[0], INSTANCE_IDS[1]
    docs = [
        {"instanceId": a, "timestamp": _utc(2026, 10, 31, 18, 29), "isGroup": False},
        {"instanceId": a, "timestamp": _utc(2026, 10, 31, 18, 30), "isGroup": True},
        {"instanceId": a, "timestamp": _utc(2026, 11, 20, 9), "isGroup": False},
        {"instanceId": b},  # undated: in no point
    ]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    span = (_utc(1950, 1, 1, 0, 7), _utc(2032, 1, 1))
    bounds = series_bounds(range=TimeRange(*span), interval=Interval.MONTH, timezone="Asia/Kolkata")
    cuts = [bounds[0][0], *(end for _, end in bounds)]
    refs = [InstanceRef(id=i, name=str(i), ignore_group_messages=False) for i in (a, b)]
    listener = _BucketFinds()

    client = AsyncMongoClient(mongodb_uri, tz_aware=True, event_listeners=[listener])
    async with client:
        found = await read_series_tallies(
            db=client[database_name], instances=refs, cuts=cuts, tops=SERIES_TOPS[Interval.MONTH]
        )

    tallies = [Tally() for _ in bounds]
    for per_instance in found.values():
        for tally, part in zip(tallies, per_instance, strict=True):
            tally.add(part)
    expected = reference_series(
        docs,
        instances=[(a, False), (b, False)],
        range=span,
        interval="MONTH",
        timezone="Asia/Kolkata",
    )
    assert [_as_reference(point) for point in to_points(bounds, tallies)] == expected
    assert listener.count <= 6

    # a point cut just after a message: the slice before the range is still subtracted
    cut = (_utc(2026, 10, 31, 18, 30) + _MS, _utc(2026, 10, 31, 20))
    bounds = series_bounds(range=TimeRange(*cut), interval=Interval.HOUR, timezone="UTC")
    [point] = await _rollup_series(db, refs[:1], bounds[:1], Level.DAY)
    assert point.total_messages == 0


@pytest.fixture
def switching() -> Iterator[None]:
    """Threads take turns often (every 0.1 ms), so a test sees the event loop run while
    a worker thread computes, however fast the machine."""
    previous = sys.getswitchinterval()
    sys.setswitchinterval(1e-4)
    yield
    sys.setswitchinterval(previous)


async def test_the_event_loop_keeps_turning_while_a_long_series_is_planned_and_summed(
    db: Database, monkeypatch: pytest.MonkeyPatch, switching: None
) -> None:
    """A thousand months at +05:30: the plan and the per-point sums are pure work
    (milliseconds), done in a worker thread, so other requests (``/health`` too) keep
    being served meanwhile; a task that yields at every turn of the loop gets turns
    during the plan (none when it ran on the loop). The points equal the full scan."""
    a = INSTANCE_IDS[0]
    docs = [
        {"instanceId": a, "timestamp": _utc(1990, 1, 31, 18, 29), "isGroup": False},
        {"instanceId": a, "timestamp": _utc(1990, 1, 31, 18, 30), "isGroup": True},
        {"instanceId": a, "timestamp": _utc(2026, 11, 20, 9), "isGroup": False},
    ]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    span = TimeRange(_utc(1950, 1, 1, 0, 7), _utc(2032, 1, 1))
    bounds = series_bounds(range=span, interval=Interval.MONTH, timezone="Asia/Kolkata")
    cuts = [bounds[0][0], *(end for _, end in bounds)]
    refs = [InstanceRef(id=a, name="a", ignore_group_messages=False)]
    turns, during_plan, counted_in = 0, [], set()
    plan, tally = ranges.plan_series, ranges.bucket_tally

    def planning(*args: Any, **kwargs: Any) -> Any:
        before = turns
        found = plan(*args, **kwargs)
        during_plan.append(turns - before)
        return found

    def tallying(*args: Any) -> Any:
        counted_in.add(threading.get_ident())
        return tally(*args)

    async def ticker() -> None:
        nonlocal turns
        while True:
            turns += 1
            await asyncio.sleep(0)

    monkeypatch.setattr(ranges, "plan_series", planning)
    monkeypatch.setattr(ranges, "bucket_tally", tallying)
    ticking = asyncio.create_task(ticker())
    try:
        found = await read_series_tallies(
            db=db, instances=refs, cuts=cuts, tops=SERIES_TOPS[Interval.MONTH]
        )
    finally:
        ticking.cancel()

    assert len(bounds) == 985
    assert during_plan and during_plan[0] > 0
    assert counted_in and threading.get_ident() not in counted_in
    scanned = await fetch_series(db=db, instances=refs, bounds=bounds)
    assert to_points(bounds, found[a]) == scanned
    assert sum(point.total_messages for point in scanned) == 3


def test_a_tally_shows_one_point_until_add_changes_it() -> None:
    start = datetime(2026, 3, 8, tzinfo=UTC)
    end, later = start + timedelta(hours=1), start + timedelta(hours=2)
    tally, other = Tally(), Tally()
    tally.counters.update({"n": 2, "s": 2})
    tally.types.update({"text": 2})
    other.counters.update({"n": 1, "r": 1})
    other.types.update({"sticker": 1})
    shown = tally.point(start, end)
    assert tally.point(start, end) is shown
    assert tally.point(start, later).end == later  # other bounds: another point
    tally.add(other)
    changed = tally.point(start, later)
    assert (changed.total_messages, changed.messages_sent, changed.messages_received) == (3, 2, 1)
    assert (changed.messages_by_type["text"], changed.messages_by_type["sticker"]) == (2, 1)
