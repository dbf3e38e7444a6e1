"""Kept value sets (resolvers/rollups/valuesets.py): a range's unique counts read from the
distinct values of whole days and hours, read raw once and kept, exact after every
change that moves a value (the stateful test interleaves them at random)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from resolvers import Database, InstanceRef
from resolvers.rollups import build_rollups
from resolvers.rollups import valuesets as valuesets_module
from resolvers.rollups.changes import Changes
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.ranges import read_range_metrics
from resolvers.rollups.store import VALUE_SETS, apply_changes
from resolvers.rollups.valuesets import pack, unpack, value_cover
from resolvers.timeranges import TimeRange
from tests.factories import NOW, message
from tests.reference import reference_metrics
from tests.strategies import INSTANCE_IDS

A = INSTANCE_IDS[0]
SPAN = TimeRange(NOW - timedelta(days=5, hours=3, minutes=10), NOW - timedelta(hours=2, minutes=5))
"""Whole days, whole hours at both ends and raw minutes beyond them, all before NOW."""
PLANTED = "planted@s.whatsapp.net"


# --- the cut --------------------------------------------------------------------------

_moments = st.integers(0, 40 * 86_400_000).map(
    lambda ms: datetime(2026, 10, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
)


@given(low=_moments, high=_moments)
def test_a_range_is_cut_into_whole_days_and_hours_and_under_two_hours_raw(
    low: datetime, high: datetime
) -> None:
    cover = value_cover(low, high)
    pieces = sorted(
        [(start, start + timedelta(days=1)) for start in cover.days]
        + [(start, start + timedelta(hours=1)) for start in cover.hours]
        + list(cover.raw)
    )
    if low >= high:
        assert pieces == []
        return
    assert pieces[0][0] == low and pieces[-1][1] == high
    assert all(a[1] == b[0] for a, b in itertools.pairwise(pieces))
    assert all(floor_to(day, Level.DAY) == day for day in cover.days)
    assert all(floor_to(hour, Level.HOUR) == hour for hour in cover.hours)
    assert len(cover.raw) <= 2 and sum((b - a for a, b in cover.raw), timedelta()) < timedelta(
        hours=2
    )
    if cover.hours:
        assert all(b - a < timedelta(hours=1) for a, b in cover.raw)
    if cover.days:  # no whole day is left in hours
        assert all(not cover.days[0] <= hour < cover.days[-1] for hour in cover.hours)
        assert len(cover.hours) <= 2 * 23


# --- kept and used --------------------------------------------------------------------


def _history() -> list[dict[str, Any]]:
    """Messages on every day of SPAN and at its edges; each chat but "shared" only once."""
    docs = []
    for index, hours_ago in enumerate([2.05, 2.5, 3.5, 20, 30, 50, 75, 100, 120, 124.2, 125.1]):
        moment = NOW - timedelta(hours=hours_ago)
        docs.append(message(A, days_ago=0, timestamp=moment, chatId=f"{index}@s.whatsapp.net"))
        docs.append(message(A, days_ago=0, timestamp=moment, chatId="shared@s.whatsapp.net"))
    group = {"isGroup": True, "chatId": "team@g.us", "sender": "9@s.whatsapp.net"}
    docs.append(message(A, days_ago=0, timestamp=NOW - timedelta(hours=60), **group))
    return docs


async def _load(db: Database, docs: list[dict[str, Any]]) -> None:
    await db.messages.insert_many(docs)
    await build_rollups(db=db)


async def _uniques(db: Database, *, ignore: bool = False) -> tuple[int, int, int]:
    ref = InstanceRef(id=A, name="a", ignore_group_messages=ignore)
    found = (await read_range_metrics(db=db, instances=[ref], now=NOW, range=SPAN))[A]
    return found.unique_chats, found.unique_groups, found.unique_contacts


async def _expected(db: Database, *, ignore: bool = False) -> tuple[int, int, int]:
    docs = await db.messages.find({}).to_list()
    found = reference_metrics(docs, instances=[(A, ignore)], now=NOW, range=(SPAN.start, SPAN.end))
    return found["uniqueChats"], found["uniqueGroups"], found["uniqueContacts"]


async def _plant(db: Database, where: dict[str, Any] | None = None) -> int:
    """Add a value no message has to the kept sets (all, or ``where``): a count that
    shows it came from them. Returns how many sets there were."""
    planted = 0
    async for doc in db[VALUE_SETS].find(where or {}):
        values = unpack(doc["z"])
        values["o"]["chat"].add(PLANTED)
        await db[VALUE_SETS].update_one({"_id": doc["_id"]}, {"$set": {"z": pack(values)}})
        planted += 1
    return planted


async def _change(
    db: Database, before: dict[str, Any] | None, after: dict[str, Any] | None
) -> None:
    """One message change written to the rollups as the consumer writes it."""
    changes = Changes()
    changes.add(before=before, after=after)
    await apply_changes(db=db, changes=changes)


async def test_whole_days_and_hours_are_read_raw_once_then_kept(db: Database) -> None:
    await _load(db, _history())
    for ignore in (False, True):
        assert await _uniques(db, ignore=ignore) == await _expected(db, ignore=ignore)
    kept = await db[VALUE_SETS].find({}, {"l": 1, "t": 1}).to_list()
    assert {doc["l"] for doc in kept} == {"d", "h"}
    assert all(SPAN.start <= doc["t"] < SPAN.end for doc in kept)

    assert await _plant(db) == len(kept)
    chats, groups, contacts = await _expected(db)
    assert await _uniques(db) == (chats + 1, groups, contacts)


async def test_a_status_update_leaves_the_kept_sets_in_use(db: Database) -> None:
    docs = _history()
    await _load(db, docs)
    await _uniques(db)
    stored = await db.messages.find_one({"chatId": "4@s.whatsapp.net"})
    assert stored is not None
    assert await _plant(db, {"l": "d", "t": floor_to(stored["timestamp"], Level.DAY)}) == 1
    changed = {**stored, "status": "played", "updatedAt": NOW}
    await db.messages.replace_one({"_id": stored["_id"]}, changed)
    await _change(db, stored, changed)
    chats, groups, contacts = await _expected(db)
    assert await _uniques(db) == (chats + 1, groups, contacts)


def _new_chat(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {**doc, "chatId": "renamed@s.whatsapp.net"}


def _into_a_group(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {**doc, "isGroup": True, "chatId": "other@g.us", "sender": "8@s.whatsapp.net"}


def _out_of_the_range(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {**doc, "timestamp": NOW - timedelta(days=40)}


def _to_another_day(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {**doc, "timestamp": doc["timestamp"] - timedelta(days=1)}


def _to_no_instance(doc: dict[str, Any]) -> dict[str, Any] | None:
    return {**doc, "instanceId": [A]}


def _deleted(doc: dict[str, Any]) -> dict[str, Any] | None:
    return None


@pytest.mark.parametrize(
    "change",
    [_new_chat, _into_a_group, _out_of_the_range, _to_another_day, _to_no_instance, _deleted],
)
async def test_a_change_of_a_kept_days_values_is_seen(
    db: Database, change: Callable[[dict[str, Any]], dict[str, Any] | None]
) -> None:
    await _load(db, _history())
    await _uniques(db)
    for chat in ("4@s.whatsapp.net", "0@s.whatsapp.net"):  # in a kept day; in a raw edge
        stored = await db.messages.find_one({"chatId": chat})
        assert stored is not None
        after = change(stored)
        if after is None:
            await db.messages.delete_one({"_id": stored["_id"]})
        else:
            await db.messages.replace_one({"_id": stored["_id"]}, after)
        await _change(db, stored, after)
        for ignore in (False, True):
            assert await _uniques(db, ignore=ignore) == await _expected(db, ignore=ignore)


async def test_a_new_message_in_a_kept_day_is_seen(db: Database) -> None:
    await _load(db, _history())
    await _uniques(db)
    doc = message(A, days_ago=0, timestamp=NOW - timedelta(hours=50), chatId="late@s.whatsapp.net")
    await db.messages.insert_one(doc)
    await _change(db, None, doc)
    assert await _uniques(db) == await _expected(db)


async def test_a_message_the_raw_read_saw_then_gone_in_the_same_batch_is_not_kept(
    db: Database,
) -> None:
    """A set read raw while a message was written but not yet applied holds its values;
    an insert and a delete of it applied in one batch cancel in every count, yet still
    make the set stale."""
    await _load(db, _history())
    passing = message(A, days_ago=0, timestamp=NOW - timedelta(hours=75, minutes=1))
    passing["chatId"] = "passing@s.whatsapp.net"
    await db.messages.insert_one(passing)  # not applied yet
    await _uniques(db)
    await db.messages.delete_one({"_id": passing["_id"]})
    changes = Changes()
    changes.add(before=None, after=passing)
    changes.add(before=passing, after=None)
    await apply_changes(db=db, changes=changes)
    assert await _uniques(db) == await _expected(db)


async def test_a_rebuild_makes_every_kept_set_stale(db: Database) -> None:
    await _load(db, _history())
    await _uniques(db)
    assert await _plant(db) > 0
    await build_rollups(db=db)
    assert await _uniques(db) == await _expected(db)


async def test_a_set_too_large_to_keep_is_read_raw_each_time(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(valuesets_module, "MAX_KEPT_BYTES", 110)
    await _load(db, _history())
    assert await _uniques(db) == await _expected(db)
    kept = {(doc["l"], doc["t"]) async for doc in db[VALUE_SETS].find({}, {"l": 1, "t": 1})}
    # an hour at the start with 2 chats (and contacts); a day with 3 of each
    assert ("h", floor_to(NOW - timedelta(hours=120), Level.HOUR)) in kept
    assert ("d", floor_to(NOW - timedelta(hours=20), Level.DAY)) not in kept
    assert await _uniques(db) == await _expected(db)


async def test_a_range_cut_short_keeps_what_it_read_before(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A cold range on a long history can outlast the request's deadline: the days read
    before it are kept, so the next request goes further instead of starting over."""
    await _load(db, _history())
    reads = 0
    real = valuesets_module._read

    async def read_then_fail(*args: Any) -> Any:
        nonlocal reads
        reads += 1
        if reads == 4:
            raise TimeoutError("the request's deadline")
        return await real(*args)

    monkeypatch.setattr(valuesets_module, "_read", read_then_fail)
    with pytest.raises(TimeoutError):
        await _uniques(db)
    assert await db[VALUE_SETS].count_documents({}) == 3
    monkeypatch.setattr(valuesets_module, "_read", real)
    assert await _uniques(db) == await _expected(db)


async def test_an_unended_day_is_read_but_not_kept(db: Database) -> None:
    await _load(db, _history())
    ref = InstanceRef(id=A, name="a", ignore_group_messages=False)
    span = TimeRange(floor_to(NOW, Level.DAY) - timedelta(days=2), floor_to(NOW, Level.DAY))
    early = floor_to(NOW, Level.DAY) - timedelta(hours=1)  # the last whole day has not ended
    await read_range_metrics(db=db, instances=[ref], now=early, range=span)
    starts = {doc["t"] async for doc in db[VALUE_SETS].find({"l": "d"}, {"t": 1})}
    assert starts == {floor_to(NOW, Level.DAY) - timedelta(days=2)}  # both days have messages
