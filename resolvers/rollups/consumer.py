"""The change-stream consumer: keeps the rollups current, builds them, says how far it is.

One process per database holds the lease (``lease.py``) and runs the loop: read
events (pre-images on) until the stream is caught up or a batch is full, turn them into
one ``Changes``, and apply it in ONE transaction with the resume token, the applied
position and the lease fence. A crash before the commit loses nothing (the stream
resumes at the stored token); after it, nothing is counted twice. Anything the stream
cannot express as a delta (no pre-image, a dropped or renamed collection, lost
history) drops the rollups and builds them again, in the same loop (``backfill.py``).
Under load, a batch is whatever arrived during the previous commit (so batches grow
with the rate), and its position is the cluster time just below its last event, so the
applied position moves without waiting for a quiet moment.

While building, the reads of the instance being built are folded in memory and written
when it is done (or every ``flush_entries`` / ``flush_every``): a value or bucket touched
by many reads is written once, not once a read. A small fold is written with its
progress in the batch's transaction; a large one in parts outside any transaction
(SecantusDB never commits a transaction of more writes than its oplog holds), the
instance marked in ``rollup_state.flushing`` meanwhile: a process that finds the mark
drops that instance's rollups and builds it again. A restart otherwise goes on from the
last written progress.

The applied position is a cluster time P: every message write at or before P is in the
rollups of every built instance. It moves when a poll of the stream comes back empty:
P is then a cluster time observed before that poll was sent, either from the stream's
own replies or from a reader that is waiting for its own cluster time (``wait_for``
nudges the loop to poll at once). Other processes read it from ``rollup_state``, which
the loop refreshes while idle.

SecantusDB prunes the oplog under an open stream silently; before each commit the loop
checks that the stream could still resume from where the batch began (``_guard_history``).

Known limit: a write that took its cluster time before P was observed but became
visible only after the empty poll is not covered by P (the window of that write's own
commit: microseconds on SecantusDB). A request whose cluster time falls in that window
could miss that one write; no test has seen it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from bson import ObjectId, Timestamp
from pymongo.asynchronous.change_stream import AsyncChangeStream
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import CollectionInvalid, OperationFailure, PyMongoError

from resolvers.db import Database
from resolvers.rollups.backfill import (
    Listing,
    Span,
    Sweep,
    Window,
    ensure_undated_index,
    read_next_step,
    route,
)
from resolvers.rollups.cache import ReadCache
from resolvers.rollups.changes import Changes
from resolvers.rollups.contribution import owner
from resolvers.rollups.events import RebuildNeeded, decode_event
from resolvers.rollups.lease import (
    LeaseLost,
    fence,
    read_lease,
    release_lease,
    renew_lease,
    take_lease,
)
from resolvers.rollups.state import (
    SCHEMA_VERSION,
    Build,
    RollupState,
    read_state,
    refresh_applied,
    restart_instance,
    save_state,
    start_build,
)
from resolvers.rollups.store import apply_changes, drop_rollups

__all__ = [
    "AppliedPosition",
    "ConsumerOptions",
    "ConsumerStatus",
    "FaultHook",
    "Phase",
    "RollupConsumer",
    "enable_pre_images",
    "stored_status",
]

_log = logging.getLogger(__name__)

Phase = Literal["stopped", "standby", "building", "ready", "failed"]
"""``standby``: another process holds the lease (this one waits to take over)."""

FaultHook = Callable[[], Awaitable[None]]
"""Called inside each commit's transaction after every write, before the commit."""

# A resume point the server no longer has: ChangeStreamHistoryLost, InvalidResumeToken,
# ChangeStreamFatalError.
_HISTORY_LOST = frozenset({286, 260, 280})


@dataclass(frozen=True, slots=True)
class ConsumerOptions:
    batch_size: int = 500
    """Events per transaction at most."""
    idle_poll: float = 0.02
    """Seconds before the next poll once caught up. Each poll that finds nothing doubles
    the wait, up to ``idle_poll_max``; events, or a reader in this process waiting for
    its cluster time (it nudges the loop to poll at once), bring it back to this."""
    idle_poll_max: float = 0.16
    """The longest wait between polls while nothing happens (a poll costs SecantusDB,
    which runs one operation at a time, ~2 ms). A request in another process cannot
    nudge: it waits for ``rollup_state.appliedAt``, which the commit of the poll that
    finds its write moves, so up to this long, plus that commit and its own reads of
    the state every 20 ms; keep that well under ``ROLLUPS_WAIT_MS`` (250 ms by default),
    past which it scans. Idle waits are also cut to poll twice per ``refresh_every``
    (see ``_Follower._idle``), so other processes see the position move as often as
    with constant polls."""
    lease_ttl: timedelta = timedelta(seconds=10)
    renew_every: float = 3.0
    refresh_every: float = 0.2
    """Seconds between idle refreshes of ``rollup_state.appliedAt`` for other processes."""
    build_target: int = 5_000
    """Messages per build read the span of time adapts to (about 0.25 s of SecantusDB)."""
    flush_entries: int = 300_000
    """While building an instance, its reads are folded in memory and written once it is
    done, or once they hold this many entries (buckets, values: about 100 MB), or after
    ``flush_every`` seconds (what a restart reads again)."""
    flush_every: float = 600.0
    flush_in_one: int = 5_000
    """Folded entries written in one transaction with the progress at most; more are
    written in parts of ``flush_part``, one per turn of the loop, outside a transaction
    (SecantusDB never commits a transaction of more writes than its oplog holds, 100,000
    by default, and holds the server while it commits)."""
    flush_part: int = 1_000
    retry_delay: float = 1.0
    """Seconds before starting over after a database error."""
    cache_entries: int = 10_000
    """Rollup documents and raw quarter hours this process keeps from requests' reads
    while it leads and nothing changed them (``cache.py``); 0 = none."""
    cache_values: int = 500_000
    """Distinct values it keeps in unions of ended days and hours (``cache.py``)."""


@dataclass(frozen=True, slots=True)
class ConsumerStatus:
    phase: Phase
    percent: float
    """Build progress (100 when ready)."""
    behind: int
    """Events read from the stream and not applied yet."""
    lag_seconds: float
    """While catching up: age of the newest event read; 0 once caught up."""
    applied_at: Timestamp | None
    error: str | None


class AppliedPosition:
    """The consumer's applied cluster time in this process, and waiting for it."""

    def __init__(self) -> None:
        self._applied: Timestamp | None = None
        self._wanted: Timestamp | None = None
        self._changed = asyncio.Condition()
        self.nudge = asyncio.Event()

    @property
    def applied(self) -> Timestamp | None:
        return self._applied

    @property
    def wanted(self) -> Timestamp | None:
        """The latest cluster time a reader observed and waits for."""
        return self._wanted

    def covers(self, moment: Timestamp) -> bool:
        return self._applied is not None and self._applied >= moment

    async def publish(self, moment: Timestamp) -> None:
        if self.covers(moment):
            return
        self._applied = moment
        async with self._changed:
            self._changed.notify_all()

    async def wait_for(self, moment: Timestamp, *, timeout: float) -> bool:
        """Whether the position reaches ``moment`` (a cluster time the caller observed)
        within ``timeout`` seconds; asks the consumer to poll at once."""
        if self.covers(moment):
            return True
        self._wanted = moment if self._wanted is None else max(self._wanted, moment)
        self.nudge.set()
        # asyncio.timeout, not wait_for: Python 3.11's wait_for can swallow a cancellation
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.covers(moment))
        return self.covers(moment)


async def stored_status(*, db: Database) -> ConsumerStatus:
    """The consumer's progress as another process sees it (``rollup_state`` and the
    lease): ``standby`` when no process holds a current lease; ``lag_seconds`` is how far
    ``appliedAt`` trails the cluster time (whole seconds)."""
    async with db.client.start_session(causal_consistency=False) as session:
        state = await read_state(db=db, session=session)
        now = session.operation_time
    lease = await read_lease(db=db)
    if state is None:
        return ConsumerStatus("stopped", 0.0, 0, 0.0, None, "the rollups have not been built")
    held = lease is not None and lease.expires_at > datetime.now(UTC)
    phase: Phase = ("ready" if state.status == "ready" else "building") if held else "standby"
    lag = 0.0
    if now is not None and state.applied_at is not None:
        lag = float(max(now.time - state.applied_at.time, 0))
    error = None if held else "no process holds the consumer lease"
    return ConsumerStatus(phase, state.percent(), 0, lag, state.applied_at, error)


async def enable_pre_images(*, db: Database) -> None:
    """Store pre-images of ``messages`` (MongoDB >= 6, SecantusDB); creates it if absent."""
    if "messages" not in await db.list_collection_names(filter={"name": "messages"}):
        with contextlib.suppress(CollectionInvalid, OperationFailure):  # created meanwhile
            await db.create_collection("messages")
    await db.command({"collMod": "messages", "changeStreamPreAndPostImages": {"enabled": True}})


@dataclass(slots=True)
class _Batch:
    events: list[Mapping[str, Any]]
    caught_up: bool
    coverage: Timestamp | None
    """When caught up: a cluster time observed before the empty poll; else just below
    the last event's (every earlier write to ``messages`` came before it: the stream is
    in cluster-time order), so the position moves under constant load too."""
    ended: bool = False
    """The stream closed after these events (an invalidate, say)."""
    resumed_from: Mapping[str, Any] | None = None
    """The stream's resume token before this batch was read."""


class _StreamEnded(Exception):
    """The stream closed without an error (start over from the stored state)."""


class RollupConsumer:
    """Runs the consumer loop as an asyncio task: ``start``/``stop`` by its owner."""

    def __init__(
        self,
        *,
        db: Database,
        holder: str | None = None,
        options: ConsumerOptions | None = None,
        fault_hook: FaultHook | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self.holder = holder or f"{uuid.uuid4().hex[:12]}"
        self._options = options or ConsumerOptions()
        self._fault_hook = fault_hook
        self._clock = clock or (lambda: datetime.now(UTC))
        self.position = AppliedPosition()
        self.reads = ReadCache(
            self._options.cache_entries, lasting_values=self._options.cache_values
        )
        """Kept reads of the rollups; every write of ours to them goes through
        ``self.reads.writing()``."""
        self._task: asyncio.Task[None] | None = None
        self._lease_lost = False
        self._failures = 0
        """Database errors in a row (the retry delay doubles with each, up to 30 s)."""
        self._writing = asyncio.Lock()
        self._saved_build: Build | None = None
        self._phase: Phase = "stopped"
        self._build: Build | None = None
        self._behind = 0
        self._lag = 0.0
        self._error: str | None = None

    # --- owner's API -----------------------------------------------------------------

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self.run(), name=f"rollup-consumer-{self.holder}")

    async def stop(self, *, release: bool = True) -> None:
        """End the task; ``release`` lets another process take over at once (without it,
        the lease expires: what a crashed process leaves)."""
        task, self._task = self._task, None
        if task is not None:
            # On Python 3.11 a cancel can be lost inside the driver (asyncio.wait_for
            # swallows it when the awaited write completes at the same moment): repeat it
            while not task.done():
                task.cancel()
                await asyncio.wait([task], timeout=0.5)
        if release:
            with contextlib.suppress(PyMongoError):
                await release_lease(db=self._db, holder=self.holder, now=self._clock())
        self._phase = "stopped"

    @property
    def task(self) -> asyncio.Task[None] | None:
        return self._task

    def read_cache(self) -> ReadCache | None:
        """The kept reads, while this process leads and its rollups are ready."""
        if self._phase != "ready" or self._lease_lost:
            return None
        return self.reads

    def status(self) -> ConsumerStatus:
        building = self._phase == "building" and self._build is not None
        percent = self._build.percent() if building and self._build else 0.0
        if self._phase == "ready":
            percent = 100.0
        return ConsumerStatus(
            phase=self._phase,
            percent=percent,
            behind=self._behind,
            lag_seconds=self._lag,
            applied_at=self.position.applied,
            error=self._error,
        )

    async def run(self) -> None:
        """The loop: hold the lease and follow the stream; start over after database
        errors; any other exception (a bug, or the fault hook) ends the task."""
        try:
            while True:
                try:
                    await self._hold_and_follow()
                except LeaseLost as exc:
                    _log.info("rollups: %s", exc)
                    self._phase = "standby"
                except (PyMongoError, _StreamEnded) as exc:
                    self._failures += 1
                    delay = min(self._options.retry_delay * 2 ** (self._failures - 1), 30.0)
                    _log.warning("rollups: consumer starts over in %.1fs after: %s", delay, exc)
                    self._error = str(exc)
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._phase, self._error = "failed", repr(exc)
            raise

    # --- lease -----------------------------------------------------------------------

    async def _hold_and_follow(self) -> None:
        options = self._options
        if not await self._take_lease():
            self._phase = "standby"
            await asyncio.sleep(options.renew_every)
            return
        self._lease_lost = False
        self.reads.forget()  # another process may have written while we did not lead
        await enable_pre_images(db=self._db)
        await ensure_undated_index(db=self._db)
        renewer = asyncio.create_task(self._renew())
        try:
            while True:
                try:
                    await self._follow(await self._trusted_state())
                except RebuildNeeded as exc:
                    await self._begin_rebuild(str(exc))
        finally:
            renewer.cancel()
            await asyncio.wait([renewer])  # unlike awaiting it, never eats our own cancel

    async def _take_lease(self) -> bool:
        """Take the lease when it is free; while another holder's is current, only read
        it (a write would conflict with that holder's transactions)."""
        now = self._clock()
        lease = await read_lease(db=self._db)
        if lease is not None and lease.holder != self.holder and lease.expires_at > now:
            return False
        return await take_lease(
            db=self._db, holder=self.holder, now=now, ttl=self._options.lease_ttl
        )

    async def _renew(self) -> None:
        options = self._options
        while True:
            await asyncio.sleep(options.renew_every)
            try:
                async with self._writing:  # never beside our own transaction: they conflict
                    held = await renew_lease(
                        db=self._db, holder=self.holder, now=self._clock(), ttl=options.lease_ttl
                    )
            except PyMongoError as exc:
                _log.warning("rollups: lease renewal failed: %s", exc)
                continue
            if not held:
                self._lease_lost = True
                self.position.nudge.set()
                return

    def _check_lease(self) -> None:
        if self._lease_lost:
            raise LeaseLost(f"the rollup consumer lease was taken from {self.holder}")

    # --- state and rebuilds ----------------------------------------------------------

    async def _trusted_state(self) -> RollupState:
        state = await read_state(db=self._db)
        reason = _distrust(state)
        if reason is not None:
            await self._begin_rebuild(reason)
            state = await read_state(db=self._db)
        assert state is not None
        if state.status == "building" and state.build == Build():
            with self.reads.writing():  # a build starts from nothing (also after a crash)
                await drop_rollups(db=self._db)
        elif state.status == "building" and state.flushing is not None:
            await self._start_instance_over(state.flushing)
            state = await read_state(db=self._db)
            assert state is not None
        return state

    async def _begin_rebuild(self, reason: str) -> None:
        """Mark the rollups as building from nothing (``_trusted_state`` then drops them,
        outside the transaction)."""
        _log.warning("rollups: rebuilding from the messages (%s)", reason)
        self._phase, self._build = "building", Build()
        await enable_pre_images(db=self._db)  # a dropped collection lost the setting
        async with self._fenced_transaction() as session:
            await start_build(db=self._db, holder=self.holder, session=session)
        self._saved_build = Build()

    async def _start_instance_over(self, instance: ObjectId) -> None:
        """A process stopped while writing the reads of ``instance`` in parts: what it
        wrote is incomplete, so that instance is dropped and built again."""
        _log.warning("rollups: the build of %s stopped while written; it starts over", instance)
        with self.reads.writing():
            await drop_rollups(db=self._db, instances=[instance])
        async with self._fenced_transaction() as session:
            await restart_instance(db=self._db, instance=instance, session=session)

    @contextlib.asynccontextmanager
    async def _fenced_transaction(
        self, touching: frozenset[ObjectId] | None = None
    ) -> AsyncIterator[AsyncClientSession]:
        """A transaction that commits only while this process holds the lease, writing
        the rollups of ``touching`` (None: of any instance)."""
        self._check_lease()
        with self.reads.writing(touching):  # outside the transaction: its commit is a write
            async with (
                self._writing,
                self._db.client.start_session() as session,
                await session.start_transaction(),
            ):
                await fence(
                    db=self._db,
                    holder=self.holder,
                    now=self._clock(),
                    ttl=self._options.lease_ttl,
                    session=session,
                )
                yield session

    # --- the stream ------------------------------------------------------------------

    async def _follow(self, state: RollupState) -> None:
        build = None if state.status == "ready" else (state.build or Build())
        self._saved_build, self._build = build, build
        async with self._db.client.start_session(causal_consistency=False) as session:
            stream = await self._open(state.token, session)
            try:
                await _Follower(self, stream, session, build).run()
            finally:
                await stream.close()

    async def _open(
        self, token: Mapping[str, Any] | None, session: AsyncClientSession
    ) -> AsyncChangeStream[dict[str, Any]]:
        try:
            return await self._db.messages.watch(
                full_document_before_change="whenAvailable",
                show_expanded_events=True,
                resume_after=token,
                max_await_time_ms=1,
                session=session,
            )
        except OperationFailure as exc:
            raise _lost_or(exc) from exc

    async def _commit(
        self,
        *,
        changes: Changes,
        token: Mapping[str, Any] | None,
        applied_at: Timestamp | None,
        build: Build | None,
        written: tuple[Changes, ...] = (),
        mark: bool = False,
        flushing: ObjectId | None = None,
        touching: frozenset[ObjectId] | None = None,
    ) -> None:
        """Apply ``changes`` (and ``written``: a build's folded reads and the events on
        their keys) with the position and progress ``build``, in one transaction; with
        ``mark``, also the instance being ``flushing`` in parts (None: no more).
        ``touching``: the only instances whose messages the changes came from (None: any
        may have changed)."""
        async with self._fenced_transaction(touching) as session:
            fenced = time.monotonic()

            async def pause() -> None:  # a long write keeps the lease (renewal waits)
                nonlocal fenced
                if time.monotonic() - fenced >= self._options.renew_every:
                    await fence(
                        db=self._db,
                        holder=self.holder,
                        now=self._clock(),
                        ttl=self._options.lease_ttl,
                        session=session,
                    )
                    fenced = time.monotonic()

            for part in (changes, *written):
                await apply_changes(db=self._db, changes=part, session=session, pause=pause)
            await save_state(
                db=self._db,
                holder=self.holder,
                token=token,
                applied_at=applied_at,
                build=build,
                saved=self._saved_build,
                session=session,
                mark=mark,
                flushing=flushing,
            )
            if self._fault_hook is not None:
                await self._fault_hook()
        self._saved_build = build


@dataclass(slots=True)
class _Flush:
    """Folded reads being written outside any transaction, a part per turn of the loop;
    ``target`` is the progress they complete (None: the build is done). They only add
    messages, so any order adds up the same; the events on their keys are held back
    (``_deferred``) and written after the last part, so no count goes below zero (a
    bucket that does is deleted) and no first/last is looked up before its messages."""

    parts: list[Changes]
    target: Build | None
    instance: ObjectId


class _Follower:
    """One run of the loop over an open stream (its state lives only this long)."""

    def __init__(
        self,
        consumer: RollupConsumer,
        stream: AsyncChangeStream[dict[str, Any]],
        session: AsyncClientSession,
        build: Build | None,
    ) -> None:
        self._consumer = consumer
        self._stream = stream
        self._session = session
        self._build = build
        self._window: Window | None = None
        options = consumer._options
        self._sweep = Sweep(target=options.build_target)
        self._folded = Changes(adds_only=True)
        """Reads of the instance being built, not written yet (``_saved_build`` does not
        count their keys as built), and ``_deferred`` the events on those keys."""
        self._deferred = Changes()
        self._folding: ObjectId | None = None
        """The instance whose reads are folded."""
        self._flush: _Flush | None = None
        self._flushed_at = time.monotonic()
        self._refreshed_at = 0.0
        self._refreshed: Timestamp | None = None
        self._rest = options.idle_poll
        """The next idle wait (``ConsumerOptions.idle_poll``: doubles while polls find nothing)."""
        self._idle_ended = 0.0
        self._logged_at = 0.0

    async def run(self) -> None:
        consumer = self._consumer
        consumer._phase = "ready" if consumer._saved_build is None else "building"
        while True:
            consumer._check_lease()
            batch = await self._read_batch()
            if batch.events:
                self._rest = consumer._options.idle_poll  # writes come in: poll promptly
            await self._apply(batch)  # an event that ends a stream asks for a rebuild
            if batch.ended:
                raise _StreamEnded("the change stream closed")
            if self._flush is not None:
                await self._write_part()
            if batch.caught_up:
                await self._when_caught_up(quiet=not batch.events and self._flush is None)

    async def _read_batch(self) -> _Batch:
        events: list[Mapping[str, Any]] = []
        before = self._stream.resume_token
        limit = self._consumer._options.batch_size
        while len(events) < limit:
            coverage = self._coverage()
            try:
                event = await self._stream.try_next()
            except OperationFailure as exc:
                raise _lost_or(exc) from exc
            if event is None and not self._stream.alive:
                return _Batch(events, False, None, ended=True, resumed_from=before)
            if event is None:
                return _Batch(events, True, coverage, resumed_from=before)
            events.append(event)
            self._consumer._behind = len(events)
        return _Batch(events, False, _before(events[-1]), resumed_from=before)

    def _coverage(self) -> Timestamp | None:
        """A cluster time observed before the next poll: everything written up to it is
        visible to that poll."""
        seen = [t for t in (self._session.operation_time, self._consumer.position.wanted) if t]
        return max(seen, default=None)

    async def _apply(self, batch: _Batch) -> None:
        consumer = self._consumer
        changes = Changes()
        touched: set[ObjectId] = set()
        for event in batch.events:
            change = decode_event(event)
            if change is not None:
                touched.update(_owners(change.before, change.after))
                route(
                    changes=changes,
                    change=change,
                    doc_id=event["documentKey"]["_id"],
                    build=self._build,
                    window=self._window,
                    saved=consumer._saved_build,
                    deferred=self._deferred,
                )
        if batch.events and batch.resumed_from is not None:
            await self._guard_history(batch.resumed_from)
        before = self._build
        build = self._finish_window() if batch.caught_up else before
        flush = build is not before and self._flush is None and self._flush_due(before, build)
        if batch.events or flush:
            # kept reads of other instances stay: no message of theirs changed (raw
            # messages included, whose instance is in the event's pre- or post-image)
            touching = None if flush else frozenset(touched)
            await self._commit(
                changes, batch, build=build if flush else None, flush=flush, touching=touching
            )
        self._build = consumer._build = build
        consumer._phase = "ready" if consumer._saved_build is None else "building"
        consumer._failures, consumer._error = 0, None
        consumer._behind = 0
        consumer._lag = _age(batch.events[-1]) if batch.events and not batch.caught_up else 0.0
        if batch.coverage is not None:
            await consumer.position.publish(batch.coverage)

    async def _commit(
        self,
        changes: Changes,
        batch: _Batch,
        *,
        build: Build | None,
        flush: bool,
        touching: frozenset[ObjectId] | None = None,
    ) -> None:
        """Commit a batch. With ``flush``, the folded reads (and the events on their keys)
        are written too: in this transaction, with the progress ``build``, when they are
        few; else in parts afterwards (``_write_part``), this commit marking the instance
        as being written."""
        consumer, options = self._consumer, self._consumer._options
        held = len(self._folded) + len(self._deferred)
        whole = flush and (held <= options.flush_in_one or self._folding is None)
        await consumer._commit(
            changes=changes,
            token=self._stream.resume_token,
            applied_at=batch.coverage,
            build=build if whole else consumer._saved_build,
            written=(self._folded, self._deferred) if whole else (),
            mark=flush and not whole,
            flushing=self._folding,
            touching=touching,
        )
        if not flush:
            return
        if whole:
            self._deferred = Changes()
        else:
            assert self._folding is not None
            parts = self._folded.split(options.flush_part)
            self._flush = _Flush(parts=parts, target=build, instance=self._folding)
        self._folded, self._folding = Changes(adds_only=True), None
        self._flushed_at = time.monotonic()

    async def _write_part(self) -> None:
        """Write the next part of the folded reads, outside any transaction; after the
        last, the events held back on their keys with the progress they complete."""
        flush, consumer = self._flush, self._consumer
        assert flush is not None
        consumer._check_lease()
        if flush.parts:
            with consumer.reads.writing():
                await apply_changes(db=consumer._db, changes=flush.parts.pop())
            return
        await consumer._commit(
            changes=self._deferred,
            token=self._stream.resume_token,
            applied_at=None,
            build=flush.target,
            mark=True,
            flushing=None,
        )
        self._flush, self._deferred = None, Changes()
        consumer._phase = "ready" if flush.target is None else "building"

    def _finish_window(self) -> Build | None:
        window, build = self._window, self._build
        if window is None or build is None:
            return build
        window.fold(self._folded)
        self._window = None
        if isinstance(window.step, Span):
            self._sweep.observe(window.step, len(window))
        if not isinstance(window.step, Listing):
            self._folding = getattr(window.step, "instance", None)
        advanced = window.advance(build)
        self._log_progress(advanced)
        return None if advanced.done else advanced

    def _flush_due(self, before: Build | None, after: Build | None) -> bool:
        """Whether to write the folded reads now: the build is done, the instances were
        just listed, an instance is done, they hold many entries, or it has been a while.
        (Until then they are only in memory: a restart reads them again.)"""
        if before is None or after is None or after.listed is None:
            return after is None
        if before.listed is None or before.next_instance() != after.next_instance():
            return True
        options = self._consumer._options
        held = len(self._folded) + len(self._deferred)
        late = time.monotonic() - self._flushed_at >= options.flush_every
        return held >= options.flush_entries or late

    def _log_progress(self, build: Build) -> None:
        """Build progress in the logs: every 5 seconds, and when it is done."""
        now = time.monotonic()
        if build.done or now - self._logged_at >= 5.0:
            _log.info("rollups: building, %.1f%% done", build.percent())
            self._logged_at = now

    async def _when_caught_up(self, *, quiet: bool) -> None:
        """Read the next build step, or refresh the position and, when nothing came in,
        rest a moment before polling again."""
        if self._build is not None and self._window is None:
            if self._flush is not None:  # the next reads wait for the last ones' writes
                return
            consumer = self._consumer
            self._window = await read_next_step(
                db=consumer._db, build=self._build, sweep=self._sweep, now=consumer._clock()
            )
            if self._window is None:  # nothing left to read: the build is complete
                await self._commit(Changes(), _Batch([], True, None), build=None, flush=True)
                self._build = self._consumer._build = None
                self._consumer._phase = "ready" if self._flush is None else "building"
            return
        if self._build is None:
            await self._refresh()
            if quiet:
                await self._idle()

    async def _refresh(self) -> None:
        """Tell other processes the applied position (at most every ``refresh_every``)."""
        consumer = self._consumer
        applied = consumer.position.applied
        now = time.monotonic()
        due = now - self._refreshed_at >= consumer._options.refresh_every
        if applied is None or not due or applied == self._refreshed:
            return
        ours = await refresh_applied(
            db=consumer._db,
            holder=consumer.holder,
            applied_at=applied,
            token=self._stream.resume_token,
        )
        if not ours:
            raise LeaseLost(f"rollup_state was written by another consumer than {consumer.holder}")
        self._refreshed_at, self._refreshed = now, applied

    async def _idle(self) -> None:
        """Wait for a nudge or ``_rest``; after a wait that no nudge ended, ``_rest``
        doubles (up to ``idle_poll_max``).

        The wait is cut short to poll twice per ``refresh_every``: once after the last
        refresh, whose own write moved the cluster time (a poll is covered only up to
        what was observed before it was sent), and once just before the next refresh,
        which can then write a position past that write. A request in another process,
        whose cluster time is at least that write's, thus waits one ``refresh_every``
        at most, not two."""
        options = self._consumer._options
        nudge = self._consumer.position.nudge
        wait = self._rest
        refresh_in = self._refreshed_at + options.refresh_every - time.monotonic()
        if refresh_in > 0:
            polled_since = self._refreshed_at < self._idle_ended
            wait = min(wait, refresh_in if polled_since else refresh_in / 2)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(wait):
                await nudge.wait()
        self._idle_ended = time.monotonic()
        if nudge.is_set():
            self._rest = options.idle_poll
        else:
            self._rest = min(self._rest * 2, max(options.idle_poll_max, options.idle_poll))
        nudge.clear()

    async def _guard_history(self, resumed_from: Mapping[str, Any]) -> None:
        """SecantusDB prunes the oplog under an open stream without an error (its
        cursor just moves on to what is left). So before committing a batch, check that
        the stream could still resume from where the batch began: if it could not,
        events in between may be gone. (MongoDB fails the open stream with 286 itself.)"""
        try:
            probe = await self._consumer._db.messages.watch(resume_after=resumed_from)
        except OperationFailure as exc:
            raise _lost_or(exc) from exc
        await probe.close()


def _distrust(state: RollupState | None) -> str | None:
    """Why the stored rollups cannot be continued from, or None."""
    if state is None:
        return "no rollups yet"
    if state.schema != SCHEMA_VERSION:
        return f"rollup layout {state.schema} is not {SCHEMA_VERSION}"
    fresh = state.status == "building" and state.build == Build()
    if state.token is None and not fresh:
        return "no stream position was saved"
    return None


def _owners(*docs: Mapping[str, Any] | None) -> Iterator[ObjectId]:
    """The instances ``docs`` count for."""
    for doc in docs:
        instance = None if doc is None else owner(doc)
        if instance is not None:
            yield instance


def _before(event: Mapping[str, Any]) -> Timestamp | None:
    """The cluster time just below ``event``'s (not at it: a transaction's events share
    one, and the rest of it may not be read yet)."""
    moment = event.get("clusterTime")
    if not isinstance(moment, Timestamp) or (moment.time == 0 and moment.inc == 0):
        return None
    if moment.inc > 0:
        return Timestamp(moment.time, moment.inc - 1)
    return Timestamp(moment.time - 1, 2**32 - 1)


def _lost_or(exc: OperationFailure) -> Exception:
    if exc.code in _HISTORY_LOST:
        return RebuildNeeded(f"the stream cannot resume ({exc.code}: {exc.details})")
    return exc


def _age(event: Mapping[str, Any]) -> float:
    wall = event.get("wallTime")
    if not isinstance(wall, datetime):
        return 0.0
    moment = wall if wall.tzinfo else wall.replace(tzinfo=UTC)
    return max((datetime.now(UTC) - moment).total_seconds(), 0.0)
