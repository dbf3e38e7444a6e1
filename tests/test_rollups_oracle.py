"""The rollups against the full-scan pipeline (the oracle) on a real database: after a
build, and after random inserts, updates and deletes applied as ``Changes``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolvers import Database, InstanceRef, fetch_metrics
from resolvers.rollups import (
    COLLECTIONS,
    Changes,
    apply_changes,
    build_rollups,
    drop_rollups,
    read_rollup_metrics,
)
from resolvers.rollups.keys import Level, ceil_to, floor_to
from resolvers.rollups.store import BUCKETS
from tests.factories import NOW
from tests.strategies import INSTANCE_IDS, as_contract, messages, selections


def _settings(examples: int) -> settings:
    return settings(
        max_examples=examples,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


_MS = timedelta(milliseconds=1)

# `now` anywhere near days that put a window's cutoff on or beside a month boundary
# (Dec 1 is 30 days after Nov 1 and 7 days before Dec 8; Feb has 28 days), or right on a
# quarter, hour or day boundary, or 1 ms / 500 us beside one
_ANCHORS = [
    floor_to(NOW, Level.DAY),
    datetime(2026, 12, 1, tzinfo=UTC),
    datetime(2026, 12, 8, tzinfo=UTC),
    datetime(2027, 3, 1, tzinfo=UTC),
]
_nows = st.builds(
    lambda anchor, quarters, offset: anchor + quarters * Level.QUARTER.width + offset,
    st.sampled_from(_ANCHORS),
    st.integers(-200, 200),
    st.sampled_from(
        [
            timedelta(0),
            timedelta(0),
            _MS,
            -_MS,
            timedelta(microseconds=500),
            timedelta(minutes=7, seconds=3, milliseconds=250),
        ]
    ),
)


def _dates_near(now: datetime) -> st.SearchStrategy[datetime]:
    """Dates on and beside the window cutoffs and the bucket edges around them, or any
    time from 40 days before ``now`` to a day after."""
    marks: list[datetime] = [now]
    for span in (timedelta(days=7), timedelta(days=30)):
        cutoff = now - span
        marks.append(cutoff)
        for level in Level:
            start = floor_to(cutoff, level)
            marks += [start, ceil_to(start + _MS, level)]
    around = st.sampled_from(marks).flatmap(
        lambda mark: st.sampled_from([mark, mark - _MS, mark + _MS, mark + 2 * _MS])
    )
    anywhere = st.integers(-40 * 86_400_000, 86_400_000).map(lambda ms: now + ms * _MS)
    return st.one_of(around, around, anywhere)


async def _reset(db: Database) -> None:
    await db.messages.delete_many({})
    await drop_rollups(db=db)


def _refs(selection: list[tuple[ObjectId, bool]]) -> list[list[InstanceRef]]:
    """The selection as requested together, and each of its instances alone."""
    settings_by_id = dict(reversed(selection))  # the first mention wins, as in the database
    together = [
        InstanceRef(id=i, name=str(i), ignore_group_messages=settings_by_id[i])
        for i in dict.fromkeys(i for i, _ in selection)
    ]
    return [together, *([ref] for ref in together)]


async def _assert_rollups_match_full_scan(
    db: Database, *, selection: list[tuple[ObjectId, bool]], now: datetime
) -> None:
    for refs in _refs(selection):
        expected = as_contract(await fetch_metrics(db=db, instances=refs, now=now))
        got = as_contract(await read_rollup_metrics(db=db, instances=refs, now=now))
        assert got == expected, f"instances {refs} at {now}"


@_settings(45)
@given(data=st.data(), selection=selections)
async def test_built_rollups_answer_as_the_full_scan(
    db: Database, data: st.DataObject, selection: list[tuple[ObjectId, bool]]
) -> None:
    now = data.draw(_nows, label="now")
    docs = data.draw(st.lists(messages(dates=_dates_near(now)), max_size=30), label="docs")
    await _reset(db)
    if docs:
        await db.messages.insert_many([dict(doc) for doc in docs])

    await build_rollups(db=db)

    await _assert_rollups_match_full_scan(db, selection=selection, now=now)


# --- incremental --------------------------------------------------------------------

_changes_of_fields = st.fixed_dictionaries(
    {},
    optional={
        "status": st.sampled_from(["sent", "delivered", "read", "played", "", None]),
        "isGroup": st.sampled_from([True, False, "true", None]),
        "fromMe": st.booleans(),
        "chatId": st.sampled_from(["a@s.whatsapp.net", "g1@g.us", "new@s.whatsapp.net"]),
        "sender": st.sampled_from(["b@s.whatsapp.net", None]),
        "media": st.sampled_from([None, {"type": "image"}, {"type": "a.b"}]),
        "instanceId": st.sampled_from([INSTANCE_IDS[0], INSTANCE_IDS[1], [INSTANCE_IDS[0]]]),
        "updatedAt": st.just(NOW),
    },
)


@st.composite
def _operations(draw: st.DrawFn, now: datetime) -> list[tuple[str, Any]]:
    """Inserts, updates (some fields, or a new timestamp) and deletes, by position."""
    steps = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["insert", "update", "update", "retime", "delete"]))
        if kind == "insert":
            steps.append((kind, draw(messages(dates=_dates_near(now)))))
        elif kind == "update":
            steps.append((kind, (draw(st.integers(0, 10**6)), draw(_changes_of_fields))))
        elif kind == "retime":
            moment = draw(st.one_of(_dates_near(now), st.just("undated")))
            steps.append(("update", (draw(st.integers(0, 10**6)), {"timestamp": moment})))
        else:
            steps.append((kind, draw(st.integers(0, 10**6))))
    return steps


async def _run(
    db: Database, docs: dict[ObjectId, dict[str, Any]], step: tuple[str, Any], changes: Changes
) -> None:
    """One write on ``messages``, mirrored in ``docs`` and summed into ``changes``."""
    kind, arg = step
    if kind == "insert":
        doc = dict(arg)
        await db.messages.insert_one(doc)
        docs[doc["_id"]] = doc
        changes.add(before=None, after=doc)
        return
    if not docs:
        return
    ids = sorted(docs)
    position = arg[0] if kind == "update" else arg
    before = docs[ids[position % len(ids)]]
    if kind == "delete":
        await db.messages.delete_one({"_id": before["_id"]})
        del docs[before["_id"]]
        changes.add(before=before, after=None)
        return
    after = {**before, **arg[1]}
    await db.messages.replace_one({"_id": before["_id"]}, after)
    docs[before["_id"]] = after
    changes.add(before=before, after=after)


async def _apply(db: Database, changes: Changes, *, in_transaction: bool) -> None:
    if not in_transaction:
        await apply_changes(db=db, changes=changes)
        return
    async with db.client.start_session() as session, await session.start_transaction():
        await apply_changes(db=db, changes=changes, session=session)


def _canonical(value: Any) -> Any:
    """A document as sorted pairs, with zero counters and the empty objects they leave
    dropped (a stream leaves zeros behind; a build never writes them)."""
    if isinstance(value, dict):
        kept = [(key, _canonical(item)) for key, item in sorted(value.items())]
        return tuple((key, item) for key, item in kept if item not in (0, ()))
    return value


async def _snapshot(db: Database) -> dict[str, list[str]]:
    """Every rollup document, comparable across a build and a stream of changes (bucket
    ``_id``s and values versions are generated, so left out)."""
    found: dict[str, list[str]] = {}
    for name in COLLECTIONS:
        projection = {"_id": 0, "vv": 0} if name == BUCKETS else None
        docs = await db[name].find({}, projection).to_list()
        found[name] = sorted(repr(_canonical(doc)) for doc in docs)
    return found


@_settings(40)
@given(
    data=st.data(),
    selection=selections,
    batches=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    in_transaction=st.booleans(),
)
async def test_changes_keep_rollups_equal_to_the_full_scan_and_to_a_rebuild(
    db: Database,
    data: st.DataObject,
    selection: list[tuple[ObjectId, bool]],
    batches: list[int],
    in_transaction: bool,
) -> None:
    now = data.draw(_nows, label="now")
    initial = data.draw(st.lists(messages(dates=_dates_near(now)), max_size=12), label="docs")
    await _reset(db)
    docs: dict[ObjectId, dict[str, Any]] = {}
    for doc in initial:
        stored = dict(doc)
        await db.messages.insert_one(stored)
        docs[stored["_id"]] = stored
    await build_rollups(db=db)

    for size in batches:
        changes = Changes()
        for step in data.draw(_operations(now), label="batch")[:size]:
            await _run(db, docs, step, changes)
        await _apply(db, changes, in_transaction=in_transaction)

    await _assert_rollups_match_full_scan(db, selection=selection, now=now)
    streamed = await _snapshot(db)
    await build_rollups(db=db)
    built = await _snapshot(db)
    for name in COLLECTIONS:  # only the documents that differ, in the failure message
        assert sorted(set(streamed[name]) - set(built[name])) == sorted(
            set(built[name]) - set(streamed[name])
        ), name
    assert streamed == built


async def test_removing_the_first_and_last_message_finds_the_next_ones(db: Database) -> None:
    """The drill-down from day to hour to quarter to raw messages, by hand."""
    a = INSTANCE_IDS[0]
    times = [
        datetime(2026, 11, 1, 8, 0, 0, 1000, tzinfo=UTC),
        datetime(2026, 11, 1, 8, 0, 0, 2000, tzinfo=UTC),
        datetime(2026, 11, 3, 23, 59, 59, 999_000, tzinfo=UTC),
        datetime(2026, 11, 5, tzinfo=UTC),
    ]
    docs = [{"instanceId": a, "timestamp": moment, "isGroup": False} for moment in times]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    changes = Changes()
    for doc in (docs[0], docs[3]):
        await db.messages.delete_one({"_id": doc["_id"]})
        changes.add(before=doc, after=None)

    await apply_changes(db=db, changes=changes)

    refs = [InstanceRef(id=a, name="a", ignore_group_messages=False)]
    got = await read_rollup_metrics(db=db, instances=refs, now=NOW)
    assert (got.first_message_at, got.last_message_at) == (times[1], times[2])
    assert got.total_messages == 2


async def test_the_raw_edge_of_a_window_counts_only_object_id_owners(db: Database) -> None:
    a = INSTANCE_IDS[0]
    cutoff = NOW + timedelta(minutes=7) - timedelta(days=7)  # inside a quarter: raw edge
    docs = [
        {"instanceId": a, "timestamp": cutoff + _MS},
        {"instanceId": [a], "timestamp": cutoff + 2 * _MS},
        {"instanceId": a, "timestamp": [cutoff + 3 * _MS]},
        {"instanceId": a, "timestamp": cutoff - _MS},
    ]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    refs = [InstanceRef(id=a, name="a", ignore_group_messages=False)]

    got = await read_rollup_metrics(db=db, instances=refs, now=NOW + timedelta(minutes=7))

    # the array-id message counts nowhere, the array-timestamp one is undated
    assert (got.messages_last_7_days, got.messages_last_30_days, got.total_messages) == (1, 2, 3)


async def test_a_removed_first_message_is_found_again_within_its_flag(db: Database) -> None:
    a = INSTANCE_IDS[0]
    start = datetime(2026, 11, 1, 8, tzinfo=UTC)
    docs = [
        {"instanceId": a, "timestamp": start, "isGroup": True},
        {"instanceId": a, "timestamp": start + _MS, "isGroup": False},
        {"instanceId": a, "timestamp": start + timedelta(seconds=5), "isGroup": False},
    ]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    await db.messages.delete_one({"_id": docs[1]["_id"]})
    changes = Changes()
    changes.add(before=docs[1], after=None)

    await apply_changes(db=db, changes=changes)

    ignoring = [InstanceRef(id=a, name="a", ignore_group_messages=True)]
    got = await read_rollup_metrics(db=db, instances=ignoring, now=NOW)
    assert got.first_message_at == start + timedelta(seconds=5)


async def test_a_full_build_drops_rollups_of_instances_without_messages(db: Database) -> None:
    a, b = INSTANCE_IDS[:2]
    docs = [{"instanceId": a, "timestamp": NOW}, {"instanceId": b, "timestamp": NOW}]
    await db.messages.insert_many(docs)
    await build_rollups(db=db)
    await db.messages.delete_many({"instanceId": b})

    await build_rollups(db=db)

    refs = [InstanceRef(id=b, name="b", ignore_group_messages=False)]
    got = await read_rollup_metrics(db=db, instances=refs, now=NOW)
    assert (got.total_messages, got.last_message_at) == (0, None)
    assert await db.rollup_buckets.count_documents({"i": b}) == 0
