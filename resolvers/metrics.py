"""Running the metrics pipeline."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.pipeline import MetricsResult, build_metrics_pipeline, empty_metrics, read_metrics

__all__ = ["fetch_metrics"]


async def fetch_metrics(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    now: datetime,
) -> MetricsResult:
    """The metrics of ``instances`` summed, in one aggregation round trip (bounded by the
    request's deadline; reported as ``Unavailable`` when it passes)."""
    if not instances:
        return empty_metrics()
    pipeline = build_metrics_pipeline(instances=instances, now=now)
    with translate_driver_errors():
        cursor = await db.messages.aggregate(pipeline)
        rows = await cursor.to_list()
    return read_metrics(rows[0] if rows else {})
