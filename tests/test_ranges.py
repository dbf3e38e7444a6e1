"""Metrics over a time range: the full scan and the rollups both equal the plain-Python
reference, every field, one and several instances, ignoreGroupMessages either way."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.metrics import distinct_instances
from resolvers.pipeline import combine_metrics
from resolvers.rollups import build_rollups, drop_rollups
from resolvers.rollups.keys import Level, ceil_to, floor_to
from resolvers.rollups.ranges import read_instance_counts, read_range_metrics
from resolvers.rollups.service import RollupService
from resolvers.timeranges import InstanceSummary, TimeRange
from tests.factories import NOW
from tests.reference import reference_metrics
from tests.strategies import INSTANCE_IDS, as_contract, messages, near, selections, time_ranges

_MS = timedelta(milliseconds=1)


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


def _edges_around(moment: datetime) -> list[datetime]:
    """``moment`` and the bucket boundaries of every level around it."""
    found = [moment]
    for level in Level:
        start = floor_to(moment, level)
        found += [start, ceil_to(start + _MS, level)]
    return found


_ANCHORS = [
    NOW,
    NOW - timedelta(days=7),
    NOW - timedelta(days=30),
    datetime(2026, 11, 1, tzinfo=UTC),
]
_MARKS = sorted({edge for anchor in _ANCHORS for edge in _edges_around(anchor)})
_anywhere = st.integers(-45 * 86_400_000, 2 * 86_400_000).map(lambda ms: NOW + ms * _MS)
# ends on and beside bucket edges, the window cutoffs and the messages, or anywhere
_dates = st.one_of(near(_MARKS), near(_MARKS), _anywhere)
_range_ends = st.one_of(near(_MARKS), _anywhere)


def _refs(selection: list[tuple[ObjectId, bool]]) -> list[list[InstanceRef]]:
    """The selection as requested together, and each of its instances alone."""
    settings_by_id = dict(reversed(selection))  # the first mention wins, as in the database
    together = [
        InstanceRef(id=i, name=str(i), ignore_group_messages=settings_by_id[i])
        for i in dict.fromkeys(i for i, _ in selection)
    ]
    return [together, *([ref] for ref in together)]


async def _from_rollups(
    db: Database, refs: list[InstanceRef], *, now: datetime, range: TimeRange
) -> Any:
    found = await read_range_metrics(db=db, instances=refs, now=now, range=range)
    return combine_metrics([found[ref.id] for ref in distinct_instances(refs)])


async def _load(db: Database, docs: list[dict[str, Any]]) -> None:
    await db.messages.delete_many({})
    await drop_rollups(db=db)
    if docs:
        await db.messages.insert_many([dict(doc) for doc in docs])
    await build_rollups(db=db)


@_settings(60)
@given(data=st.data(), selection=selections)
async def test_metrics_over_a_range_equal_the_reference(
    db: Database, data: st.DataObject, selection: list[tuple[ObjectId, bool]]
) -> None:
    docs = data.draw(st.lists(messages(dates=_dates), max_size=30), label="docs")
    dated = [doc["timestamp"] for doc in docs if isinstance(doc.get("timestamp"), datetime)]
    ends = st.one_of(_range_ends, near(dated)) if dated else _range_ends
    low, high = data.draw(time_ranges(ends), label="range")
    now = data.draw(st.sampled_from([NOW, NOW + timedelta(days=3), high]), label="now")
    await _load(db, docs)

    for refs in _refs(selection):
        expected = reference_metrics(
            docs,
            instances=[(ref.id, ref.ignore_group_messages) for ref in refs],
            now=now,
            range=(low, high),
        )
        span = TimeRange(low, high)
        scanned = await fetch_metrics(db=db, instances=refs, now=now, range=span)
        assert as_contract(scanned) == expected, "full scan"
        rolled = await _from_rollups(db, refs, now=now, range=span)
        assert as_contract(rolled) == expected, "rollups"


async def test_a_range_holding_every_message_takes_the_stored_unique_counts(db: Database) -> None:
    a = INSTANCE_IDS[0]
    docs = [
        {"instanceId": a, "chatId": "x@s.whatsapp.net", "isGroup": False, "timestamp": NOW},
        {"instanceId": a, "chatId": "g@g.us", "isGroup": True, "timestamp": NOW + _MS},
        {"instanceId": a, "chatId": "y@s.whatsapp.net", "isGroup": False},  # undated
    ]
    await _load(db, docs)
    ref = InstanceRef(id=a, name="a", ignore_group_messages=False)
    everything = TimeRange(NOW - timedelta(days=1), NOW + timedelta(days=1))

    got = await _from_rollups(db, [ref], now=NOW, range=everything)
    assert (got.total_messages, got.unique_chats, got.unique_groups) == (2, 2, 1)
    await db.messages.delete_one({"chatId": "y@s.whatsapp.net"})
    await build_rollups(db=db)
    got = await _from_rollups(db, [ref], now=NOW, range=everything)
    assert (got.total_messages, got.unique_chats, got.unique_contacts) == (2, 2, 1)


async def test_first_and_last_inside_a_range_are_found_by_drilling_down(db: Database) -> None:
    a = INSTANCE_IDS[0]
    times = [
        datetime(2026, 9, 30, 23, 59, 59, 999_000, tzinfo=UTC),
        datetime(2026, 10, 1, 0, 0, 0, 1000, tzinfo=UTC),
        datetime(2026, 10, 14, 6, 7, tzinfo=UTC),
        datetime(2026, 10, 14, 6, 7, 1, tzinfo=UTC),
        datetime(2026, 11, 2, tzinfo=UTC),
    ]
    await _load(db, [{"instanceId": a, "timestamp": moment, "isGroup": False} for moment in times])
    ref = InstanceRef(id=a, name="a", ignore_group_messages=False)

    for (low, high), expected in [
        ((times[0] + _MS, times[4]), (times[1], times[3])),
        ((datetime(2026, 10, 14, 6, 7, tzinfo=UTC), times[3]), (times[2], times[2])),
        ((times[1] + _MS, times[2]), (None, None)),
    ]:
        got = await _from_rollups(db, [ref], now=NOW, range=TimeRange(low, high))
        assert (got.first_message_at, got.last_message_at) == expected, (low, high)


@_settings(25)
@given(data=st.data(), selection=selections)
async def test_metrics_by_instance_are_each_instance_alone_and_sum_to_metrics(
    db: Database, data: st.DataObject, selection: list[tuple[ObjectId, bool]]
) -> None:
    docs = data.draw(st.lists(messages(dates=_dates), max_size=25), label="docs")
    low, high = data.draw(time_ranges(_range_ends), label="range")
    await _load(db, docs)
    refs = _refs(selection)[0]
    service = RollupService(db=db, consumer=None)

    for span in (None, TimeRange(low, high)):
        each = await service.metrics_by_instance(instances=refs, now=NOW, range=span)
        alone = [
            reference_metrics(
                docs,
                instances=[(ref.id, ref.ignore_group_messages)],
                now=NOW,
                range=None if span is None else (low, high),
            )
            for ref in refs
        ]
        assert [as_contract(result) for result in each] == alone, span
        whole = await service.metrics(instances=refs, now=NOW, range=span)
        assert as_contract(combine_metrics(each)) == as_contract(whole), span


@_settings(25)
@given(docs=st.lists(messages(dates=_dates), max_size=25), selection=selections)
async def test_instance_summaries_are_what_metrics_reports_for_each_instance(
    db: Database, docs: list[dict[str, Any]], selection: list[tuple[ObjectId, bool]]
) -> None:
    await _load(db, docs)
    await db.instances.delete_many({})
    created = {INSTANCE_IDS[0]: NOW, INSTANCE_IDS[1]: "not a date"}
    await db.instances.insert_many(
        [
            {"_id": i, "name": str(i), "tokenHash": str(i), "createdAt": when}
            for i, when in created.items()
        ]
    )
    refs = _refs(selection)[0]
    expected = []
    for ref in refs:
        alone = reference_metrics(docs, instances=[(ref.id, ref.ignore_group_messages)], now=NOW)
        expected.append(
            InstanceSummary(
                name=ref.name,
                ignore_group_messages=ref.ignore_group_messages,
                created_at=NOW if ref.id == INSTANCE_IDS[0] else None,
                total_messages=alone["totalMessages"],
                last_message_at=alone["lastMessageAt"],
            )
        )

    assert await RollupService(db=db, consumer=None).summaries(instances=refs) == expected
    counts = await read_instance_counts(db=db, instances=refs)
    assert [(counts[ref.id].total_messages, counts[ref.id].last_message_at) for ref in refs] == [
        (summary.total_messages, summary.last_message_at) for summary in expected
    ]


async def test_a_range_of_millennia_reads_only_the_instances_history(db: Database) -> None:
    a = INSTANCE_IDS[0]
    docs = [
        {"instanceId": a, "chatId": "x@s.whatsapp.net", "isGroup": False, "timestamp": NOW},
        {"instanceId": a, "timestamp": NOW - timedelta(days=40)},
        {"instanceId": a, "timestamp": "undated"},
    ]
    await _load(db, docs)
    ref = InstanceRef(id=a, name="a", ignore_group_messages=False)
    span = TimeRange(datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC))

    got = await _from_rollups(db, [ref], now=NOW, range=span)

    expected = reference_metrics(
        docs, instances=[(a, False)], now=NOW, range=(span.start, span.end)
    )
    assert as_contract(got) == expected
    assert (got.total_messages, got.unique_chats) == (2, 1)


async def test_a_message_in_the_last_month_of_the_calendar_breaks_no_range(
    db: Database,
) -> None:
    """An odd timestamp in December 9999 (the month with no month after it) neither
    poisons the ranges of its instance nor fails a range that reaches it."""
    a = INSTANCE_IDS[0]
    end_of_time = datetime(9999, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    docs = [
        {"instanceId": a, "chatId": "x@s.whatsapp.net", "isGroup": False, "timestamp": NOW},
        {"instanceId": a, "chatId": "y@s.whatsapp.net", "isGroup": False, "timestamp": end_of_time},
        {
            "instanceId": a,
            "chatId": "z@s.whatsapp.net",
            "isGroup": False,
            "timestamp": datetime(9999, 12, 2, tzinfo=UTC),
        },
    ]
    await _load(db, docs)
    ref = InstanceRef(id=a, name="a", ignore_group_messages=False)
    service = RollupService(db=db, consumer=None)

    for low, high in [
        (NOW - timedelta(days=1), NOW + timedelta(days=1)),
        (datetime(1, 1, 1, tzinfo=UTC), end_of_time),
        (datetime(9999, 12, 1, tzinfo=UTC), end_of_time),
        (datetime(9999, 12, 2, tzinfo=UTC), datetime(9999, 12, 31, tzinfo=UTC)),
    ]:
        expected = reference_metrics(docs, instances=[(a, False)], now=NOW, range=(low, high))
        got = await _from_rollups(db, [ref], now=NOW, range=TimeRange(low, high))
        assert as_contract(got) == expected, (low, high)
        [each] = await service.metrics_by_instance(
            instances=[ref], now=NOW, range=TimeRange(low, high)
        )
        assert as_contract(each) == expected, (low, high)
