"""Series: per-point counts (pure), and the full-scan aggregation that fills them.

A point's counts are a ``Tally``; the rollups and the full scan both fill tallies, so
they shape points the same way.

The full scan buckets each instance's messages server-side with no timezone logic:
every boundary inside the range is ``origin + k * width`` for some ``k``, where
``width`` is the greatest common divisor of the gaps between the boundaries (a day for
a day series without DST, an hour across DST, 30 minutes or less for a few historical
offsets), so ``$group`` on ``timestamp - origin`` rounded down to ``width`` never puts
two points in one group; Python then adds each group to the point it falls in. A plan
that would make more than ``MAX_KEYS`` groups is cut into several aggregations.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from math import gcd
from typing import Any

from resolvers.instances import InstanceRef
from resolvers.pipeline import (
    HAS_MEDIA,
    IS_GROUP,
    KNOWN_STATUSES,
    KNOWN_TYPES,
    build_range_match,
    key_expression,
    order_counts,
)
from resolvers.timeranges import SeriesPoint

__all__ = [
    "COUNTERS",
    "MAX_KEYS",
    "ScanPlan",
    "Tally",
    "build_series_pipeline",
    "plan_scans",
    "read_series",
    "to_points",
]

MAX_KEYS = 5000
"""The most groups one scan aggregation may make (its result is one document)."""

COUNTERS = ("n", "s", "r", "g", "i", "m")
"""A tally's counters: messages, sent, received, group, individual, with media."""

_MS = timedelta(milliseconds=1)


@dataclass(slots=True)
class Tally:
    """Counts of some messages: ``counters`` (``COUNTERS``), ``types``, ``statuses`` and
    ``media`` (types of media; the full scan of a series leaves them out).

    A tally is filled before any point is made of it, and keeps the last point it made
    until ``add`` changes it: a kept tally (``rollups/cache.py``) is shown by every repeated
    request of its series, which then share one point instead of making it again."""

    counters: Counter[str] = field(default_factory=Counter)
    types: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    media: Counter[str] = field(default_factory=Counter)
    _shown: SeriesPoint | None = field(default=None, init=False, repr=False, compare=False)

    def add(self, other: Tally, *, sign: int = 1) -> None:
        self._shown = None
        for mine, theirs in (
            (self.counters, other.counters),
            (self.types, other.types),
            (self.statuses, other.statuses),
            (self.media, other.media),
        ):
            for key, count in theirs.items():
                mine[key] += sign * count

    def point(self, start: datetime, end: datetime) -> SeriesPoint:
        shown = self._shown
        if shown is not None and shown.start == start and shown.end == end:
            return shown
        self._shown = shown = SeriesPoint(
            start=start,
            end=end,
            total_messages=self.counters.get("n", 0),
            messages_sent=self.counters.get("s", 0),
            messages_received=self.counters.get("r", 0),
            group_messages=self.counters.get("g", 0),
            individual_messages=self.counters.get("i", 0),
            messages_with_media=self.counters.get("m", 0),
            messages_by_type=order_counts(self.types, KNOWN_TYPES),
            messages_by_status=order_counts(self.statuses, KNOWN_STATUSES),
        )
        return shown


def to_points(
    bounds: Sequence[tuple[datetime, datetime]], tallies: Sequence[Tally]
) -> list[SeriesPoint]:
    return [tally.point(start, end) for (start, end), tally in zip(bounds, tallies, strict=True)]


# --- the full scan ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ScanPlan:
    """One aggregation: the points ``first`` to ``first + len(cuts) - 2`` of a series,
    cut at ``cuts``; groups of ``width`` milliseconds from ``origin``."""

    first: int
    cuts: tuple[datetime, ...]
    origin: datetime
    width: int

    @property
    def keys(self) -> int:
        return -(-_millis(self.cuts[-1] - self.origin) // self.width)

    def point_of(self, key: int) -> int:
        """The index (in the whole series) of the point of group ``key``."""
        moment = max(self.origin + key * _MS, self.cuts[0])  # the first group may start early
        return self.first + bisect.bisect_right(self.cuts, moment) - 1


def plan_scans(bounds: Sequence[tuple[datetime, datetime]]) -> list[ScanPlan]:
    """The aggregations that bucket the points ``bounds`` (consecutive), each making at
    most ``MAX_KEYS`` groups (a single point is always one plan)."""
    if not bounds:
        return []
    cuts = (bounds[0][0], *(end for _, end in bounds))
    return _split(0, cuts)


def _split(first: int, cuts: tuple[datetime, ...]) -> list[ScanPlan]:
    plan = _plan(first, cuts)
    if plan.keys <= MAX_KEYS or len(cuts) <= 2:
        return [plan]
    middle = len(cuts) // 2
    return _split(first, cuts[: middle + 1]) + _split(first + middle, cuts[middle:])


def _plan(first: int, cuts: tuple[datetime, ...]) -> ScanPlan:
    start, inner, end = cuts[0], cuts[1:-1], cuts[-1]
    if not inner:
        return ScanPlan(first, cuts, start, max(_millis(end - start), 1))
    anchor = inner[0]
    width = 0
    for boundary in inner[1:]:
        width = gcd(width, _millis(boundary - anchor))
    if width == 0:  # one inner boundary: two groups, before and after it
        width = max(_millis(anchor - start), _millis(end - anchor))
    before = -(-_millis(anchor - start) // width)
    return ScanPlan(first, cuts, anchor - before * width * _MS, width)


def _millis(span: timedelta) -> int:
    return span // _MS


def build_series_pipeline(*, instance: InstanceRef, plan: ScanPlan) -> list[dict[str, Any]]:
    """The messages of ``instance`` dated in the plan's span (on the instanceId +
    timestamp index; minus group messages when it ignores them), counted per group."""
    since = {"$subtract": ["$timestamp", plan.origin]}
    key = {"$subtract": [since, {"$mod": [since, plan.width]}]}
    return [
        *build_range_match(instance=instance, start=plan.cuts[0], end=plan.cuts[-1]),
        {
            "$project": {
                "_id": 0,
                "k": key,
                "isGroup": 1,
                "fromMe": 1,
                "media": 1,
                "type": 1,
                "status": 1,
            }
        },
        {
            "$facet": {
                "totals": [{"$group": _totals()}],
                "types": [
                    {"$group": {"_id": {"k": "$k", "v": key_expression("$type")}, "n": {"$sum": 1}}}
                ],
                "statuses": [
                    {
                        "$group": {
                            "_id": {"k": "$k", "v": key_expression("$status")},
                            "n": {"$sum": 1},
                        }
                    }
                ],
            }
        },
    ]


def _totals() -> dict[str, Any]:
    return {
        "_id": "$k",
        "n": {"$sum": 1},
        "s": _count_if({"$eq": ["$fromMe", True]}),
        "r": _count_if({"$eq": ["$fromMe", False]}),
        "g": _count_if(IS_GROUP),
        "i": _count_if({"$eq": ["$isGroup", False]}),
        "m": _count_if(HAS_MEDIA),
    }


def _count_if(condition: dict[str, Any]) -> dict[str, Any]:
    return {"$sum": {"$cond": [condition, 1, 0]}}


def read_series(facets: Mapping[str, Any], *, plan: ScanPlan, into: Sequence[Tally]) -> None:
    """Add the result of ``build_series_pipeline`` to the tallies of the whole series."""
    for row in facets.get("totals") or ():
        tally = into[plan.point_of(int(row["_id"]))]
        for name in COUNTERS:
            tally.counters[name] += int(row.get(name) or 0)
    for facet, attribute in (("types", "types"), ("statuses", "statuses")):
        for row in facets.get(facet) or ():
            tally = into[plan.point_of(int(row["_id"]["k"]))]
            getattr(tally, attribute)[str(row["_id"]["v"])] += int(row["n"])
