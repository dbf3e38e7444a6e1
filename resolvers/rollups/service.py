"""What the service holds of the rollups: its consumer, the exact read, and its health.

A request is answered from the rollups for every instance the consumer has built and
brought up to the request's own cluster time (``freshness.py``); the other instances
are answered by the full-scan pipeline, and the two parts are summed. Either way the
answer is exact: the scan is the fallback, never a wrong number.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from pymongo.read_concern import ReadConcern

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.metrics import (
    distinct_instances,
    fetch_metrics,
    fetch_series,
    fetch_summaries,
)
from resolvers.pipeline import MetricsResult, combine_metrics, empty_metrics
from resolvers.rollups.consumer import ConsumerStatus, RollupConsumer, stored_status
from resolvers.rollups.freshness import check_freshness, confirm
from resolvers.rollups.read import read_rollup_metrics
from resolvers.timeranges import (
    InstanceSummary,
    Interval,
    SeriesPoint,
    TimeRange,
    series_bounds,
)

__all__ = ["RollupHealth", "RollupService"]

_LEADING = ("building", "ready")


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
    before it scans instead."""

    def __init__(
        self, *, db: Database, consumer: RollupConsumer | None, wait_s: float = 0.25
    ) -> None:
        self._db = db
        self.consumer = consumer
        self._wait_s = wait_s

    def start(self) -> None:
        if self.consumer is not None:
            self.consumer.start()

    async def stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()

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
        if self.consumer is None or range is not None:
            return await fetch_metrics(
                db=self._db, instances=instances, now=now, range=range, unique=unique
            )
        usable, parts = await self._from_rollups(instances=instances, now=now)
        rest = [ref for ref in instances if ref.id not in usable]
        if rest:
            parts.append(await fetch_metrics(db=self._db, instances=rest, now=now))
        return combine_metrics(parts)

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
        return [
            await self.metrics(instances=[ref], now=now, range=range, unique=unique)
            for ref in distinct_instances(instances)
        ]

    async def series(
        self,
        *,
        instances: Sequence[InstanceRef],
        range: TimeRange,
        interval: Interval,
        timezone: str,
    ) -> list[SeriesPoint]:
        """The dense series of ``range`` in ``timezone`` (``series_bounds``), summed over
        ``instances``; its points sum to ``metrics`` over the same range."""
        bounds = series_bounds(range=range, interval=interval, timezone=timezone)
        return await fetch_series(db=self._db, instances=instances, bounds=bounds)

    async def summaries(self, *, instances: Sequence[InstanceRef]) -> list[InstanceSummary]:
        """Per distinct instance, in the order first named: its settings, ``createdAt``,
        message count and last message, as ``metrics`` for it alone reports them."""
        return await fetch_summaries(db=self._db, instances=instances)

    async def _from_rollups(
        self, *, instances: Sequence[InstanceRef], now: datetime
    ) -> tuple[frozenset[object], list[MetricsResult]]:
        with translate_driver_errors():
            freshness = await check_freshness(
                db=self._db,
                instances=[ref.id for ref in instances],
                consumer=self.consumer,
                wait=self._wait_s,
            )
        chosen = [ref for ref in instances if ref.id in freshness.usable]
        if not chosen:
            return frozenset(), []
        # One snapshot for every rollup document and the state that vouches for them:
        # no consumer commit or rebuild can fall between two of the reads.
        with translate_driver_errors():
            async with (
                self._db.client.start_session(causal_consistency=False) as session,
                await session.start_transaction(read_concern=ReadConcern("snapshot")),
            ):
                result = await read_rollup_metrics(
                    db=self._db, instances=chosen, now=now, session=session
                )
                still = await confirm(db=self._db, freshness=freshness, session=session)
        if not freshness.usable <= still:
            return frozenset(), []
        return freshness.usable, [result]

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
