"""Work kept by the identity of objects that never change once made.

A series read from kept rollups answers with the very point objects it answered with
the last time (``resolvers.series.Tally.point`` keeps a point until its tally changes).
What the API makes of such a point is then the same as the last time too: its GraphQL
object (``SeriesPoint.from_point``) and that object's completed answer
(``graph.execution``). An hourly series of a week is 169 points and ~2,900 ``KeyCount``
objects: making and completing them again took ~4 ms of a ~15 ms request on the 1M
benchmark instance (an hourly week 15.0-15.4 -> 11.0 ms, a daily quarter 11.6-11.9 ->
9.4 ms, in adjacent runs).

``ByIdentity`` keeps such results by the identity of the object they were made from. It
holds the object with its result, so the object's id cannot be reused by another one
while the entry lives, and drops the least recently used entries past its limit. Only
objects that are never changed once made may be kept this way: a changed object would
be answered as it was.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Hashable
from typing import Generic, TypeVar

__all__ = ["ByIdentity", "is_unchanging", "unchanging"]

_V = TypeVar("_V")
_C = TypeVar("_C", bound=type)

_UNCHANGING: set[type] = set()


def unchanging(cls: _C) -> _C:
    """Mark a class (a Strawberry type) whose objects never change once made, nor
    anything they hold: the executor may answer an object it answered before with what
    it completed it to then (``graph.execution``)."""
    _UNCHANGING.add(cls)
    return cls


def is_unchanging(cls: object) -> bool:
    return cls in _UNCHANGING


class ByIdentity(Generic[_V]):
    """Results by (``tag``, the identity of the object they were made from); ``tag`` tells
    apart results of one object made different ways."""

    def __init__(self, *, limit: int) -> None:
        self._limit = limit
        self._entries: OrderedDict[tuple[Hashable, int], tuple[object, _V]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, source: object, tag: Hashable = None) -> _V | None:
        """The result kept for ``source`` (this very object), or None."""
        key = (tag, id(source))
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry[1]

    def put(self, source: object, value: _V, tag: Hashable = None) -> None:
        """Keep ``value`` for ``source`` (and ``source`` with it)."""
        key = (tag, id(source))
        self._entries[key] = (source, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._limit:
            self._entries.popitem(last=False)
