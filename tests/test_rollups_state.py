"""The consumer's state: which keys are built, and what rollup_state keeps."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

from bson import ObjectId, Timestamp

from resolvers import Database
from resolvers.rollups.state import (
    SCHEMA_VERSION,
    STATE_COLLECTION,
    Build,
    InstanceProgress,
    message_key,
    read_state,
    refresh_applied,
    save_state,
    start_build,
)

A, B, C = (ObjectId(f"{n:024x}") for n in range(1, 4))
DAY = timedelta(days=1)
D1 = datetime(2026, 11, 1, tzinfo=UTC)
D3, D5 = D1 + 2 * DAY, D1 + 4 * DAY
MS = timedelta(milliseconds=1)


def test_message_key_is_instance_and_timestamp_to_the_millisecond() -> None:
    moment = datetime(2026, 11, 3, 23, 59, 59, 999_999, tzinfo=UTC)
    assert message_key({"instanceId": A, "timestamp": moment}) == (
        A,
        moment.replace(microsecond=999_000),
    )
    east = datetime(2026, 11, 4, 1, 0, tzinfo=UTC).astimezone(timezone(timedelta(hours=-3)))
    assert message_key({"instanceId": A, "timestamp": east}) == (
        A,
        datetime(2026, 11, 4, 1, 0, tzinfo=UTC),
    )


def test_message_key_of_undated_and_unattributed_messages() -> None:
    assert message_key({"instanceId": A, "timestamp": "2026-11-03"}) == (A, None)
    assert message_key({"instanceId": A}) == (A, None)
    assert message_key({"instanceId": [A], "timestamp": D1}) is None
    assert message_key({"instanceId": str(A), "timestamp": D1}) is None
    assert message_key(None) is None


def test_nothing_is_built_before_the_instances_are_listed() -> None:
    build = Build()
    assert not build.built((C, D1)) and not build.instance_ready(C)
    assert build.percent() == 0.0 and not build.done


def test_unlisted_instances_are_built_once_listed() -> None:
    build = Build(listed=(A, B))
    assert build.built((C, D1)) and build.built((C, None)) and build.instance_ready(C)
    assert not build.built((A, D1)) and not build.instance_ready(A)
    assert build.next_instance() == A


def test_instance_progress_is_an_interval_of_instants_growing_both_ways() -> None:
    assert not InstanceProgress().built(D1) and not InstanceProgress().built(None)
    started = InstanceProgress(low=D3, high=D3)
    assert not started.built(D3) and not started.built(D1) and not started.built(D5)
    up = InstanceProgress(low=D3, high=D5, undated=True)
    assert up.built(D3) and up.built(D5 - MS) and not up.built(D5) and not up.built(D3 - MS)
    assert up.built(None) and not up.done
    above = InstanceProgress(low=D3, high=D5, above=True)
    assert above.built(D5 + 400 * DAY) and not above.built(D1)
    done = InstanceProgress(low=D1, high=D5, undated=True, below=True, above=True)
    assert done.done and done.built(D1 - 400 * DAY) and done.fraction() == 1.0


def test_fraction_is_messages_read_of_the_estimate_and_below_one_until_done() -> None:
    assert InstanceProgress().fraction() == 0.0
    assert InstanceProgress(low=D1, high=D1, read=10).fraction() == 0.0  # no estimate
    assert InstanceProgress(low=D1, high=D3, read=30, estimate=120).fraction() == 0.25
    assert InstanceProgress(low=D1, high=D3, read=500, estimate=120).fraction() == 0.99


def test_build_percent_and_next_instance_follow_progress() -> None:
    done = InstanceProgress(low=D1, high=D1, below=True, above=True, undated=True)
    half = InstanceProgress(low=D1, high=D1 + DAY, undated=True, read=50, estimate=100)
    build = Build(listed=(A, B), progress={A: done, B: half})
    assert build.next_instance() == B and build.percent() == 75.0
    finished = build.with_progress(B, done)
    assert finished.done and finished.next_instance() is None and finished.percent() == 100.0
    assert build.progress[B] == half  # with_progress made a new Build


async def test_state_round_trips_and_saves_only_what_changed(db: Database) -> None:
    assert await read_state(db=db) is None
    async with db.client.start_session() as session:
        await start_build(db=db, holder="h", session=session)
        first = Build(listed=(A, B), progress={A: InstanceProgress(low=D1, high=D3, read=7)})
        await save_state(
            db=db,
            holder="h",
            token={"_data": "01"},
            applied_at=Timestamp(100, 1),
            build=first,
            saved=None,
            session=session,
        )
        done = InstanceProgress(low=D1, high=D1, below=True, above=True, undated=True)
        second = first.with_progress(B, done)
        # only B differs from what was saved: only B is written (A stays as stored)
        await save_state(
            db=db,
            holder="h",
            token={"_data": "02"},
            applied_at=Timestamp(90, 1),
            build=second,
            saved=first,
            session=session,
        )
    state = await read_state(db=db)
    assert state is not None and state.status == "building" and state.schema == SCHEMA_VERSION
    assert state.token == {"_data": "02"} and state.holder == "h"
    assert state.applied_at == Timestamp(100, 1)  # it only grows
    assert state.build == second
    assert state.instance_ready(B) and not state.instance_ready(A) and state.instance_ready(C)
    raw = await db[STATE_COLLECTION].find_one()
    assert raw is not None and set(raw["build"]["progress"]) == {str(A), str(B)}


async def test_finished_build_makes_every_instance_ready(db: Database) -> None:
    async with db.client.start_session() as session:
        await start_build(db=db, holder="h", session=session)
        await save_state(
            db=db,
            holder="h",
            token={"_data": "03"},
            applied_at=None,
            build=None,
            saved=Build(),
            session=session,
        )
    state = await read_state(db=db)
    assert state is not None and state.status == "ready" and state.build is None
    assert state.instance_ready(A) and state.percent() == 100.0 and state.applied_at is None


async def test_start_build_forgets_token_and_progress(db: Database) -> None:
    async with db.client.start_session() as session:
        await save_state(
            db=db,
            holder="h",
            token={"_data": "04"},
            applied_at=Timestamp(5, 0),
            build=None,
            saved=None,
            session=session,
        )
        await start_build(db=db, holder="k", session=session)
        await start_build(db=db, holder="k", session=session)
    state = await read_state(db=db)
    assert state is not None and state.status == "building" and state.token is None
    assert state.build == Build() and state.holder == "k" and state.generation == 2
    assert state.applied_at == Timestamp(5, 0) and not state.instance_ready(A)


async def test_other_schema_versions_are_never_ready(db: Database) -> None:
    await db[STATE_COLLECTION].insert_one({"_id": "consumer", "status": "ready", "schema": 0})
    state = await read_state(db=db)
    assert state is not None and not state.instance_ready(A)


async def test_only_the_holder_refreshes_the_position_and_token(db: Database) -> None:
    async with db.client.start_session() as session:
        await start_build(db=db, holder="h", session=session)
    token = {"_data": "05"}
    assert await refresh_applied(db=db, holder="h", applied_at=Timestamp(7, 1), token=token)
    assert not await refresh_applied(
        db=db, holder="other", applied_at=Timestamp(9, 1), token={"_data": "99"}
    )
    assert await refresh_applied(db=db, holder="h", applied_at=Timestamp(6, 1), token=None)
    state = await read_state(db=db)
    assert state is not None and state.applied_at == Timestamp(7, 1) and state.token == token
