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
the keys of ``build.py`` (an instance's days, its undated messages) the same way, and
also finds ledger entries of those keys whose message moved or was deleted.

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
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo import ASCENDING, DeleteOne, IndexModel, ReplaceOne
from pymongo.errors import PyMongoError

from resolvers.db import Database
from resolvers.rollups.backfill import next_span
from resolvers.rollups.build import build_keys, instances_with_messages, read_key
from resolvers.rollups.changes import Changes
from resolvers.rollups.consumer import ConsumerStatus, Phase
from resolvers.rollups.contribution import owner
from resolvers.rollups.keys import Level
from resolvers.rollups.lease import LeaseLost, read_lease, renew_lease, take_lease
from resolvers.rollups.state import (
    SCHEMA_VERSION,
    STATE_COLLECTION,
    Build,
    InstanceProgress,
    message_key,
    read_state,
    save_state,
    start_build,
)
from resolvers.rollups.store import apply_changes, drop_rollups, find_by_ids, iter_raw

__all__ = [
    "COUNTED_FIELDS",
    "LEDGER",
    "SOURCE",
    "Pair",
    "WatermarkFollower",
    "WatermarkOptions",
    "WatermarkPosition",
    "WatermarkState",
    "counted",
    "read_watermark_state",
]

_log = logging.getLogger(__name__)

LEDGER = "rollup_ledger"
SOURCE = "watermark"
"""``rollup_state.source`` of rollups this mode keeps (the consumer leaves it unset)."""
_STATE = {"_id": "consumer"}  # the one rollup_state document (state.py)

COUNTED_FIELDS = (
    "instanceId",
    "isGroup",
    "fromMe",
    "sender",
    "chatId",
    "type",
    "status",
    "media",
    "timestamp",
)
_READ = {**dict.fromkeys(COUNTED_FIELDS, 1), "updatedAt": 1}

Pair = tuple[Any, Mapping[str, Any] | None, Mapping[str, Any] | None]
"""(message ``_id``, as the ledger counted it, as it is now); None = not counted."""


def counted(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """The fields of ``doc`` the rollups read (``contribution`` gives the same for both);
    None when it counts for no instance."""
    if doc is None or owner(doc) is None:
        return None
    kept = {field: doc[field] for field in COUNTED_FIELDS if field in doc and field != "media"}
    media = doc.get("media")
    if isinstance(media, Mapping):
        kept["media"] = {"type": media["type"]} if "type" in media else {}
    return kept


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


@dataclass(frozen=True, slots=True)
class WatermarkState:
    """This mode's part of ``rollup_state``."""

    source: str | None
    watermark: datetime | None
    """Every write whose ``updatedAt`` is at or after ``watermark - overlap`` and that was
    acknowledged before ``watermark`` (the leader's clock) is in the rollups."""
    seq: int
    dirty: frozenset[ObjectId]
    """While ``seq`` is odd: the instances a batch is being written to."""

    @property
    def writing(self) -> bool:
        return self.seq % 2 == 1

    def consistent(self, instances: Iterable[ObjectId]) -> frozenset[ObjectId]:
        """Those of ``instances`` no batch is half written to."""
        found = frozenset(instances)
        return found - self.dirty if self.writing else found


async def read_watermark_state(*, db: Database, session: Any = None) -> WatermarkState | None:
    fields = {"source": 1, "watermark": 1, "seq": 1, "dirty": 1}
    doc = await db[STATE_COLLECTION].find_one(_STATE, fields, session=session)
    if doc is None:
        return None
    return WatermarkState(
        source=doc.get("source"),
        watermark=doc.get("watermark"),
        seq=int(doc.get("seq", 0)),
        dirty=frozenset(doc.get("dirty") or ()),
    )


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
        self._build: Build | None = None
        self._saved: Build | None = None
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
        """Continue from the stored state, build what a crash left half written, or
        build everything when the rollups are not this mode's."""
        await ensure_watermark_indexes(db=self._db)
        self._seen.clear()
        state = await read_state(db=self._db)
        extras = await read_watermark_state(db=self._db)
        reason = _distrust(state is not None and state.schema == SCHEMA_VERSION, extras)
        if reason is not None or state is None or extras is None:
            await self._begin_rebuild(reason or "no rollups yet")
            return
        await self._claim(extras)
        self._build = None if state.status == "ready" else (state.build or Build())
        self._saved = self._build
        if extras.writing:
            await self._rebuild_dirty(extras.dirty)
        self._phase = "ready" if self._build is None else "building"

    async def _claim(self, extras: WatermarkState) -> None:
        """Make the stored state this holder's (the batch writes check it)."""
        await self._db[STATE_COLLECTION].update_one(_STATE, {"$set": {"holder": self.holder}})
        self._seq = extras.seq
        self._watermark = extras.watermark or self._clock()

    async def _begin_rebuild(self, reason: str) -> None:
        _log.warning(
            "rollups: building from the messages with the updatedAt watermark (%s)", reason
        )
        started = self._clock()
        async with self._db.client.start_session(causal_consistency=False) as session:
            await start_build(db=self._db, holder=self.holder, session=session)
        fields = {"source": SOURCE, "seq": 0, "dirty": [], "watermark": started}
        await self._db[STATE_COLLECTION].update_one(_STATE, {"$set": fields})
        await drop_rollups(db=self._db)
        await self._db[LEDGER].delete_many({})
        self._seq, self._watermark = 0, started
        self._build, self._saved, self._span = Build(), None, 1
        self._phase = "building"
        await self._save_build()

    async def _rebuild_dirty(self, dirty: frozenset[ObjectId]) -> None:
        """A batch was cut off half written: build its instances again."""
        instances = sorted(dirty)
        _log.warning("rollups: a batch was cut off; rebuilding instances %s", instances)
        build = self._build or Build(listed=())
        if build.listed is not None:  # else the listing to come lists them anyway
            listed = tuple(dict.fromkeys([*build.listed, *instances]))
            progress = {i: p for i, p in build.progress.items() if i not in dirty}
            self._build = Build(listed=listed, progress=progress)
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
            {**_STATE, "holder": self.holder}, {"$max": {"watermark": sent}}
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
            {**_STATE, "holder": self.holder, "seq": seq},
            {"$set": {"seq": seq + 1, "dirty": sorted(touched)}},
        )
        if result.matched_count != 1:
            raise LeaseLost(f"rollup_state was taken over from {self.holder}")

    async def _end_batch(self, seq: int) -> None:
        result = await self._db[STATE_COLLECTION].update_one(
            {**_STATE, "holder": self.holder, "seq": seq},
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
        docs = [dict(doc) async for doc in read_key(db=self._db, instance=instance, key=None)]
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
        """One read of the build (the keys of ``build.py``); False when it is complete."""
        build = self._build
        assert build is not None
        if build.listed is None:
            listed = tuple(await instances_with_messages(db=self._db))
            self._build = replace(build, listed=listed)
        elif (instance := build.next_instance()) is None:
            self._build = None
            self._phase = "ready"
            _log.info("rollups: building, 100.0% done")
        else:
            await self._build_instance_step(build, instance)
        await self._save_build()
        return self._build is not None

    async def _build_instance_step(self, build: Build, instance: ObjectId) -> None:
        progress = build.progress.get(instance, InstanceProgress())
        if not progress.ranged:
            keys = await build_keys(db=self._db, instance=instance)
            days = [key for key in keys if key is not None]
            progress = InstanceProgress(
                ranged=True, low=min(days, default=None), high=max(days, default=None)
            )
            progress = replace(progress, undated=None not in keys)
        elif not progress.undated:
            await self.sync_undated(instance=instance)
            progress = replace(progress, undated=True)
        else:
            assert progress.low is not None and progress.high is not None
            start = progress.next_day or progress.low
            end = min(start + self._span * Level.DAY.width, progress.high + Level.DAY.width)
            synced = await self.sync_days(instance=instance, start=start, end=end)
            self._span = next_span(
                span_days=self._span, read=len(synced.docs), target=self.options.build_target
            )
            progress = replace(progress, next_day=end)
        self._build = build.with_progress(instance, progress)
        now = time.monotonic()
        if now - self._logged_at >= 5.0:
            _log.info("rollups: building, %.1f%% done", self._build.percent())
            self._logged_at = now

    async def _save_build(self) -> None:
        async with self._db.client.start_session(causal_consistency=False) as session:
            await save_state(
                db=self._db,
                holder=self.holder,
                token=None,
                applied_at=None,
                build=self._build,
                saved=self._saved,
                session=session,
            )
        self._saved = self._build


async def ensure_watermark_indexes(*, db: Database) -> None:
    """``messages.updatedAt`` for the polls, the ledger by instance and day."""
    await db.messages.create_indexes([IndexModel([("updatedAt", ASCENDING)], name="updatedAt")])
    await db[LEDGER].create_indexes([IndexModel([("i", ASCENDING), ("d", ASCENDING)], name="i_d")])


def _ledger_op(pair: Pair) -> ReplaceOne[Any] | DeleteOne:
    key, _, after = pair
    place = message_key(after)
    if after is None or place is None:
        return DeleteOne({"_id": key})
    entry = {"_id": key, "i": place[0], "d": place[1], "m": dict(after)}
    return ReplaceOne({"_id": key}, entry, upsert=True)


def _distrust(layout_ok: bool, extras: WatermarkState | None) -> str | None:
    if extras is None:
        return "no rollups yet"
    if not layout_ok:
        return "the rollup layout changed"
    if extras.source != SOURCE:
        return "the rollups were kept by a change stream"
    return None
