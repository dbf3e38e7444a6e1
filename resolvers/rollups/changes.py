"""The summed effect of message changes on the rollups (pure, in memory).

A change of one message from ``before`` to ``after`` adds ``contribution(after)`` and
subtracts ``contribution(before)``; ``Changes`` keeps the sum, with every entry that
nets to zero dropped. So a status update touches only the status counters, a delete
cancels its insert to nothing, and a build (inserts of every document) is the same
fold as the stream.

Each change also marks the UTC days and hours whose distinct values it may change (the
message's values, flag or bucket differ between ``before`` and ``after``): those buckets
get a new values version when written, which tells a range's stored value sets
(``valuesets.py``) that they are stale. A status update marks nothing. Marks are per
change, never netted across a batch: an insert and a delete of one message in one batch
still mark its buckets, since a value set may have been computed from raw messages that
held it in between.

A build folds only insertions: ``Changes(adds_only=True)`` keeps of their timestamps just
the smallest and largest per instance and flag (all that first/last need when nothing
is removed), so a fold of a million messages does not hold a million timestamps.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from datetime import datetime
from typing import Any, TypeVar

from bson import ObjectId

from resolvers.rollups.contribution import Contribution, Flag, Kind, contribution
from resolvers.rollups.keys import Level, floor_to

__all__ = ["VALUE_LEVELS", "BucketKey", "Changes", "ValueKey", "next_extreme"]

BucketKey = tuple[ObjectId, datetime]
"""(instance, bucket start)."""
ValueKey = tuple[ObjectId, Kind, str]
"""(instance, kind, value)."""

VALUE_LEVELS = (Level.DAY, Level.HOUR)
"""The bucket levels whose distinct values are kept for ranges (``valuesets.py``)."""

_K = TypeVar("_K", bound=Hashable)
_F = TypeVar("_F", bound=Hashable)


class Changes:
    """The summed effect of message changes on the rollups (pure, in memory).

    Counter paths are relative to ``c`` and start with the flag: ``o.n``, ``g.t.text``.
    """

    __slots__ = ("_adds_only", "_buckets", "_instances", "_marks", "_times", "_values")

    def __init__(self, *, adds_only: bool = False) -> None:
        self._adds_only = adds_only
        self._instances: dict[ObjectId, dict[str, int]] = {}
        self._buckets: dict[Level, dict[BucketKey, dict[str, int]]] = {level: {} for level in Level}
        self._values: dict[ValueKey, dict[Flag, int]] = {}
        self._times: dict[tuple[ObjectId, Flag], dict[datetime, int]] = {}
        self._marks: dict[Level, set[BucketKey]] = {level: set() for level in VALUE_LEVELS}

    def add(self, *, before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> None:
        """One message went from ``before`` to ``after`` (None = absent)."""
        removed = contribution(before)
        if removed is not None and self._adds_only:
            raise ValueError("these changes only add messages")
        added = contribution(after)
        self._add(removed, sign=-1)
        self._add(added, sign=1)
        for level in VALUE_LEVELS:
            old, new = _value_state(removed, level), _value_state(added, level)
            if old != new:
                self._marks[level].update(state[0] for state in (old, new) if state is not None)

    @property
    def adds_only(self) -> bool:
        return self._adds_only

    def is_empty(self) -> bool:
        tables = (*self._buckets.values(), *self._marks.values())
        return not (self._instances or self._values or self._times or any(tables))

    def __len__(self) -> int:
        """Entries held (instances, buckets, values, timestamps): what a write costs."""
        buckets = sum(len(table) for table in self._buckets.values())
        times = sum(len(table) for table in self._times.values())
        # a mark on a bucket whose counters change rides in the same update
        marks = sum(len(keys - self._buckets[level].keys()) for level, keys in self._marks.items())
        return len(self._instances) + buckets + len(self._values) + times + marks

    @property
    def instances(self) -> frozenset[ObjectId]:
        """The instances whose counts or values change (marks alone change neither)."""
        touched = set(self._instances)
        touched.update(instance for instance, _ in self._times)
        touched.update(instance for instance, _, _ in self._values)
        for buckets in self._buckets.values():
            touched.update(instance for instance, _ in buckets)
        return frozenset(touched)

    def instance_counters(self) -> Mapping[ObjectId, Mapping[str, int]]:
        """All-time counter deltas per instance (undated messages included)."""
        return self._instances

    def bucket_counters(self, level: Level) -> Mapping[BucketKey, Mapping[str, int]]:
        """Counter deltas per bucket of ``level`` (dated messages only)."""
        return self._buckets[level]

    def value_marks(self, level: Level) -> frozenset[BucketKey]:
        """The buckets of ``level`` whose distinct values may have changed (none for
        levels outside ``VALUE_LEVELS``)."""
        return frozenset(self._marks.get(level, ()))

    def value_counts(self) -> Mapping[ValueKey, Mapping[Flag, int]]:
        """Message-count deltas per distinct value and flag."""
        return self._values

    def timestamps(self) -> Mapping[tuple[ObjectId, Flag], Mapping[datetime, int]]:
        """Net number of dated messages added (> 0) or removed (< 0) per timestamp (with
        ``adds_only``: the smallest and largest timestamp added)."""
        return self._times

    def split(self, limit: int) -> list[Changes]:
        """These changes in parts of at most ``limit`` entries (a key's timestamps stay
        together), whose writes add up to the writes of the whole in any order."""
        parts: list[Changes] = []
        part, held = Changes(adds_only=self._adds_only), 0

        def room(needed: int) -> Changes:
            nonlocal part, held
            if held and held + needed > limit:
                parts.append(part)
                part, held = Changes(adds_only=self._adds_only), 0
            held += needed
            return part

        for instance, counters in self._instances.items():
            room(1)._instances[instance] = counters
        for level, buckets in self._buckets.items():
            marks = self._marks.get(level, set())
            for key, counters in buckets.items():
                target = room(1)
                target._buckets[level][key] = counters
                if key in marks:  # with its counters: a mark alone never makes a bucket
                    target._marks[level].add(key)
        for level, keys in self._marks.items():
            for key in keys - self._buckets[level].keys():
                room(1)._marks[level].add(key)
        for value, flags in self._values.items():
            room(1)._values[value] = flags
        for owner, times in self._times.items():
            room(len(times))._times[owner] = times
        return [*parts, part] if held else parts

    def __eq__(self, other: object) -> bool:
        """The same net effect on counts and values (marks are not netted, so not compared)."""
        if not isinstance(other, Changes):
            return NotImplemented
        return (
            self._instances == other._instances
            and self._buckets == other._buckets
            and self._values == other._values
            and self._times == other._times
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Changes(instances={self._instances!r}, buckets={self._buckets!r}, "
            f"values={self._values!r}, times={self._times!r}, marks={self._marks!r})"
        )

    def _add(self, part: Contribution | None, *, sign: int) -> None:
        if part is None:
            return
        paths = [f"{part.flag}.{name}" for name in part.counters]
        _bump(self._instances, part.instance, paths, sign)
        if part.timestamp is not None:
            for level in Level:
                start = floor_to(part.timestamp, level)
                _bump(self._buckets[level], (part.instance, start), paths, sign)
            if self._adds_only:
                _widen(self._times, (part.instance, part.flag), part.timestamp)
            else:
                _bump(self._times, (part.instance, part.flag), [part.timestamp], sign)
        for kind, value in part.values:
            _bump(self._values, (part.instance, kind, value), [part.flag], sign)


def _value_state(
    part: Contribution | None, level: Level
) -> tuple[BucketKey, Flag, frozenset[tuple[Kind, str]]] | None:
    """Where a message's distinct values count in buckets of ``level`` (None: nowhere)."""
    if part is None or part.timestamp is None or not part.values:
        return None
    return (part.instance, floor_to(part.timestamp, level)), part.flag, part.values


def _bump(table: dict[_K, dict[_F, int]], key: _K, fields: list[_F], sign: int) -> None:
    """Add ``sign`` to each of ``fields`` of ``table[key]``, dropping what nets to zero."""
    entry = table.setdefault(key, {})
    for field in fields:
        total = entry.get(field, 0) + sign
        if total:
            entry[field] = total
        else:
            del entry[field]
    if not entry:
        del table[key]


def _widen(
    table: dict[tuple[ObjectId, Flag], dict[datetime, int]],
    key: tuple[ObjectId, Flag],
    moment: datetime,
) -> None:
    """Keep only the smallest and largest timestamp added under ``key``."""
    times = table.get(key)
    if not times:
        table[key] = {moment: 1}
    elif moment < min(times) or moment > max(times):
        low, high = min(min(times), moment), max(max(times), moment)
        table[key] = {low: 1, high: 1}


def next_extreme(
    *, stored: datetime | None, times: Mapping[datetime, int], lowest: bool
) -> tuple[bool, datetime | None]:
    """The smallest (``lowest``) or largest timestamp after net changes ``times``, from the
    ``stored`` one alone: ``(True, value)``; ``(False, None)`` when a removed timestamp
    may have been the extreme, so it must be looked up again (drill down)."""
    pick = min if lowest else max
    added = [moment for moment, net in times.items() if net > 0]
    removed = [moment for moment, net in times.items() if net < 0]
    best = pick([moment for moment in (stored, *added) if moment is not None], default=None)
    if not removed:
        return True, best
    if stored is None or best is None:
        return False, None
    gone = pick(removed)
    safe = gone > best if lowest else gone < best
    return (True, best) if safe else (False, None)
