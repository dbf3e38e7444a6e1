"""The change-stream consumer on a real server: whatever happens to the messages, once it
has caught up the rollups answer exactly what the full scan answers."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from bson import ObjectId
from pymongo import AsyncMongoClient, monitoring

from graph.embedded import free_port, is_reachable, stop_process
from resolvers import Database, InstanceRef, ensure_indexes, fetch_metrics, open_client
from resolvers.rollups import read_rollup_metrics
from resolvers.rollups.consumer import ConsumerOptions, RollupConsumer
from resolvers.rollups.ranges import read_range_metrics
from resolvers.timeranges import TimeRange
from tests.factories import NOW, message

A, B, C = (ObjectId(f"{n:024x}") for n in range(1, 4))
FAST = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, build_target=4)


class Crash(Exception):
    """The process died (raised by the fault hook)."""


def _consumer(db: Database, **kwargs: Any) -> RollupConsumer:
    return RollupConsumer(db=db, holder="test", options=kwargs.pop("options", FAST), **kwargs)


async def _crash_after_insert(
    db: Database,
    *,
    options: ConsumerOptions,
    hook: Callable[[], Awaitable[None]],
    doc: dict[str, Any],
) -> None:
    """Start a consumer with the fault ``hook``, insert ``doc``, and wait until the hook
    kills it (``Crash``); the consumer is stopped either way."""
    first = _consumer(db, options=options, fault_hook=hook)
    first.start()
    try:
        await db.messages.insert_one(doc)
        with pytest.raises(Crash):
            await asyncio.wait_for(asyncio.shield(first.task), 60)  # type: ignore[arg-type]
    finally:
        await first.stop()


@pytest.fixture
async def consumer(db: Database) -> AsyncIterator[RollupConsumer]:
    running = _consumer(db)
    running.start()
    yield running
    await running.stop()


async def settle(db: Database, consumer: RollupConsumer, *, timeout: float = 60.0) -> None:
    """Wait until the consumer has applied every write made so far and is ready (in that
    order: a write it has not seen yet may still start a rebuild)."""
    async with db.client.start_session() as session:
        await db.rollup_state.find_one({}, session=session)
        now = session.operation_time
    assert now is not None
    deadline = time.monotonic() + timeout
    while not await consumer.position.wait_for(now, timeout=0.1):
        _check_alive(consumer)
        assert time.monotonic() < deadline, consumer.status()
    while consumer.status().phase != "ready":
        _check_alive(consumer)
        assert time.monotonic() < deadline, consumer.status()
        await asyncio.sleep(0.02)


def _check_alive(consumer: RollupConsumer) -> None:
    task = consumer.task
    if task is not None and task.done():
        task.result()  # raises what ended it


async def assert_exact(db: Database, *, instances: tuple[ObjectId, ...] = (A, B, C)) -> None:
    """Rollups equal the full scan: each instance alone and all together, ignoring group
    messages or not, at now and at the window edges."""
    selections = [[i] for i in instances] + [list(instances)]
    for ignore in (False, True):
        for ids in selections:
            refs = [InstanceRef(id=i, name=str(i), ignore_group_messages=ignore) for i in ids]
            for now in (NOW, NOW + timedelta(days=7, minutes=1), NOW - timedelta(days=3)):
                expected = await fetch_metrics(db=db, instances=refs, now=now)
                got = await read_rollup_metrics(db=db, instances=refs, now=now)
                assert got == expected, (ids, ignore, now)


def _odd_documents() -> list[dict[str, Any]]:
    return [
        message(A, days_ago=0.5, isGroup=True, fromMe=False, sender="s@s.whatsapp.net"),
        message(A, days_ago=8, chatId="g@g.us", isGroup=True, media={"type": "image"}),
        message(A, timestamp="2026-11-20", status=None, type=7),
        message(A, timestamp=[NOW]),
        message(B, days_ago=29.99, fromMe=True, media="image", status="a.b$c%"),
        message(B, days_ago=31, chatId=42, isGroup="true"),
        {"instanceId": [A], "timestamp": NOW, "chatId": "x@s.whatsapp.net"},
        {"instanceId": str(C), "timestamp": NOW},
        {"instanceId": C},
        {},
    ]


async def test_stream_keeps_rollups_exact_through_every_kind_of_write(
    db: Database, consumer: RollupConsumer
) -> None:
    await settle(db, consumer)
    docs = [message(i, days_ago=d) for i in (A, B, C) for d in (0.1, 2, 6.9, 7.1, 29, 45)]
    ids = (await db.messages.insert_many(docs + _odd_documents())).inserted_ids
    await settle(db, consumer)
    await assert_exact(db)

    later = NOW + timedelta(minutes=5)
    await db.messages.update_many({"instanceId": A}, {"$set": {"status": "played"}})
    await db.messages.update_one({"_id": ids[0]}, {"$set": {"updatedAt": later, "isGroup": True}})
    await db.messages.update_one({"_id": ids[1]}, {"$set": {"timestamp": NOW - timedelta(days=40)}})
    await db.messages.update_one({"_id": ids[2]}, {"$unset": {"chatId": "", "type": ""}})
    await db.messages.update_one({"_id": ids[3]}, {"$set": {"media": {"type": "video"}}})
    await db.messages.update_one({"_id": ids[4]}, {"$set": {"instanceId": B}})
    await db.messages.update_one({"_id": ids[5]}, {"$set": {"instanceId": [A]}})
    await db.messages.replace_one({"_id": ids[6]}, message(C, days_ago=3, type="poll"))
    await db.messages.delete_many({"_id": {"$in": ids[7:12]}})
    await db.messages.delete_many({"instanceId": B, "timestamp": {"$lt": NOW - timedelta(days=20)}})
    await settle(db, consumer)
    await assert_exact(db)


async def test_existing_messages_are_built_then_followed(db: Database) -> None:
    docs = [message(i, days_ago=d / 3) for i in (A, B) for d in range(120)]
    await db.messages.insert_many(docs + _odd_documents())
    running = _consumer(db)
    running.start()
    try:
        await settle(db, running)
        await assert_exact(db)
        await db.messages.insert_one(message(C, days_ago=1))
        await db.messages.delete_many(
            {"instanceId": A, "timestamp": {"$gt": NOW - timedelta(days=2)}}
        )
        await settle(db, running)
        await assert_exact(db)
    finally:
        await running.stop()


async def test_the_position_moves_with_each_full_batch_not_only_once_caught_up(
    db: Database,
) -> None:
    """Under constant load the stream is rarely caught up: each committed batch still
    moves the applied position, to just below its last event, so requests need not wait
    for a quiet moment."""
    seen: list[Any] = []

    async def hook() -> None:
        seen.append(running.position.applied)

    options = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, batch_size=3)
    running = _consumer(db, options=options, fault_hook=hook)
    running.start()
    try:
        await settle(db, running)
        seen.clear()
        await db.messages.insert_many([message(A, days_ago=d / 10) for d in range(30)])
        await settle(db, running)
        await assert_exact(db, instances=(A,))
    finally:
        await running.stop()
    moved = [position for position in seen if position is not None]
    assert len(set(moved)) >= 5, seen  # ten batches of three, each past the one before


class _Commands(monitoring.CommandListener):
    """Counts commands by name and collection (a ``getMore`` on ``messages`` is a poll
    of the change stream), and apart the retryable writes among them."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str]] = Counter()
        self.retryable: Counter[tuple[str, str]] = Counter()

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name, command = event.command_name, event.command
        target = command.get("collection" if name == "getMore" else name)
        self.counts[name, str(target)] += 1
        if "txnNumber" in command and "autocommit" not in command:  # not in a transaction
            self.retryable[name, str(target)] += 1

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@contextlib.asynccontextmanager
async def _listened_consumer(
    db: Database, uri: str, options: ConsumerOptions
) -> AsyncIterator[tuple[RollupConsumer, _Commands]]:
    """A consumer on a client of its own whose commands are counted, settled."""
    commands = _Commands()
    client: AsyncMongoClient[dict[str, Any]]
    client = AsyncMongoClient(uri, tz_aware=True, event_listeners=[commands])
    async with client:
        running = RollupConsumer(db=client[db.name], holder="idle", options=options)
        running.start()
        try:
            await settle(db, running)
            yield running, commands
        finally:
            await running.stop()


async def _sent_while_idle(commands: _Commands, seconds: float) -> Counter[tuple[str, str]]:
    before = commands.counts.copy()
    await asyncio.sleep(seconds)
    return commands.counts - before


async def test_an_idle_consumer_polls_less_and_less_yet_a_waiting_reader_is_served_at_once(
    db: Database, mongodb_uri: str
) -> None:
    """While nothing is written each empty poll doubles the wait before the next (the
    embedded database runs one operation at a time: a poll 100 times a second gets in
    the way of requests); a reader waiting for its cluster time still gets its write
    applied at once, whatever the wait has grown to."""
    options = ConsumerOptions(idle_poll=0.01, idle_poll_max=30.0, refresh_every=60.0)
    async with _listened_consumer(db, mongodb_uri, options) as (running, commands):
        idle = await _sent_while_idle(commands, 3.0)  # at 10 ms a poll, about 250 polls
        # backed off to waits of seconds by now: only the reader's nudge is this quick
        async with db.client.start_session() as session:
            await db.messages.insert_one(message(A, days_ago=1), session=session)
            written = session.operation_time
        assert written is not None
        assert await running.position.wait_for(written, timeout=1.0)
        await assert_exact(db, instances=(A,))
    assert idle["getMore", "messages"] < 30, idle


async def test_a_backed_off_consumer_still_tells_other_processes_its_position_on_time(
    db: Database, mongodb_uri: str
) -> None:
    """Other processes cannot nudge it: they wait for ``rollup_state.appliedAt``. Its
    idle waits are cut short so that a refresh still comes every ``refresh_every``, each
    with a position past the one before (whose own write moved the cluster time)."""
    options = ConsumerOptions(idle_poll=0.01, idle_poll_max=30.0, refresh_every=0.2)
    async with _listened_consumer(db, mongodb_uri, options) as (_, commands):
        idle = await _sent_while_idle(commands, 2.0)
    assert idle["getMore", "messages"] < 50, idle  # at 10 ms a poll, about 170; now ~20
    assert idle["update", "rollup_state"] >= 6, idle  # every 0.2 s: about 10


async def test_the_periodic_writes_are_not_retryable_writes(db: Database, mongodb_uri: str) -> None:
    """SecantusDB keeps each retryable write for 30 minutes and goes through all it keeps
    on every retryable write (sorting them past 10,000): the refresh 5 times a second
    and the lease renewals must not add to them, or every write of the gateway pays."""
    options = ConsumerOptions(idle_poll=0.01, refresh_every=0.1, renew_every=0.2)
    async with _listened_consumer(db, mongodb_uri, options) as (_, commands):
        before, recorded = commands.counts.copy(), commands.retryable.copy()
        await asyncio.sleep(1.5)
        idle, retryable = commands.counts - before, commands.retryable - recorded
    assert idle["update", "rollup_state"] >= 5, idle  # every 0.1 s: about 15
    assert idle["update", "rollup_lease"] >= 3, idle  # every 0.2 s: about 7
    assert not retryable["update", "rollup_state"], retryable
    assert not retryable["update", "rollup_lease"], retryable


async def test_crash_between_apply_and_commit_loses_and_doubles_nothing(db: Database) -> None:
    crashing = asyncio.Event()

    async def hook() -> None:
        if crashing.is_set():
            raise Crash

    first = _consumer(db, fault_hook=hook)
    first.start()
    try:
        await settle(db, first)
        await db.messages.insert_many([message(A, days_ago=d) for d in (1, 2, 3)])
        await settle(db, first)
        crashing.set()
        await db.messages.insert_many([message(A, days_ago=d, type="poll") for d in (1, 4)])
        await db.messages.update_many({"instanceId": A}, {"$set": {"status": "failed"}})
        with pytest.raises(Crash):
            await asyncio.wait_for(asyncio.shield(first.task), 30)  # type: ignore[arg-type]
    finally:
        await first.stop()
    # the crashed batch wrote nothing: the rollups still hold the three first messages
    ref = [InstanceRef(id=A, name="a", ignore_group_messages=False)]
    stale = await read_rollup_metrics(db=db, instances=ref, now=NOW)
    assert (stale.total_messages, stale.messages_by_status["failed"]) == (3, 0)

    second = _consumer(db)  # the restarted process resumes at the stored token
    second.start()
    try:
        await settle(db, second)
        await assert_exact(db)
    finally:
        await second.stop()


async def test_update_without_pre_image_rebuilds(
    db: Database, consumer: RollupConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    await db.messages.insert_many([message(i, days_ago=d) for i in (A, B) for d in (1, 9)])
    await settle(db, consumer)
    caplog.set_level(logging.WARNING, logger="resolvers.rollups.consumer")
    await db.command({"collMod": "messages", "changeStreamPreAndPostImages": {"enabled": False}})
    await db.messages.update_many({"instanceId": A}, {"$set": {"status": "sent"}})
    await db.command({"collMod": "messages", "changeStreamPreAndPostImages": {"enabled": True}})
    await db.messages.delete_one({"instanceId": B})
    await settle(db, consumer)
    await assert_exact(db)
    assert "without its pre-image" in caplog.text


async def test_dropped_collection_rebuilds(
    db: Database, consumer: RollupConsumer, caplog: pytest.LogCaptureFixture
) -> None:
    await db.messages.insert_many([message(i, days_ago=d) for i in (A, B) for d in (1, 9)])
    await settle(db, consumer)
    caplog.set_level(logging.WARNING, logger="resolvers.rollups.consumer")
    await db.messages.drop()
    await db.messages.insert_many([message(C, days_ago=2), message(A, days_ago=40)])
    await db.messages.update_many({}, {"$set": {"status": "sent"}})
    await settle(db, consumer)
    await assert_exact(db)
    assert "'drop' event" in caplog.text


WRITTEN = {
    "in one go": {},
    "written often": {"flush_entries": 60},
    "in parts": {"flush_entries": 60, "flush_in_one": 0, "flush_part": 5},
}


@pytest.mark.parametrize("written", WRITTEN)
async def test_build_while_messages_change_is_exact(db: Database, written: str) -> None:
    """Writes of every kind land while the build reads one span after another, its reads
    written only once the instance is done, every few spans, or every few spans in parts
    between which events are applied."""
    rng = random.Random(20261125)

    def random_message() -> dict[str, Any]:
        fields = {"status": rng.choice(["read", "sent"]), "isGroup": rng.random() < 0.3}
        fields["chatId"] = f"{rng.randrange(40)}@s.whatsapp.net"
        return message(rng.choice([A, B]), days_ago=rng.uniform(0, 40), **fields)

    ids = list((await db.messages.insert_many([random_message() for _ in range(300)])).inserted_ids)

    async def write_something() -> None:
        target = {"_id": rng.choice(ids)}
        kind = rng.randrange(6)
        if kind == 0:
            ids.append((await db.messages.insert_one(random_message())).inserted_id)
        elif kind == 1:
            await db.messages.update_one(target, {"$set": {"status": "played"}})
        elif kind == 2:
            moved = NOW - timedelta(days=rng.uniform(0, 40))
            await db.messages.update_one(target, {"$set": {"timestamp": moved}})
        elif kind == 3:
            await db.messages.update_one(target, {"$set": {"instanceId": rng.choice([A, B, C])}})
        elif kind == 4:
            await db.messages.update_one(target, {"$set": {"timestamp": "undated"}})
        else:
            await db.messages.delete_one(target)

    options = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, build_target=4, **WRITTEN[written])
    running = _consumer(db, options=options)
    running.start()
    try:
        during_build = 0
        for _ in range(600):
            await write_something()
            if running.status().phase == "building":
                during_build += 1
            await asyncio.sleep(rng.uniform(0, 0.004))
        await settle(db, running)
        await assert_exact(db)
        await _assert_range_uniques_exact(db)
        await _assert_range_uniques_exact(db)  # from the value sets the first one kept
        assert during_build >= 100, during_build
    finally:
        await running.stop()


async def _assert_range_uniques_exact(db: Database) -> None:
    """A range's unique counts (whole days and hours from kept value sets) equal the scan's."""
    span = TimeRange(NOW - timedelta(days=30, hours=5), NOW - timedelta(hours=3))
    for instance in (A, B):
        ref = InstanceRef(id=instance, name=str(instance), ignore_group_messages=False)
        scan = await fetch_metrics(db=db, instances=[ref], now=NOW, range=span)
        found = (await read_range_metrics(db=db, instances=[ref], now=NOW, range=span))[instance]
        uniques = ("unique_chats", "unique_groups", "unique_contacts")
        assert [getattr(found, name) for name in uniques] == [
            getattr(scan, name) for name in uniques
        ]


async def test_a_build_cut_short_resumes_from_what_it_wrote(db: Database) -> None:
    """A crash in the middle of a build loses only what was not written yet: the next
    process goes on from the stored progress (no new rebuild) and ends exact."""
    rng = random.Random(7)
    docs = [message(rng.choice([A, B]), days_ago=rng.uniform(0, 60)) for _ in range(400)]
    await db.messages.insert_many(docs)
    commits = 0

    async def hook() -> None:
        nonlocal commits
        commits += 1
        if commits == 12:
            raise Crash

    options = ConsumerOptions(idle_poll=0.01, retry_delay=0.05, build_target=20, flush_entries=40)
    await _crash_after_insert(db, options=options, hook=hook, doc=message(C, days_ago=2))
    cut = await db.rollup_state.find_one({"_id": "consumer"})
    assert cut is not None and cut["status"] == "building" and cut["build"]["listed"]
    await db.messages.update_many({"instanceId": A}, {"$set": {"status": "played"}})

    second = _consumer(db, options=options)
    second.start()
    try:
        await settle(db, second)
        await assert_exact(db)
    finally:
        await second.stop()
    done = await db.rollup_state.find_one({"_id": "consumer"})
    assert done is not None and done["generation"] == cut["generation"]


async def test_a_build_cut_short_while_written_in_parts_starts_that_instance_over(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """Parts written outside a transaction cannot be undone: a process that stops between
    them leaves the instance marked, and the next one drops and builds it again."""
    rng = random.Random(8)
    await db.messages.insert_many(
        [message(rng.choice([A, B]), days_ago=rng.uniform(0, 60)) for _ in range(300)]
    )
    options = ConsumerOptions(
        idle_poll=0.01, retry_delay=0.05, build_target=30, flush_in_one=0, flush_part=4
    )

    async def hook() -> None:
        state = await db.rollup_state.find_one({"_id": "consumer"})
        if state is not None and state.get("flushing") is not None:
            raise Crash

    await _crash_after_insert(db, options=options, hook=hook, doc=message(A, days_ago=1))
    cut = await db.rollup_state.find_one({"_id": "consumer"})
    assert cut is not None and cut["flushing"] is not None

    caplog.set_level(logging.WARNING, logger="resolvers.rollups.consumer")
    second = _consumer(db, options=options)
    second.start()
    try:
        await db.messages.update_many({"instanceId": B}, {"$set": {"status": "played"}})
        await settle(db, second)
        await assert_exact(db)
    finally:
        await second.stop()
    done = await db.rollup_state.find_one({"_id": "consumer"})
    assert done is not None and done["generation"] == cut["generation"]  # not all rebuilt
    assert "stopped while written; it starts over" in caplog.text


async def test_standby_consumer_takes_over_when_the_holder_stops(db: Database) -> None:
    quick = ConsumerOptions(
        idle_poll=0.01, retry_delay=0.05, lease_ttl=timedelta(milliseconds=300), renew_every=0.1
    )
    first = RollupConsumer(db=db, holder="first", options=quick)
    second = RollupConsumer(db=db, holder="second", options=quick)
    first.start()
    await settle(db, first)
    second.start()
    try:
        await db.messages.insert_many([message(A, days_ago=d) for d in (1, 2)])
        await settle(db, first)
        assert second.status().phase == "standby"
        await first.stop(release=False)  # as if it died: the lease has to expire
        await db.messages.insert_many([message(B, days_ago=d) for d in (3, 31)])
        await settle(db, second)
        await assert_exact(db)
    finally:
        await first.stop()
        await second.stop()


# --- a server that forgets: resume token lost ----------------------------------------

_SERVER = Path(sys.executable).with_name("secantusd-py")


@pytest.fixture
def own_uri() -> Iterator[str]:
    """A SecantusDB of this module's own: it keeps at most 50 oplog entries and takes
    test commands (failpoints)."""
    if not _SERVER.exists():
        pytest.skip("secantusd-py is not installed")
    port = free_port()
    command = [str(_SERVER), "--host", "127.0.0.1", "--port", str(port)]
    command += ["--storage-path", ":memory:", "--log-level", "WARNING"]
    process = subprocess.Popen(
        [*command, "--oplog-max-entries", "50", "--enable-test-commands"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"mongodb://127.0.0.1:{port}/?directConnection=true"
    try:
        deadline = time.monotonic() + 30
        while not is_reachable(uri, timeout_ms=300):
            assert time.monotonic() < deadline, "secantusd-py did not start"
            time.sleep(0.1)
        yield uri
    finally:
        stop_process(process)


async def test_lost_resume_token_rebuilds_instead_of_answering_wrong(
    own_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = open_client(own_uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client.metrics
        await ensure_indexes(db)
        first = _consumer(db)
        first.start()
        await db.messages.insert_many([message(A, days_ago=d) for d in (1, 2, 3)])
        await settle(db, first)
        await first.stop()

        # while no consumer runs, more writes than the oplog keeps
        for day in range(80):
            await db.messages.insert_one(message(B, days_ago=day / 2))
        await db.messages.delete_many(
            {"instanceId": A, "timestamp": {"$lt": NOW - timedelta(days=2)}}
        )
        await client.admin.command("secantusAdmin.pruneOplog")

        caplog.set_level(logging.WARNING, logger="resolvers.rollups.consumer")
        second = _consumer(db)
        second.start()
        try:
            await settle(db, second)
            await assert_exact(db)
        finally:
            await second.stop()
    assert "the stream cannot resume (286" in caplog.text


async def test_oplog_pruned_under_an_open_stream_rebuilds(
    own_uri: str, caplog: pytest.LogCaptureFixture
) -> None:
    """SecantusDB prunes the oplog under an open change stream without telling it; the
    consumer notices the gap and rebuilds instead of skipping the pruned events."""
    client = open_client(own_uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client.metrics
        await ensure_indexes(db)
        paused, resume = asyncio.Event(), asyncio.Event()

        async def hook() -> None:
            if not resume.is_set():
                paused.set()
                await resume.wait()

        resume.set()
        running = _consumer(db, fault_hook=hook)
        running.start()
        try:
            await settle(db, running)
            resume.clear()
            await db.messages.insert_one(message(A, days_ago=1))
            await asyncio.wait_for(paused.wait(), 30)  # its stream is open, it is not reading
            for day in range(80):
                await db.messages.insert_one(message(B, days_ago=day / 2))
            await client.admin.command("secantusAdmin.pruneOplog")
            caplog.set_level(logging.WARNING, logger="resolvers.rollups.consumer")
            resume.set()
            await settle(db, running)
            await assert_exact(db)
        finally:
            resume.set()
            await running.stop()
    assert "rebuilding from the messages (the stream cannot resume (286" in caplog.text


async def test_database_errors_make_the_consumer_start_over_and_catch_up(own_uri: str) -> None:
    client = open_client(own_uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client.metrics
        await ensure_indexes(db)
        running = _consumer(db)
        running.start()
        try:
            await settle(db, running)
            fail = {"failCommands": ["getMore"], "errorCode": 2}
            await client.admin.command(
                "configureFailPoint", "failCommand", mode="alwaysOn", data=fail
            )
            try:
                await db.messages.insert_many([message(A, days_ago=d) for d in (1, 2)])
                deadline = time.monotonic() + 30
                while running.status().error is None:
                    assert time.monotonic() < deadline, running.status()
                    await asyncio.sleep(0.02)
            finally:
                await client.admin.command("configureFailPoint", "failCommand", mode="off")
            await db.messages.update_many({"instanceId": A}, {"$set": {"status": "sent"}})
            await settle(db, running)
            await assert_exact(db)
            assert running.status().error is None
        finally:
            await running.stop()
