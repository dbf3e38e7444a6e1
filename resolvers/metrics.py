"""Running the full-scan aggregations: metrics, series and instance summaries.

Each costs time in proportion to the messages it reads; the rollups (``resolvers/rollups``)
answer the same questions at a bounded cost, with these as their fallback and oracle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from bson import ObjectId

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.pipeline import (
    IS_DATED,
    MetricsResult,
    build_match,
    build_metrics_pipeline,
    build_range_pipeline,
    combine_metrics,
    empty_metrics,
    read_metrics,
)
from resolvers.series import Tally, build_series_pipeline, plan_scans, read_series, to_points
from resolvers.timeranges import InstanceSummary, SeriesPoint, TimeRange

__all__ = [
    "distinct_instances",
    "fetch_metrics",
    "fetch_series",
    "fetch_summaries",
    "read_created_at",
]


async def fetch_metrics(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    now: datetime,
    range: TimeRange | None = None,
    unique: bool = True,
) -> MetricsResult:
    """The metrics of ``instances`` summed, in one aggregation round trip (bounded by the
    request's deadline; reported as ``Unavailable`` when it passes); ``unique`` False
    leaves the distinct counts at 0. With ``range``, over the messages dated in it: one
    aggregation per instance, each reading only its range on the instanceId + timestamp
    index."""
    if not instances:
        return empty_metrics()
    if range is not None:
        parts = [
            await _aggregate(
                db, build_range_pipeline(instance=ref, now=now, range=range, unique=unique)
            )
            for ref in distinct_instances(instances)
        ]
        return combine_metrics(parts)
    return await _aggregate(db, build_metrics_pipeline(instances=instances, now=now, unique=unique))


async def _aggregate(db: Database, pipeline: list[dict[str, Any]]) -> MetricsResult:
    with translate_driver_errors():
        cursor = await db.messages.aggregate(pipeline)
        rows = await cursor.to_list()
    return read_metrics(rows[0] if rows else {})


def distinct_instances(instances: Sequence[InstanceRef]) -> list[InstanceRef]:
    """Each instance once, in the order first named; its group messages are left out
    if any mention says so (as the metrics pipeline's ``$match`` does)."""
    first: dict[ObjectId, InstanceRef] = {}
    ignoring: dict[ObjectId, bool] = {}
    for ref in instances:
        first.setdefault(ref.id, ref)
        ignoring[ref.id] = ignoring.get(ref.id, False) or ref.ignore_group_messages
    return [replace(ref, ignore_group_messages=ignoring[ref.id]) for ref in first.values()]


async def fetch_series(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    bounds: Sequence[tuple[datetime, datetime]],
) -> list[SeriesPoint]:
    """The points ``bounds`` (consecutive ``series_bounds``) summed over ``instances``:
    per instance one aggregation per ``ScanPlan``, on the instanceId + timestamp index."""
    tallies = [Tally() for _ in bounds]
    for ref in distinct_instances(instances):
        await scan_series(db=db, instance=ref, bounds=bounds, into=tallies)
    return to_points(bounds, tallies)


async def scan_series(
    *,
    db: Database,
    instance: InstanceRef,
    bounds: Sequence[tuple[datetime, datetime]],
    into: Sequence[Tally],
) -> None:
    """Add the points of one instance to ``into`` (one tally per point of ``bounds``)."""
    for plan in plan_scans(bounds):
        pipeline = build_series_pipeline(instance=instance, plan=plan)
        with translate_driver_errors():
            rows = await (await db.messages.aggregate(pipeline)).to_list()
        read_series(rows[0] if rows else {}, plan=plan, into=into)


async def fetch_summaries(
    *, db: Database, instances: Sequence[InstanceRef]
) -> list[InstanceSummary]:
    """Each distinct instance's message count and last dated message (as ``metrics``
    for it alone reports them), in one aggregation, with its ``createdAt``."""
    refs = distinct_instances(instances)
    if not refs:
        return []
    counts = await _scan_counts(db=db, instances=refs)
    created = await read_created_at(db=db, instances=[ref.id for ref in refs])
    return [
        InstanceSummary(
            name=ref.name,
            ignore_group_messages=ref.ignore_group_messages,
            created_at=created.get(ref.id),
            total_messages=int(counts.get(ref.id, {}).get("n", 0)),
            last_message_at=counts.get(ref.id, {}).get("last"),
        )
        for ref in refs
    ]


async def _scan_counts(
    *, db: Database, instances: Sequence[InstanceRef]
) -> dict[ObjectId, Mapping[str, Any]]:
    match = build_match(instances=instances)
    timestamp = {"$cond": [IS_DATED, "$timestamp", None]}
    group = {"_id": "$instanceId", "n": {"$sum": 1}, "last": {"$max": timestamp}}
    with translate_driver_errors():
        cursor = await db.messages.aggregate([*match, {"$group": group}])
        return {row["_id"]: row async for row in cursor}


async def read_created_at(
    *, db: Database, instances: Sequence[ObjectId]
) -> dict[ObjectId, datetime | None]:
    """``createdAt`` of each instance document (None when missing or not a date)."""
    with translate_driver_errors():
        cursor = db.instances.find({"_id": {"$in": list(instances)}}, {"createdAt": 1})
        return {
            doc["_id"]: value if isinstance(value := doc.get("createdAt"), datetime) else None
            async for doc in cursor
        }
