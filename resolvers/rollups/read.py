"""Metrics from the rollups: the same ``MetricsResult`` as the full-scan pipeline.

A request reads the instance documents (one query), then per instance what the 7- and
30-day windows need, each read only when the bucket above says it holds messages: the
UTC months from the cutoff's month on (their days' counts), the cutoff's day (its hours'
counts), the cutoff's hour (its quarters' counts), and a raw count of the messages
between the cutoff and the nearer end of its quarter (at most 7.5 minutes, on the
instanceId + timestamp index). At most four small queries per instance, whatever its
history. ``ignoreGroupMessages`` is applied here, by reading flag ``o`` only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId
from pymongo.asynchronous.client_session import AsyncClientSession

from resolvers.db import Database, translate_driver_errors
from resolvers.instances import InstanceRef
from resolvers.pipeline import MetricsResult, empty_metrics, read_metrics
from resolvers.rollups.cache import kept, kept_each
from resolvers.rollups.contribution import FLAGS, Flag, flag_of
from resolvers.rollups.keys import Level, decode_key, floor_to, part_index, truncate_to_millis
from resolvers.rollups.store import BUCKETS, instance_docs, read_raw_kept

__all__ = [
    "WINDOWS",
    "Window",
    "count_since",
    "months_since",
    "read_parts",
    "read_rollup_metrics",
    "window",
]

WINDOWS = {"messagesLast7Days": timedelta(days=7), "messagesLast30Days": timedelta(days=30)}

_TOTALS = {
    "totalMessages": "n",
    "messagesSent": "s",
    "messagesReceived": "r",
    "individualMessages": "i",
    "messagesWithMedia": "m",
}
_MAPS = {"byType": "t", "mediaByType": "mt", "byStatus": "st"}
_UNIQUE = {"uniqueChats": "chat", "uniqueGroups": "group", "uniqueContacts": "contact"}
_FIELDS = {"_id": 0, "t": 1, "c.o.n": 1, "c.g.n": 1, "n": 1}


async def read_rollup_metrics(
    *,
    db: Database,
    instances: Sequence[InstanceRef],
    now: datetime,
    session: AsyncClientSession | None = None,
) -> MetricsResult:
    """The metrics of ``instances`` summed, as ``fetch_metrics`` computes them, from the
    rollups (which the caller has found current and built for these instances); give a
    ``session`` in a transaction to read them all from one snapshot."""
    ignoring = _ignoring(instances)
    if not ignoring:
        return empty_metrics()
    plans = {name: window(now - span) for name, span in WINDOWS.items()}
    with translate_driver_errors():
        docs = await instance_docs(db=db, ids=list(ignoring), session=session)
        recent = {
            instance: await _recent(db=db, instance=instance, plans=plans, session=session)
            for instance in ignoring
        }
    parts = [
        _Part(docs.get(instance, {}), _flags(ignore), recent[instance])
        for instance, ignore in ignoring.items()
    ]
    return read_metrics(_facets(parts))


def _ignoring(instances: Sequence[InstanceRef]) -> dict[ObjectId, bool]:
    """Each distinct instance once; its group messages are left out if any ref says so
    (as the pipeline's ``$match`` does)."""
    ignoring: dict[ObjectId, bool] = {}
    for ref in instances:
        ignoring[ref.id] = ignoring.get(ref.id, False) or ref.ignore_group_messages
    return ignoring


def _flags(ignore: bool) -> tuple[Flag, ...]:
    return ("o",) if ignore else FLAGS


# --- the windows --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Where the messages at or after ``cutoff`` are: the months after its ``month``,
    the days of that month after its ``day``, the hours of that day after its ``hour``,
    the quarters of that hour after its ``quarter``, and part of that quarter: ``raw``
    (``[cutoff, end)`` when ``raw_after``, else ``[start, cutoff)``, whichever is
    shorter; None when the cutoff starts the quarter)."""

    cutoff: datetime
    month: datetime
    day: datetime
    hour: datetime
    quarter: datetime
    raw: tuple[datetime, datetime] | None
    raw_after: bool


def window(cutoff: datetime) -> Window:
    moment = truncate_to_millis(cutoff)
    quarter = floor_to(moment, Level.QUARTER)
    end = quarter + Level.QUARTER.width
    raw_after = end - moment <= moment - quarter
    return Window(
        cutoff=moment,
        month=floor_to(moment, Level.MONTH),
        day=floor_to(moment, Level.DAY),
        hour=floor_to(moment, Level.HOUR),
        quarter=quarter,
        raw=None if moment == quarter else ((moment, end) if raw_after else (quarter, moment)),
        raw_after=raw_after,
    )


def count_since(
    plan: Window,
    *,
    months: Mapping[datetime, Mapping[str, Any]],
    day: Mapping[str, Any] | None,
    hour: Mapping[str, Any] | None,
    raw: int,
    flag: Flag,
) -> int:
    """Messages of ``flag`` at or after the cutoff, from the month buckets from
    ``plan.month`` on, the bucket of ``plan.day`` and of ``plan.hour`` (None = not read:
    no messages there) and the raw count of ``plan.raw``."""
    total = sum(_n(doc, flag) for start, doc in months.items() if start > plan.month)
    for bucket, level, start in (
        (months.get(plan.month), Level.MONTH, plan.day),
        (day, Level.DAY, plan.hour),
        (hour, Level.HOUR, plan.quarter),
    ):
        index = part_index(start, level)
        total += sum(_part_n(bucket, later, flag) for later in range(index + 1, 31))
        if start == plan.cutoff:
            return total + _part_n(bucket, index, flag)
    in_quarter = _part_n(hour, part_index(plan.quarter, Level.HOUR), flag)
    return total + (raw if plan.raw_after else in_quarter - raw)


def _n(doc: Mapping[str, Any] | None, flag: Flag) -> int:
    return int(_get(doc or {}, f"c.{flag}.n") or 0)


def _part_n(doc: Mapping[str, Any] | None, index: int, flag: Flag) -> int:
    return int(_get(doc or {}, f"n.{index}.{flag}") or 0)


def _has_part(doc: Mapping[str, Any] | None, start: datetime, level: Level) -> bool:
    index = part_index(start, level)
    return any(_part_n(doc, index, flag) for flag in FLAGS)


async def _recent(
    *,
    db: Database,
    instance: ObjectId,
    plans: Mapping[str, Window],
    session: AsyncClientSession | None,
) -> dict[str, Counter[Flag]]:
    """Messages per flag in each window; each finer bucket read only when needed."""
    first = min(plan.month for plan in plans.values())
    months = await months_since(db=db, instance=instance, first=first, session=session)
    wanted = {p.day for p in plans.values() if _needs(p, p.day, months.get(p.month), Level.MONTH)}
    days = await read_parts(
        db=db, instance=instance, level=Level.DAY, starts=wanted, session=session
    )
    wanted = {p.hour for p in plans.values() if _needs(p, p.hour, days.get(p.day), Level.DAY)}
    hours = await read_parts(
        db=db, instance=instance, level=Level.HOUR, starts=wanted, session=session
    )
    counts: dict[str, Counter[Flag]] = {}
    for name, plan in plans.items():
        hour = hours.get(plan.hour)
        raw = await _raw_counts(db=db, instance=instance, plan=plan, hour=hour, session=session)
        counts[name] = Counter(
            {
                flag: count_since(
                    plan,
                    months=months,
                    day=days.get(plan.day),
                    hour=hour,
                    raw=raw[flag],
                    flag=flag,
                )
                for flag in FLAGS
            }
        )
    return counts


def _needs(plan: Window, start: datetime, parent: Mapping[str, Any] | None, level: Level) -> bool:
    """Whether the day or hour at ``start`` must be read: the cutoff is inside it, not
    at its start, and its ``parent`` bucket (of ``level``) counts messages in it."""
    return plan.cutoff != start and _has_part(parent, start, level)


async def months_since(
    *, db: Database, instance: ObjectId, first: datetime, session: AsyncClientSession | None
) -> dict[datetime, Mapping[str, Any]]:
    """The month buckets of ``instance`` from ``first`` on, by start: their message
    counts and their days' (``_FIELDS``)."""
    return await kept(
        ("months since", instance, first),
        lambda: _buckets(db, {"i": instance, "l": "m", "t": {"$gte": first}}, session),
    )


async def read_parts(
    *,
    db: Database,
    instance: ObjectId,
    level: Level,
    starts: Collection[datetime],
    session: AsyncClientSession | None,
) -> dict[datetime, Mapping[str, Any]]:
    """The buckets of ``level`` at ``starts`` that exist, by start: their message counts
    and their finer buckets' (``_FIELDS``)."""
    if not starts:
        return {}

    async def load(missing: list[datetime]) -> dict[datetime, Mapping[str, Any]]:
        query = {"i": instance, "l": level.value, "t": {"$in": sorted(missing)}}
        return await _buckets(db, query, session)

    return await kept_each(starts, lambda start: ("parts", instance, level.value, start), load)


async def _raw_counts(
    *,
    db: Database,
    instance: ObjectId,
    plan: Window,
    hour: Mapping[str, Any] | None,
    session: AsyncClientSession | None,
) -> Counter[Flag]:
    """Raw messages per flag in ``plan.raw``; none read when the quarter has none."""
    if plan.raw is None or not _has_part(hour, plan.quarter, Level.HOUR):
        return Counter()
    low, high = plan.raw
    edge = await read_raw_kept(db=db, instance=instance, start=low, end=high, session=session)
    return Counter(flag_of(doc) for doc in edge)


async def _buckets(
    db: Database, query: Mapping[str, Any], session: AsyncClientSession | None
) -> dict[datetime, Mapping[str, Any]]:
    cursor = db[BUCKETS].find(dict(query), _FIELDS, session=session)
    return {doc["t"]: doc async for doc in cursor}


# --- summing instances --------------------------------------------------------------


class _Part:
    """One instance's rollup document, read with the flags its setting allows."""

    def __init__(
        self, doc: Mapping[str, Any], flags: tuple[Flag, ...], recent: Mapping[str, Counter[Flag]]
    ) -> None:
        self.doc, self.flags, self.recent = doc, flags, recent

    def counter(self, path: str) -> int:
        return sum(int(_get(self.doc, f"c.{flag}.{path}") or 0) for flag in self.flags)

    def keys(self, prefix: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for flag in self.flags:
            for field, count in (_get(self.doc, f"c.{flag}.{prefix}") or {}).items():
                found[decode_key(field)] += int(count)
        return found

    def unique(self, kind: str) -> int:
        which = "o" if self.flags == ("o",) else "a"
        return int(_get(self.doc, f"u.{kind}.{which}") or 0)

    def extremes(self, name: str) -> list[datetime]:
        return [moment for flag in self.flags if (moment := _get(self.doc, f"{name}.{flag}"))]


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _facets(parts: Sequence[_Part]) -> dict[str, Any]:
    """The pipeline's ``$facet`` result, so ``read_metrics`` shapes both the same way."""
    totals: dict[str, Any] = {
        name: sum(part.counter(path) for part in parts) for name, path in _TOTALS.items()
    }
    totals["groupMessages"] = sum(
        int(_get(part.doc, "c.g.n") or 0) for part in parts if "g" in part.flags
    )
    for name in WINDOWS:
        totals[name] = sum(part.recent[name][flag] for part in parts for flag in part.flags)
    firsts = [moment for part in parts for moment in part.extremes("first")]
    lasts = [moment for part in parts for moment in part.extremes("last")]
    totals["firstMessageAt"] = min(firsts, default=None)
    totals["lastMessageAt"] = max(lasts, default=None)
    facets: dict[str, Any] = {"totals": [totals]}
    for name, prefix in _MAPS.items():
        summed: Counter[str] = Counter()
        for part in parts:
            summed.update(part.keys(prefix))  # update, not +: a wrong negative must show
        facets[name] = [{"_id": key, "count": n} for key, n in summed.items() if n]
    for name, kind in _UNIQUE.items():
        facets[name] = [{"n": sum(part.unique(kind) for part in parts)}]
    return facets
