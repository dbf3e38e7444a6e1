"""What the service holds of the rollups: its consumer, the exact read, and its health.

A request is answered from the rollups for every instance the consumer has built and
brought up to the request's own cluster time (``freshness.py``); the other instances
are answered by the full-scan pipeline, and the two parts are summed. Either way the
answer is exact: the scan is the fallback, never a wrong number. Metrics (with or
without a time range), metrics per instance, series and instance summaries all read
their rollup documents in one snapshot with the state that vouches for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Generic, TypeVar

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession as Session

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.metrics import (
    distinct_instances,
    fetch_metrics,
    fetch_summaries,
    read_created_at,
    scan_series,
)
from resolvers.pipeline import MetricsResult, combine_metrics, empty_metrics
from resolvers.rollups.cache import KEPT_ONLY, CacheView, NotKept, reading
from resolvers.rollups.consumer import ConsumerStatus, RollupConsumer, stored_status
from resolvers.rollups.contribution import FLAGS
from resolvers.rollups.freshness import (
    Freshness,
    check_freshness,
    confirm,
    confirm_state,
    snapshot_reads,
)
from resolvers.rollups.keys import Level
from resolvers.rollups.ranges import (
    SERIES_TOPS,
    read_instance_counts,
    read_range_metrics,
    read_series_tallies,
)
from resolvers.rollups.read import read_rollup_metrics
from resolvers.rollups.valuesets import keep_day, range_values
from resolvers.rollups.warm import WarmOptions, warm_pass
from resolvers.series import Tally, to_points
from resolvers.timeranges import (
    InstanceSummary,
    Interval,
    SeriesPoint,
    TimeRange,
)

__all__ = ["RollupHealth", "RollupService"]

_LEADING = ("building", "ready")
_WARM_RETRY_S = 5.0
_log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class _Kept(Generic[_T]):
    """What a read from kept documents alone returned."""

    value: _T


@dataclass(frozen=True, slots=True)
class RollupHealth:
    """``state``: ready, building, standby (no process holds the consumer's lease),
    stopped, failed, or off (rollups disabled: every request scans); ``leader``: this
    process applies the change stream (else another one does, seen through the database)."""

    state: str
    percent: float
    behind: int
    lag_seconds: float
    leader: bool = False
    error: str | None = None

    def as_dict(self) -> dict[str, object]:
        body: dict[str, object] = {
            "state": self.state,
            "percent": round(self.percent, 1),
            "behind": self.behind,
            "lagSeconds": round(self.lag_seconds, 3),
            "leader": self.leader,
        }
        if self.error:
            body["error"] = self.error
        return body


class RollupService:
    """``consumer`` None = rollups off: every request is answered by the full scan;
    ``wait_s``: how long a request waits for the consumer to reach its cluster time
    before it scans instead; ``warm``: recent days whose value sets the lease holder
    reads ahead (``warm.py``; None: none)."""

    def __init__(
        self,
        *,
        db: Database,
        consumer: RollupConsumer | None,
        wait_s: float = 0.25,
        warm: WarmOptions | None = None,
    ) -> None:
        self._db = db
        self.consumer = consumer
        self._wait_s = wait_s
        self._warm = warm
        self._warming: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self.consumer is not None:
            self.consumer.start()
            if self._warm is not None and self._warm.days > 0:
                self._warming = asyncio.create_task(self._keep_warm(self._warm))

    async def stop(self) -> None:
        if self._warming is not None:
            self._warming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._warming
            self._warming = None
        if self.consumer is not None:
            await self.consumer.stop()

    async def warm(self, *, now: datetime, options: WarmOptions) -> int:
        """One pass of reading recent days' and today's hours' value sets ahead
        (``warm.py``): the number of days and hours read. Only while this process leads a
        consumer that is ready."""
        return await warm_pass(
            db=self._db, now=now, options=options, read=self._read_ahead, leading=self._ready
        )

    def _ready(self) -> bool:
        return self.consumer is not None and self.consumer.status().phase == "ready"

    async def _read_ahead(self, instance: ObjectId, level: Level, start: datetime) -> bool:
        """Keep the value sets of a whole day (and its hours) or of one hour, in a snapshot
        the state vouches for; False when it does not."""
        ref = InstanceRef(id=instance, name=str(instance), ignore_group_messages=False)
        now = datetime.now(UTC)

        async def read(db: Database, chosen: list[InstanceRef], session: Session | None) -> None:
            if level is Level.DAY:
                await keep_day(db=db, instance=instance, day=start, now=now, session=session)
                return
            end = start + level.width
            await range_values(
                db=db,
                instance=instance,
                flags=FLAGS,
                start=start,
                end=end,
                now=now,
                session=session,
            )

        usable, _ = await self._snapshot([ref], read)
        return instance in usable

    async def _keep_warm(self, options: WarmOptions) -> None:
        """A pass soon after the rollups are ready, then every ``options.every`` seconds;
        a failed pass is logged and tried again at the next."""
        while True:
            if not self._ready():
                await asyncio.sleep(_WARM_RETRY_S)
                continue
            try:
                await self.warm(now=datetime.now(UTC), options=options)
            except Exception:  # the next pass tries again; the service goes on
                _log.warning("rollups: reading recent days ahead failed", exc_info=True)
            await asyncio.sleep(options.every)

    async def metrics(
        self,
        *,
        instances: Sequence[InstanceRef],
        now: datetime,
        range: TimeRange | None = None,
        unique: bool = True,
    ) -> MetricsResult:
        """The metrics of ``instances`` summed: rollups where they are current, the full
        scan for the rest. ``range``: only messages dated in it; ``unique`` False skips
        the distinct counts (they read 0), which cost a raw read within a range."""
        if not instances:
            return empty_metrics()
        if range is not None:
            found = await self.metrics_by_instance(
                instances=instances, now=now, range=range, unique=unique
            )
            return combine_metrics(found)
        usable, result = await self._snapshot(
            instances,
            lambda db, chosen, session: read_rollup_metrics(
                db=db, instances=chosen, now=now, session=session
            ),
        )
        parts = [] if result is None else [result]
        rest = [ref for ref in instances if ref.id not in usable]
        if rest:
            parts.append(await fetch_metrics(db=self._db, instances=rest, now=now, unique=unique))
        return combine_metrics(parts) if parts else empty_metrics()

    async def metrics_by_instance(
        self,
        *,
        instances: Sequence[InstanceRef],
        now: datetime,
        range: TimeRange | None = None,
        unique: bool = True,
    ) -> list[MetricsResult]:
        """One ``MetricsResult`` per distinct instance, in the order first named; they
        sum to ``metrics`` for the same arguments."""
        refs = distinct_instances(instances)

        async def read(
            db: Database, chosen: list[InstanceRef], session: Session | None
        ) -> dict[ObjectId, MetricsResult]:
            if range is not None:
                return await read_range_metrics(
                    db=db,
                    instances=chosen,
                    now=now,
                    range=range,
                    unique=unique,
                    session=session,
                )
            return {
                ref.id: await read_rollup_metrics(db=db, instances=[ref], now=now, session=session)
                for ref in chosen
            }

        _, found = await self._snapshot(refs, read)
        results = dict(found or {})
        for ref in refs:
            if ref.id not in results:
                results[ref.id] = await fetch_metrics(
                    db=self._db, instances=[ref], now=now, range=range, unique=unique
                )
        return [results[ref.id] for ref in refs]

    async def series(
        self,
        *,
        instances: Sequence[InstanceRef],
        interval: Interval,
        bounds: Sequence[tuple[datetime, datetime]],
    ) -> list[SeriesPoint]:
        """The dense series whose points are ``bounds`` (``series_bounds`` of a range, an
        ``interval`` and a timezone, which the caller has already worked out to check
        them), summed over ``instances``; its points sum to ``metrics`` over the range."""
        if not bounds or not instances:
            return to_points(bounds, [Tally() for _ in bounds])
        cuts = [bounds[0][0], *(end for _, end in bounds)]
        refs = distinct_instances(instances)
        _, found = await self._snapshot(
            refs,
            lambda db, chosen, session: read_series_tallies(
                db=db,
                instances=chosen,
                cuts=cuts,
                tops=SERIES_TOPS[interval],
                session=session,
            ),
        )
        only = (found or {}).get(refs[0].id) if len(refs) == 1 else None
        if only is not None:  # read, never changed: kept tallies may be among them
            return to_points(bounds, only)
        tallies = [Tally() for _ in bounds]
        for ref in refs:
            parts = (found or {}).get(ref.id)
            if parts is None:
                await scan_series(db=self._db, instance=ref, bounds=bounds, into=tallies)
                continue
            for tally, part in zip(tallies, parts, strict=True):
                tally.add(part)
        return to_points(bounds, tallies)

    async def summaries(self, *, instances: Sequence[InstanceRef]) -> list[InstanceSummary]:
        """Per distinct instance, in the order first named: its settings, ``createdAt``,
        message count and last message, as ``metrics`` for it alone reports them."""
        refs = distinct_instances(instances)
        usable, found = await self._snapshot(
            refs,
            lambda db, chosen, session: read_instance_counts(
                db=db, instances=chosen, session=session
            ),
        )
        rest = [ref for ref in refs if ref.id not in usable]
        scanned = await fetch_summaries(db=self._db, instances=rest) if rest else []
        by_id = {ref.id: summary for ref, summary in zip(rest, scanned, strict=True)}
        created = await read_created_at(db=self._db, instances=[ref.id for ref in refs])
        for ref in refs:
            counts = (found or {}).get(ref.id)
            if ref.id not in by_id and counts is not None:
                by_id[ref.id] = InstanceSummary(
                    name=ref.name,
                    ignore_group_messages=ref.ignore_group_messages,
                    created_at=created.get(ref.id),
                    total_messages=counts.total_messages,
                    last_message_at=counts.last_message_at,
                )
        return [by_id[ref.id] for ref in refs]

    async def _snapshot(
        self,
        instances: Sequence[InstanceRef],
        read: Callable[[Database, list[InstanceRef], Session | None], Awaitable[_T]],
    ) -> tuple[frozenset[ObjectId], _T | None]:
        """``read`` of the instances the rollups may answer (current for the request's
        cluster time, ``freshness.py``), with the ids it answered for; nothing when the
        rollups are off, none is current, or a rebuild began meanwhile."""
        if self.consumer is None or not instances:
            return frozenset(), None
        with translate_driver_errors():
            freshness = await check_freshness(
                db=self._db,
                instances=[ref.id for ref in instances],
                consumer=self.consumer,
                wait=self._wait_s,
            )
        chosen = [ref for ref in instances if ref.id in freshness.usable]
        if not chosen:
            return frozenset(), None
        cache = self.consumer.read_cache()
        mark = None if cache is None else cache.mark()
        kept = await self._from_memory(freshness, mark, partial(read, KEPT_ONLY, chosen, None))
        if kept is not None:
            return freshness.usable, kept.value
        # One snapshot for every rollup document and the state that vouches for them:
        # no consumer commit or rebuild can fall between two of the reads. In a snapshot
        # the state is checked first, so a read that keeps value sets (valuesets.py) keeps
        # only what a finished build vouches for; without one, after the reads.
        with translate_driver_errors():
            async with (
                self._db.client.start_session(causal_consistency=False) as session,
                await snapshot_reads(session, freshness),  # none without transactions
            ):
                if freshness.snapshot:
                    still, view = await self._confirm(freshness, session, mark)
                    if not freshness.usable <= still:
                        return frozenset(), None
                    with reading(view):
                        return freshness.usable, await read(self._db, chosen, session)
                result = await read(self._db, chosen, session)
                still = await confirm(db=self._db, freshness=freshness, session=session)
        if not freshness.usable <= still:
            return frozenset(), None
        return freshness.usable, result

    async def _confirm(
        self, freshness: Freshness, session: Session, mark: int | None
    ) -> tuple[frozenset[ObjectId], CacheView | None]:
        """``confirm`` in the snapshot (its first read), and the kept reads the request
        may use: while this process leads, the state is the one its consumer last wrote,
        and no write of it began since ``mark`` (``cache.py``)."""
        assert self.consumer is not None
        still, state = await confirm_state(db=self._db, freshness=freshness, session=session)
        cache = self.consumer.read_cache()
        if cache is None or state is None or state.status != "ready":
            return still, None
        return still, (cache.view(mark) if state.holder == self.consumer.holder else None)

    async def _from_memory(
        self, freshness: Freshness, mark: int | None, read: Callable[[], Awaitable[_T]]
    ) -> _Kept[_T] | None:
        """``read`` from the kept reads alone, without a snapshot; None when it needed
        the database (or may not use the kept reads).

        Kept documents may stand for a snapshot when the state read at the request's
        cluster time T named this process as holder of ready rollups, and no write of
        it began since ``mark`` (taken after the consumer applied everything up to T):
        they are then the rollups as this process last committed them, which hold
        every write up to T, and were each read in a snapshot that vouched for them (a
        holder taking over since writes only what came after, from where this process
        stopped). Reads that needed the database are done again in a snapshot."""
        assert self.consumer is not None
        state, cache = freshness.state, self.consumer.read_cache()
        if cache is None or state is None or state.status != "ready":
            return None
        view = cache.view(mark) if state.holder == self.consumer.holder else None
        if view is None:
            return None
        try:
            with reading(view):
                return _Kept(await read())
        except NotKept:
            return None

    async def health(self) -> RollupHealth:
        if self.consumer is None:
            return RollupHealth("off", 0.0, 0, 0.0)
        status = self.consumer.status()
        leader = status.phase in _LEADING
        if not leader:
            with translate_driver_errors():
                status = await stored_status(db=self._db)
        return _health(status, leader=leader)


def _health(status: ConsumerStatus, *, leader: bool) -> RollupHealth:
    return RollupHealth(
        state=status.phase,
        percent=status.percent,
        behind=status.behind,
        lag_seconds=status.lag_seconds,
        leader=leader,
        error=status.error,
    )
