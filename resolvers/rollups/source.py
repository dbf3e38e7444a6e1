"""What keeps the rollups current in this process: the change stream or the watermark,
and when the leader reconciles them with the raw messages.

``ROLLUPS_SOURCE=auto`` asks the server once it answers (``hello``): a replica set member
(SecantusDB by default) or a ``mongos`` has change streams; a standalone ``mongod`` (or
SecantusDB with ``--standalone``) has none and gets the ``updatedAt`` watermark
(``watermark.py``). ``RollupSource`` is the consumer the service already drives
(``start``, ``stop``, ``status``); in change-stream mode it is exactly that consumer.

The reconcile (``reconcile.py``) runs in the process holding the lease, every
``reconcile_every``: beside the consumer's loop with a change stream, inside the
watermark loop (between polls) otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from bson import ObjectId
from pymongo.errors import OperationFailure, PyMongoError

from resolvers.db import Database
from resolvers.rollups.cache import ReadCache
from resolvers.rollups.consumer import (
    ConsumerOptions,
    ConsumerStatus,
    Phase,
    RollupConsumer,
    stored_status,
)
from resolvers.rollups.lease import read_lease
from resolvers.rollups.reconcile import (
    ChangeStreamView,
    ReconcilePass,
    ReconcileReport,
    WatermarkView,
)
from resolvers.rollups.state import STATE_COLLECTION
from resolvers.rollups.watermark import WatermarkFollower, WatermarkOptions
from resolvers.rollups.watermark_state import SOURCE, read_watermark_state

__all__ = [
    "Mode",
    "RollupSource",
    "SourceSetting",
    "StoredStatus",
    "reconcile_period",
    "source_fields",
    "stored_source_status",
]

_log = logging.getLogger(__name__)

Mode = Literal["change-stream", "watermark"]
SourceSetting = Literal["auto", "change-stream", "watermark"]

DEFAULT_RECONCILE = timedelta(minutes=60)


def reconcile_period(minutes: int | None) -> timedelta | None:
    """``ROLLUPS_RECONCILE_MINUTES``: None = every hour, 0 = never. (``serve`` on the
    embedded database turns an unset value into 0.)"""
    if minutes is None:
        return DEFAULT_RECONCILE
    return None if minutes == 0 else timedelta(minutes=minutes)


def source_fields(consumer: RollupConsumer | None) -> dict[str, object]:
    """For ``/health``: ``source`` (``change-stream``, ``watermark``, or ``auto`` while
    the database has not said which it supports) and ``reconcileMinutes`` (None: off);
    nothing when rollups are off."""
    if consumer is None:
        return {}
    if not isinstance(consumer, RollupSource):
        return {"source": "change-stream", "reconcileMinutes": None}
    every = consumer.reconcile_every
    minutes = None if every is None else round(every.total_seconds() / 60, 3)
    return {"source": consumer.mode or consumer.setting, "reconcileMinutes": minutes}


@dataclass(frozen=True, slots=True)
class StoredStatus:
    """The rollups' progress as another process (the CLI) sees it in the database:
    ``source`` None while nothing has been built; ``watermark`` in watermark mode."""

    status: ConsumerStatus
    source: Mode | None
    watermark: datetime | None = None


async def stored_source_status(*, db: Database) -> StoredStatus:
    """``stored_status`` for the source that keeps the rollups: the change stream's
    state reads a cluster time, which a standalone server does not have."""
    state = await read_watermark_state(db=db)
    if state is None or not state.ours:  # nothing yet, the stream's, or an older layout
        found = await stored_status(db=db)
        if state is None:
            return StoredStatus(found, None)
        return StoredStatus(found, "watermark" if state.source == SOURCE else "change-stream")
    now = datetime.now(UTC)
    lease = await read_lease(db=db)
    held = lease is not None and lease.expires_at > now
    built: Phase = "ready" if state.build is None else "building"
    lag = 0.0 if state.watermark is None else max((now - state.watermark).total_seconds(), 0)
    error = None if held else "no process holds the consumer lease"
    found = ConsumerStatus(built if held else "standby", state.percent(), 0, lag, None, error)
    return StoredStatus(found, "watermark", state.watermark)


class RollupSource(RollupConsumer):
    """The rollups' consumer, by change stream or by watermark (see the module)."""

    def __init__(
        self,
        *,
        db: Database,
        source: SourceSetting = "auto",
        reconcile_every: timedelta | None = None,
        holder: str | None = None,
        options: ConsumerOptions | None = None,
        watermark_options: WatermarkOptions | None = None,
        step_pause: float = 0.05,
        transactions: bool | None = None,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        super().__init__(db=db, holder=holder, options=options, clock=clock)
        self._database = db
        self.setting: SourceSetting = source
        self.mode: Mode | None = None if source == "auto" else source
        self.reconcile_every = reconcile_every
        self.transactions = transactions
        """Whether the database has transactions (None: ask it, with the watermark)."""
        self._step_pause = step_pause
        self.watermark = WatermarkFollower(
            db=db, holder=self.holder, options=watermark_options, clock=clock
        )
        self.watermark.extra_step = self._watermark_step
        self._pass: ReconcilePass | None = None
        self._wanted: list[tuple[Sequence[ObjectId] | None, asyncio.Future[ReconcileReport]]] = []
        self._due = asyncio.Event()
        self._last_pass = 0.0
        """Loop time of the last pass's end (or of the start of ``run``)."""

    # --- the consumer's interface ----------------------------------------------------

    async def run(self) -> None:
        self._last_pass = asyncio.get_running_loop().time()
        mode = await self._resolve()
        if mode == "watermark":
            await self.watermark.run()
            return
        reconciler = asyncio.create_task(self._reconcile_beside_stream())
        try:
            await super().run()
        finally:
            reconciler.cancel()
            await asyncio.wait([reconciler])

    def status(self) -> ConsumerStatus:
        if self.mode == "watermark":
            return self.watermark.status()
        if self.mode is None:
            return ConsumerStatus(
                "stopped", 0.0, 0, 0.0, None, "asking the database whether it has change streams"
            )
        return super().status()

    def read_cache(self) -> ReadCache | None:
        return super().read_cache() if self.mode == "change-stream" else None

    async def stop(self, *, release: bool = True) -> None:
        await super().stop(release=release)
        self.watermark.stopped()
        for _, waiter in self._wanted:
            waiter.cancel()
        self._wanted.clear()

    # --- the reconcile ---------------------------------------------------------------

    async def reconcile(self, instances: Sequence[ObjectId] | None = None) -> ReconcileReport:
        """Reconcile now (every instance, or ``instances``) and say what was repaired;
        only the process that holds the lease can."""
        waiter: asyncio.Future[ReconcileReport] = asyncio.get_running_loop().create_future()
        self._wanted.append((instances, waiter))
        self._due.set()
        self.watermark.position.nudge.set()
        return await waiter

    def _next_pass(self) -> ReconcilePass | None:
        """A pass that is asked for or due, with the view of this mode."""
        now = asyncio.get_running_loop().time()
        period = self.reconcile_every
        due = period is not None and now - self._last_pass >= period.total_seconds()
        if not self._wanted and not due:
            return None
        instances = self._wanted[0][0] if self._wanted else None
        if self.mode == "watermark":
            view: WatermarkView | ChangeStreamView = WatermarkView(
                db=self._database, follower=self.watermark
            )
        else:
            view = ChangeStreamView(db=self._database, reads=self.reads)
        _log.info("rollups reconcile: started (%s)", "asked" if self._wanted else "periodic")
        return ReconcilePass(db=self._database, view=view, instances=instances)

    def _finished(self, finished: ReconcilePass) -> None:
        self._last_pass = asyncio.get_running_loop().time()
        if self._wanted:
            _, waiter = self._wanted.pop(0)
            if not waiter.done():
                waiter.set_result(finished.report)

    async def _watermark_step(self) -> bool:
        """Inside the watermark loop: one reconcile step, when a pass runs or is due."""
        if self._pass is None:
            self._pass = self._next_pass()
            if self._pass is None:
                return False
        running = self._pass
        if not await running.step():
            self._pass = None
            self._finished(running)
        return True

    async def _reconcile_beside_stream(self) -> None:
        """Beside the consumer: passes while it leads and is ready, a step at a time
        with a pause between (the embedded database runs one operation at a time)."""
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._wait_for_due()):
                    await self._due.wait()
            self._due.clear()
            if super().status().phase != "ready":  # building, or another process leads
                await asyncio.sleep(0.5)
                continue
            running = self._next_pass()
            if running is None:
                continue
            try:
                while await running.step():
                    await asyncio.sleep(self._step_pause)
            except PyMongoError as exc:
                _log.warning("rollups reconcile: stopped after a database error: %s", exc)
                running.report.aborted = str(exc)
            except Exception as exc:  # a bug must not end the consumer beside it
                _log.exception("rollups reconcile: failed")
                running.report.aborted = repr(exc)
            self._finished(running)

    def _wait_for_due(self) -> float:
        if self._wanted:
            return 0.0
        if self.reconcile_every is None:
            return 3600.0
        elapsed = asyncio.get_running_loop().time() - self._last_pass
        return max(self.reconcile_every.total_seconds() - elapsed, 0.05)

    # --- which source ----------------------------------------------------------------

    async def _resolve(self) -> Mode:
        delay = 0.5
        while self.mode is None:
            try:
                hello = await self._database.client.admin.command("hello")
            except PyMongoError as exc:
                _log.warning("rollups: cannot ask the database for its topology yet: %s", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            replicated = bool(hello.get("setName")) or hello.get("msg") == "isdbgrid"
            self.mode = "change-stream" if replicated else "watermark"
            _log.info("rollups: kept current by the %s (%s)", self.mode, self.setting)
        if self.mode == "watermark" and self.transactions is None:
            self.transactions = await self._has_transactions()
        return self.mode

    async def _has_transactions(self) -> bool:
        """A standalone ``mongod`` refuses them (SecantusDB ``--standalone`` has them)."""
        db = self._database
        try:
            async with (
                db.client.start_session(causal_consistency=False) as session,
                await session.start_transaction(),
            ):
                await db[STATE_COLLECTION].find_one({"_id": "consumer"}, session=session)
        except OperationFailure as exc:
            _log.info("rollups: no transactions (%s); rollup reads are checked instead", exc)
            return False
        return True
