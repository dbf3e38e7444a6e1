"""Keeping the rollups current without a change stream: an ``updatedAt`` watermark.

A standalone ``mongod`` has no change stream (and no transactions). There the lease
holder polls ``messages`` for documents with ``updatedAt >= W - overlap`` (on an index of
``updatedAt``), where ``W`` is the wall-clock time the previous poll was sent, and moves
``W`` to the time this poll was sent once it is applied.

What a message contributed is kept in a ledger (``rollup_ledger``: one document per
message the rollups count, holding the fields they read, as counted). A message read
again is a change from its ledger entry to what it is now: nothing when it did not
change, so polls may overlap and repeat without counting anything twice, and a build,
the polls and the reconcile may read the same message in any order. The build reads
each instance's undated messages, then its days a span at a time, the same way (and
also finds ledger entries of those days whose message moved or was deleted), while the
polls go on between its reads; its progress is ``rollup_state.wbuild``.

Without transactions, a batch is written in steps: ``rollup_state.seq`` is made odd with
the instances the batch touches in ``dirty`` (only by the lease holder, checked by the
write itself), then the rollups, the ledger, and ``seq`` even again. Readers treat the
dirty instances of an odd ``seq`` as not built; a holder that finds an odd ``seq`` at
start (a crash in between) builds those instances again.

What this mode cannot see: deletes (until the next reconcile), writes that leave
``updatedAt`` as it was, and a ``updatedAt`` older than its write by more than the
overlap (clock skew, a slow write); the reconcile repairs all three.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DeleteOne, IndexModel, ReplaceOne
from pymongo.errors import PyMongoError

from resolvers.db import Database
from resolvers.rollups.changes import Changes
from resolvers.rollups.consumer import ConsumerStatus, Phase
from resolvers.rollups.contribution import owner
from resolvers.rollups.keys import Level, floor_to
from resolvers.rollups.lease import LeaseLost, read_lease, renew_lease, take_lease
from resolvers.rollups.state import SCHEMA_VERSION, STATE_COLLECTION
from resolvers.rollups.store import apply_changes, drop_rollups, find_by_ids, iter_raw
from resolvers.rollups.watermark_state import (
    COUNTED_FIELDS,
    LEDGER,
    SOURCE,
    STATE_ID,
    InstanceBuild,
    WatermarkBuild,
    WatermarkState,
    counted,
    day_key,
    read_watermark_state,
)

__all__ = [
    "Pair",
    "Synced",
    "WatermarkFollower",
    "WatermarkOptions",
    "WatermarkPosition",
    "ensure_watermark_indexes",
    "instances_with_messages",
    "read_undated",
]

_log = logging.getLogger(__name__)

_READ = {**dict.fromkeys(COUNTED_FIELDS, 1), "updatedAt": 1}
_DATE = {"$eq": [{"$type": "$timestamp"}, "date"]}
_DAY = Level.DAY.width

Pair = tuple[Any, Mapping[str, Any] | None, Mapping[str, Any] | None]
"""(message ``_id``, as the ledger counted it, as it is now); None = not counted."""


@dataclass(frozen=True, slots=True)
class WatermarkOptions:
    overlap: timedelta = timedelta(seconds=5)
    """How far before the watermark each poll reads again: covers writes whose
    ``updatedAt`` is older than their commit (clock skew between writer and service,
    slow writes)."""
    batch_size: int = 500
    """Messages per written batch at most."""
    idle_poll: float = 0.05
    """Seconds between polls when no request waits (a waiting request polls at once)."""
    refresh_every: float = 0.1
    """Seconds between writes of the watermark to ``rollup_state`` for other processes."""
    lease_ttl: timedelta = timedelta(seconds=10)
    renew_every: float = 3.0
    build_target: int = 2_000
    retry_delay: float = 1.0


class WatermarkPosition:
    """The watermark in the leader process, and waiting for it to pass a moment."""

    def __init__(self) -> None:
        self._at: datetime | None = None
        self._changed = asyncio.Condition()
        self.nudge = asyncio.Event()

    @property
    def at(self) -> datetime | None:
        return self._at

    def covers(self, moment: datetime) -> bool:
        return self._at is not None and self._at >= moment

    async def publish(self, moment: datetime) -> None:
        if self.covers(moment):
            return
        self._at = moment
        async with self._changed:
            self._changed.notify_all()

    def forget(self) -> None:
        self._at = None

    async def wait_for(self, moment: datetime, *, timeout: float) -> bool:
        """Whether the watermark passes ``moment`` within ``timeout`` seconds; asks the
        leader to poll at once."""
        if self.covers(moment):
            return True
        self.nudge.set()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: self.covers(moment))
        return self.covers(moment)


ExtraStep = Callable[[], Awaitable[bool]]
"""Work the leader does between polls (the reconcile); True when it did some."""


@dataclass(slots=True)
class Synced:
    """A key read and brought into the ledger and the rollups."""

    docs: list[dict[str, Any]]
    """The messages of the key as read (what the rollups now count for it)."""
    pairs: list[Pair]
    """What changed: messages new to the ledger, changed, moved or deleted."""


class WatermarkFollower:
    """The watermark loop of one process (``run``): hold the lease, build, poll."""

    def __init__(
        self,
        *,
        db: Database,
        holder: str,
        options: WatermarkOptions | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._db = db
        self.holder = holder
        self.options = options or WatermarkOptions()
        self._clock = clock or (lambda: datetime.now(UTC))
        self.position = WatermarkPosition()
        self.extra_step: ExtraStep | None = None
        self._phase: Phase = "stopped"
        self._error: str | None = None
        self._behind = 0
        self._build: WatermarkBuild | None = None
        self._span = 1
        self._seq = 0
        self._watermark: datetime | None = None
        self._seen: dict[Any, tuple[dict[str, Any] | None, Any]] = {}
        self._lost = False
        self._failures = 0
        self._refreshed_at = 0.0
        self._logged_at = 0.0

    # --- what the service sees -------------------------------------------------------

    def status(self) -> ConsumerStatus:
        percent = 100.0 if self._phase == "ready" else 0.0
        if self._phase == "building" and self._build is not None:
            percent = self._build.percent()
        lag = 0.0
        if self._phase in ("building", "ready") and self.position.at is not None:
            lag = max((self._clock() - self.position.at).total_seconds(), 0.0)
        return ConsumerStatus(self._phase, percent, self._behind, lag, None, self._error)

    @property
    def leading(self) -> bool:
        return self._phase in ("building", "ready")

    def now(self) -> datetime:
        """This process's clock, which the watermark is read against."""
        return self._clock()

    def stopped(self) -> None:
        """The owner ended the loop's task."""
        self._phase = "stopped"
        self.position.forget()

    # --- the loop --------------------------------------------------------------------

    async def run(self) -> None:
        try:
            while True:
                try:
                    await self._hold_and_follow()
                except LeaseLost as exc:
                    _log.info("rollups: %s", exc)
                    self._stand_by()
                except PyMongoError as exc:
                    self._stand_by()
                    self._failures += 1
                    delay = min(self.options.retry_delay * 2 ** (self._failures - 1), 30.0)
                    _log.warning("rollups: watermark starts over in %.1fs after: %s", delay, exc)
                    self._error = str(exc)
                    await asyncio.sleep(delay)
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self._phase, self._error = "failed", repr(exc)
            raise

    def _stand_by(self) -> None:
        self._phase = "standby"
        self._seen.clear()
        self.position.forget()

    async def _hold_and_follow(self) -> None:
        if not await self._take_lease():
            self._phase = "standby"
            await asyncio.sleep(self.options.renew_every)
            return
        self._lost = False
        renewer = asyncio.create_task(self._renew())
        try:
            await self._prepare()
            while True:
                self._check_lease()
                await self.poll()
                busy = await self._build_step() if self._build is not None else False
                if not busy and self.extra_step is not None and self._build is None:
                    busy = await self.extra_step()
                if not busy:
                    await self._idle()
        finally:
            renewer.cancel()
            await asyncio.wait([renewer])

    async def _take_lease(self) -> bool:
        now = self._clock()
        lease = await read_lease(db=self._db)
        if lease is not None and lease.holder != self.holder and lease.expires_at > now:
            return False
        return await take_lease(
            db=self._db, holder=self.holder, now=now, ttl=self.options.lease_ttl
        )

    async def _renew(self) -> None:
        while True:
            await asyncio.sleep(self.options.renew_every)
            try:
                held = await renew_lease(
                    db=self._db, holder=self.holder, now=self._clock(), ttl=self.options.lease_ttl
                )
            except PyMongoError as exc:
                _log.warning("rollups: lease renewal failed: %s", exc)
                continue
            if not held:
                self._lost = True
                self.position.nudge.set()
                return

    def _check_lease(self) -> None:
        if self._lost:
            raise LeaseLost(f"the rollup lease was taken from {self.holder}")

    async def _idle(self) -> None:
        nudge = self.position.nudge
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(self.options.idle_poll):
                await nudge.wait()
        nudge.clear()

    # --- taking over -----------------------------------------------------------------

    async def _prepare(self) -> None:
        """Continue from the stored state, build again what a crash left half written,
        or build everything when the rollups are not this mode's."""
        await ensure_watermark_indexes(db=self._db)
        self._seen.clear()
        state = await read_watermark_state(db=self._db)
        if state is None or not state.ours:
            await self._begin_rebuild(_distrust(state))
            return
        await self._db[STATE_COLLECTION].update_one(STATE_ID, {"$set": {"holder": self.holder}})
        self._seq = state.seq
        self._watermark = state.watermark or self._clock()
        self._build = state.build
        if state.writing:
            await self._rebuild_dirty(state)
        self._phase = "ready" if self._build is None else "building"

    async def _begin_rebuild(self, reason: str) -> None:
        _log.warning("rollups: building with the updatedAt watermark (%s)", reason)
        started = self._clock()
        fields = {
            "schema": SCHEMA_VERSION,
            "status": "building",
            "holder": self.holder,
            "token": None,  # a change-stream consumer finding these rollups builds its own
            "build": None,
            "source": SOURCE,
            "seq": 0,
            "dirty": [],
            "watermark": started,
            "wbuild": WatermarkBuild().as_doc(),
        }
        update = {"$set": fields, "$inc": {"generation": 1}}
        await self._db[STATE_COLLECTION].update_one(STATE_ID, update, upsert=True)
        await drop_rollups(db=self._db)
        await self._db[LEDGER].delete_many({})
        self._seq, self._watermark = 0, started
        self._build, self._span = WatermarkBuild(), 1
        self._phase = "building"

    async def _rebuild_dirty(self, state: WatermarkState) -> None:
        """A batch was cut off half written: build its instances again."""
        instances = sorted(state.dirty)
        _log.warning("rollups: a batch was cut off; building instances %s again", instances)
        self._build = (self._build or WatermarkBuild(listed=())).again(state.dirty)
        await self._save_build()
        await drop_rollups(db=self._db, instances=instances)
        for instance in instances:
            await self._db[LEDGER].delete_many({"i": instance})
        await self._end_batch(self._seq)
        self._seq += 1

    # --- polling ---------------------------------------------------------------------

    async def poll(self) -> None:
        """Apply every message updated since the watermark less the overlap, then move
        the watermark to when this poll was sent."""
        sent = self._clock()
        assert self._watermark is not None
        since = self._watermark - self.options.overlap
        chunk: list[dict[str, Any]] = []
        async for doc in self._db.messages.find({"updatedAt": {"$gte": since}}, _READ):
            chunk.append(doc)
            if len(chunk) >= self.options.batch_size:
                await self._absorb(chunk)
                chunk = []
        await self._absorb(chunk)
        self._behind = 0
        self._watermark = max(self._watermark, sent)
        self._forget_before(since)
        await self._refresh(sent)
        await self.position.publish(sent)
        self._failures, self._error = 0, None

    async def _absorb(self, docs: list[dict[str, Any]]) -> None:
        """Bring these messages into the ledger and the rollups (those not seen as they
        are now by an earlier poll of this process)."""
        self._behind = len(docs)
        fresh = [
            doc
            for doc in docs
            if doc["_id"] not in self._seen or self._seen[doc["_id"]][0] != counted(doc)
        ]
        if not fresh:
            return
        ledger = await self._ledger_by_ids([doc["_id"] for doc in fresh])
        pairs = [
            (doc["_id"], ledger.get(doc["_id"]), counted(doc))
            for doc in fresh
            if ledger.get(doc["_id"]) != counted(doc)
        ]
        await self.write(pairs)
        for doc in fresh:
            self._seen[doc["_id"]] = (counted(doc), doc.get("updatedAt"))

    def _forget_before(self, since: datetime) -> None:
        stale = [
            key
            for key, (_, updated) in self._seen.items()
            if not isinstance(updated, datetime) or updated < since
        ]
        for key in stale:
            del self._seen[key]

    def forget_seen(self) -> None:
        """Polls compare with the ledger again (after a repair wrote to it)."""
        self._seen.clear()

    async def _refresh(self, sent: datetime) -> None:
        now = time.monotonic()
        if now - self._refreshed_at < self.options.refresh_every:
            return
        result = await self._db[STATE_COLLECTION].update_one(
            {**STATE_ID, "holder": self.holder}, {"$max": {"watermark": sent}}
        )
        if result.matched_count != 1:
            raise LeaseLost(f"rollup_state was taken over from {self.holder}")
        self._refreshed_at = now

    # --- writing ---------------------------------------------------------------------

    async def write(self, pairs: Sequence[Pair]) -> None:
        """Apply message changes to the rollups and the ledger, as one batch (see the
        module's docstring for what a crash in between leaves)."""
        if not pairs:
            return
        changes = Changes()
        touched: set[ObjectId] = set()
        for _, before, after in pairs:
            changes.add(before=before, after=after)
            touched.update(i for doc in (before, after) if doc and (i := owner(doc)))
        seq = self._seq
        await self._begin_batch(seq, touched)
        await apply_changes(db=self._db, changes=changes)
        await self._db[LEDGER].bulk_write([_ledger_op(pair) for pair in pairs], ordered=True)
        await self._end_batch(seq + 1)
        self._seq = seq + 2

    async def repair(
        self, operations: Callable[[], Awaitable[None]], touched: set[ObjectId]
    ) -> None:
        """Run other writes to the rollups of ``touched`` as a batch (the reconcile)."""
        seq = self._seq
        await self._begin_batch(seq, touched)
        await operations()
        await self._end_batch(seq + 1)
        self._seq = seq + 2

    async def _begin_batch(self, seq: int, touched: Iterable[ObjectId]) -> None:
        self._check_lease()
        result = await self._db[STATE_COLLECTION].update_one(
            {**STATE_ID, "holder": self.holder, "seq": seq},
            {"$set": {"seq": seq + 1, "dirty": sorted(touched)}},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"rollup_state was taken over from {self.holder}")

    async def _end_batch(self, seq: int) -> None:
        result = await self._db[STATE_COLLECTION].update_one(
            {**STATE_ID, "holder": self.holder, "seq": seq},
            {"$set": {"seq": seq + 1, "dirty": []}},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"rollup_state was taken over from {self.holder}")

    async def _ledger_by_ids(self, ids: Sequence[Any]) -> dict[Any, dict[str, Any]]:
        found = find_by_ids(self._db[LEDGER], ids, {"m": 1})
        return {doc["_id"]: doc["m"] async for doc in found}

    # --- reading a key ---------------------------------------------------------------

    async def sync_days(self, *, instance: ObjectId, start: datetime, end: datetime) -> Synced:
        """Read the messages of ``instance`` dated in ``[start, end)`` (whole UTC days) and
        make the ledger and the rollups count them as they are, including ledger entries
        of those days whose message has moved or is gone."""
        raw = iter_raw(db=self._db, instance=instance, start=start, end=end, projection=_READ)
        docs = [doc async for doc in raw]
        query = {"i": instance, "d": {"$gte": start, "$lt": end}}
        return await self._sync(docs, query)

    async def sync_undated(self, *, instance: ObjectId) -> Synced:
        """The same for the undated messages of ``instance``."""
        docs = [doc async for doc in read_undated(db=self._db, instance=instance)]
        return await self._sync(docs, {"i": instance, "d": None})

    async def _sync(self, docs: list[dict[str, Any]], ledger_query: Mapping[str, Any]) -> Synced:
        now = {doc["_id"]: counted(doc) for doc in docs}
        ledger = {e["_id"]: e["m"] async for e in self._db[LEDGER].find(ledger_query, {"m": 1})}
        elsewhere = await self._ledger_by_ids([key for key in now if key not in ledger])
        gone = [key for key in ledger if key not in now]
        moved = {}
        async for doc in find_by_ids(self._db.messages, gone, _READ):
            moved[doc["_id"]] = counted(doc)
        pairs: list[Pair] = []
        for key, after in now.items():
            before = ledger.get(key, elsewhere.get(key))
            if before != after:
                pairs.append((key, before, after))
        pairs += [(key, ledger[key], moved.get(key)) for key in gone]
        for start in range(0, len(pairs), self.options.batch_size):
            await self.write(pairs[start : start + self.options.batch_size])
        if pairs:
            self.forget_seen()
        return Synced(docs=docs, pairs=pairs)

    # --- building --------------------------------------------------------------------

    async def _build_step(self) -> bool:
        """One read of the build; False when it is complete."""
        build = self._build
        assert build is not None
        if build.listed is None:
            listed = tuple(await instances_with_messages(db=self._db))
            self._build = replace(build, listed=listed)
        elif build.position >= len(build.listed):
            self._build = None
            self._phase = "ready"
            _log.info("rollups: building, 100.0% done")
        else:
            instance = build.listed[build.position]
            current = build.current
            if current is None or current.instance != instance:
                current = InstanceBuild(instance)
            current = await self._build_instance(current)
            if current.done:
                self._build = WatermarkBuild(build.listed, build.position + 1, None)
            else:
                self._build = replace(build, current=current)
        await self._save_build()
        self._log_progress()
        return self._build is not None

    async def _build_instance(self, current: InstanceBuild) -> InstanceBuild:
        """One read of an instance: its undated messages, its first and last day, or a
        span of its days."""
        instance = current.instance
        if not current.undated:
            await self.sync_undated(instance=instance)
            return replace(current, undated=True)
        if not current.ranged:
            low, high = await _dated_range(db=self._db, instance=instance)
            return replace(current, ranged=True, low=low, high=high, next=low)
        assert current.next is not None and current.high is not None
        end = min(current.next + self._span * _DAY, current.high + _DAY)
        synced = await self.sync_days(instance=instance, start=current.next, end=end)
        self._span = _next_span(self._span, read=len(synced.docs), target=self.options.build_target)
        return replace(current, next=end)

    def _log_progress(self) -> None:
        now = time.monotonic()
        if self._build is not None and now - self._logged_at >= 5.0:
            _log.info("rollups: building, %.1f%% done", self._build.percent())
            self._logged_at = now

    async def _save_build(self) -> None:
        fields = {
            "wbuild": None if self._build is None else self._build.as_doc(),
            "status": "ready" if self._build is None else "building",
        }
        result = await self._db[STATE_COLLECTION].update_one(
            {**STATE_ID, "holder": self.holder}, {"$set": fields}
        )
        if result.matched_count != 1:
            raise LeaseLost(f"rollup_state was taken over from {self.holder}")


async def ensure_watermark_indexes(*, db: Database) -> None:
    """``messages.updatedAt`` for the polls, the ledger by instance and day."""
    await db.messages.create_indexes([IndexModel([("updatedAt", ASCENDING)], name="updatedAt")])
    await db[LEDGER].create_indexes([IndexModel([("i", ASCENDING), ("d", ASCENDING)], name="i_d")])


def _ledger_op(pair: Pair) -> ReplaceOne[Any] | DeleteOne:
    key, _, after = pair
    place = day_key(after)
    if after is None or place is None:
        return DeleteOne({"_id": key})
    entry = {"_id": key, "i": place[0], "d": place[1], "m": dict(after)}
    return ReplaceOne({"_id": key}, entry, upsert=True)


def _distrust(state: WatermarkState | None) -> str:
    if state is None:
        return "no rollups yet"
    if state.source != SOURCE:
        return "the rollups were kept by a change stream"
    return "the rollup layout changed"


def _next_span(span: int, *, read: int, target: int) -> int:
    """Days per read after a read of ``read`` messages: doubled while reads are small,
    halved when they are large (one day to 64)."""
    if read < target // 2:
        return min(span * 2, 64)
    return max(span // 2, 1) if read > target else span


async def instances_with_messages(*, db: Database) -> list[ObjectId]:
    """Every instance some message counts for (a scan of ``messages``)."""
    cursor = await db.messages.aggregate([{"$group": {"_id": "$instanceId"}}])
    found = [row["_id"] async for row in cursor]
    return sorted(instance for instance in found if isinstance(instance, ObjectId))


async def _dated_range(
    *, db: Database, instance: ObjectId
) -> tuple[datetime | None, datetime | None]:
    """The UTC days of the first and last dated message of ``instance``."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"instanceId": instance}},
        {"$match": {"$expr": _DATE}},
        {"$group": {"_id": None, "low": {"$min": "$timestamp"}, "high": {"$max": "$timestamp"}}},
    ]
    rows = await (await db.messages.aggregate(pipeline)).to_list()
    if not rows:
        return None, None
    return floor_to(rows[0]["low"], Level.DAY), floor_to(rows[0]["high"], Level.DAY)


async def read_undated(*, db: Database, instance: ObjectId) -> AsyncIterator[dict[str, Any]]:
    """The messages of ``instance`` without a date (their fields the rollups read)."""
    pipeline: list[dict[str, Any]] = [
        {"$match": {"instanceId": instance}},
        {"$match": {"$expr": {"$not": [_DATE]}}},
        {"$project": _READ},
    ]
    async for doc in await db.messages.aggregate(pipeline):
        if owner(doc) == instance:
            yield doc
