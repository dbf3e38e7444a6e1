"""What the process applying the change stream keeps of the rollups it has read.

That process (the lease holder) is the only one that writes the rollups, so it knows
when they change: each of its writes to them goes through ``ReadCache.writing``, which
forgets what was kept of the instances it writes (of all, for a build, a rebuild or a
repair) and starts a new *epoch*. A request takes the epoch before its snapshot's first
read (``mark``) and, if no write to everything has begun by the time that read is done
(``view``), uses what was kept of an instance, and keeps what it reads of it, as long as
no write to that instance began since its mark: its snapshot holds the same documents of
that instance. So a kept document is the one the request's own snapshot would have
returned, and an answer is the same with or without the cache; once a write to an
instance begins, the rest of the request reads that instance from the database. Every
entry names its instance (``Key``); each instance's messages count for it alone, so a
busy instance's writes leave what was kept of the quiet ones.

Raw messages of a quarter hour (the 7- and 30-day edges, a range's ends) are kept too.
The gateway writes them, not this process, but every write reaches the rollups through
a commit of this process, which forgets them, before a request that must see the write
(it was acknowledged before the request began) stops waiting for the consumer
(``freshness.py``) and takes its mark. That commit names the instances of the messages'
pre- and post-images, even when their counts do not change (a timestamp moved within a
quarter).

Some reads name the version of what they hold: the distinct values of whole days and
hours are keyed by their buckets' values versions (``vv``, ``valuesets.py``), which every
write that may change them replaces. Those are *lasting* entries, kept across epochs
(writes elsewhere leave them true) up to ``lasting_values`` values in all.

Only the lease holder, while its rollups are ready, in change-stream mode, keeps
anything: other processes, a build, and the watermark read the database every time.
``CacheView`` is handed to the reads through a context variable (``reading``), so the
readers' signatures stay those of a plain database read.

A request whose reads are all kept needs no snapshot at all: it first reads with
``KEPT_ONLY`` for the database, which raises ``NotKept`` at the first use, and only then
(something was not kept) in a snapshot (``service.py``).
"""

from __future__ import annotations

import contextlib
from collections import Counter, OrderedDict
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Iterator, Mapping
from contextvars import ContextVar
from typing import Any, TypeVar, cast

from resolvers.db import Database

__all__ = [
    "KEPT_ONLY",
    "CacheView",
    "Key",
    "NotKept",
    "ReadCache",
    "current",
    "kept",
    "kept_each",
    "reading",
]

_T = TypeVar("_T")
_K = TypeVar("_K", bound=Hashable)
_V = TypeVar("_V")

Key = tuple[Any, ...]
"""An entry's key: ``(kind, instance, ...)``, the instance whose writes may change it."""


class ReadCache:
    """Up to ``limit`` kept reads (0: none), least recently used forgotten first.

    An entry's key is a tuple ``(kind, instance, ...)``: a write names the instances it
    changes (``writing``), and only their entries are forgotten, and only their reads
    end for the requests under way; a write that names none changes everything."""

    def __init__(self, limit: int, *, lasting_values: int = 500_000) -> None:
        self.limit = limit
        self.lasting_values = lasting_values
        self._entries: OrderedDict[Key, Any] = OrderedDict()
        self._by_instance: dict[Hashable, set[Key]] = {}
        self._lasting: OrderedDict[Hashable, tuple[int, Any]] = OrderedDict()
        self._lasting_held = 0
        self._epoch = 0
        """Counts the beginnings and ends of writes."""
        self._all_written = 0
        """The epoch of the last beginning or end of a write to everything."""
        self._written: dict[Hashable, int] = {}
        """Per instance, the epoch of the last beginning or end of a write to it."""
        self._writing_all = 0
        self._writing: Counter[Hashable] = Counter()

    def __len__(self) -> int:
        return len(self._entries)

    @contextlib.contextmanager
    def writing(self, instances: Collection[Hashable] | None = None) -> Iterator[None]:
        """Around every write of this process to the rollups (commit included), of
        ``instances`` (None: of any, or of what it cannot name)."""
        scope = None if instances is None else frozenset(instances)
        if scope is None:
            self._writing_all += 1
        else:
            self._writing.update(scope)
        self._forget(scope)
        try:
            yield
        finally:
            if scope is None:
                self._writing_all -= 1
            else:
                self._writing.subtract(scope)
                self._writing += Counter()  # drops the instances no longer written
            self._forget(scope)

    def forget(self) -> None:
        """Forget everything (as a write to everything would)."""
        self._forget(None)

    def _forget(self, instances: frozenset[Hashable] | None) -> None:
        self._epoch += 1
        if instances is None:
            self._all_written = self._epoch
            self._entries.clear()
            self._by_instance.clear()
            return
        for instance in instances:
            self._written[instance] = self._epoch
            for key in self._by_instance.pop(instance, ()):
                self._entries.pop(key, None)

    def mark(self) -> int | None:
        """The epoch a request starts in (before its first read); None while a write to
        everything is under way, or when the cache is off."""
        return None if self._writing_all or self.limit <= 0 else self._epoch

    def view(self, mark: int | None) -> CacheView | None:
        """After the snapshot's first read: a view for the request, or None when a write
        to everything began since ``mark``."""
        if mark is None or self._writing_all or self._all_written > mark:
            return None
        return CacheView(self, mark)

    def _lasts(self, key: Key, mark: int) -> bool:
        """Whether nothing written since ``mark`` (nor under way) may change ``key``."""
        instance = key[1]
        return (
            not self._writing_all
            and self._all_written <= mark
            and not self._writing[instance]
            and self._written.get(instance, 0) <= mark
        )

    def _get(self, key: Key) -> tuple[bool, Any]:
        if key not in self._entries:
            return False, None
        self._entries.move_to_end(key)
        return True, self._entries[key]

    def _put(self, key: Key, value: Any) -> None:
        self._entries[key] = value
        self._entries.move_to_end(key)
        self._by_instance.setdefault(key[1], set()).add(key)
        while len(self._entries) > self.limit:
            old, _ = self._entries.popitem(last=False)
            held = self._by_instance.get(old[1])
            if held is not None:
                held.discard(old)
                if not held:
                    del self._by_instance[old[1]]

    def lasting(self, key: Hashable) -> Any:
        """A lasting entry (None: not kept)."""
        if key not in self._lasting:
            return None
        self._lasting.move_to_end(key)
        return self._lasting[key][1]

    def keep_lasting(self, key: Hashable, value: Any, *, size: int) -> None:
        """Keep ``value``, which holds ``size`` values, while the least recently used
        ones make room (never one larger than the whole budget)."""
        if size > self.lasting_values or self.limit <= 0:
            return
        if key in self._lasting:
            self._lasting_held -= self._lasting.pop(key)[0]
        self._lasting[key] = (size, value)
        self._lasting_held += size
        while self._lasting_held > self.lasting_values:
            self._lasting_held -= self._lasting.popitem(last=False)[1][0]


class CacheView:
    """One request's use of the cache: an entry serves it, and what it reads is kept,
    while nothing written since the epoch it marked may have changed that entry."""

    def __init__(self, cache: ReadCache, mark: int) -> None:
        self._cache, self._mark = cache, mark

    def get(self, key: Key) -> tuple[bool, Any]:
        """(True, value) when ``key`` was kept and still holds, else (False, None)."""
        return self._cache._get(key) if self._cache._lasts(key, self._mark) else (False, None)

    def take(self, keys: Mapping[_T, Key]) -> tuple[dict[_T, Any], list[_T]]:
        """The kept values of ``keys`` (by their names) and the names not kept."""
        found: dict[_T, Any] = {}
        missing: list[_T] = []
        for name, key in keys.items():
            hit, value = self.get(key)
            if hit:
                found[name] = value
            else:
                missing.append(name)
        return found, missing

    def put(self, key: Key, value: Any) -> None:
        """Keep ``value``, read in this request's snapshot, if nothing written since its
        mark may have changed it."""
        if self._cache._lasts(key, self._mark):
            self._cache._put(key, value)

    @property
    def cache(self) -> ReadCache:
        """For lasting entries, which do not depend on the epoch."""
        return self._cache


class NotKept(Exception):
    """A read from kept documents alone needed the database."""


class _KeptOnly:
    """Stands for the database in a read from kept documents alone."""

    def __getattr__(self, name: str) -> Any:
        raise NotKept(name)

    def __getitem__(self, name: str) -> Any:
        raise NotKept(name)


KEPT_ONLY = cast(Database, _KeptOnly())
"""A database of which any use (a collection, the client) raises ``NotKept``."""


_current: ContextVar[CacheView | None] = ContextVar("rollup_reads", default=None)


def current() -> CacheView | None:
    """The view of the request being served, if it may use the cache."""
    return _current.get()


@contextlib.contextmanager
def reading(view: CacheView | None) -> Iterator[None]:
    """Serve the reads inside with ``view`` (None: read the database)."""
    token = _current.set(view)
    try:
        yield
    finally:
        _current.reset(token)


async def kept(key: Key, load: Callable[[], Awaitable[_T]]) -> _T:
    """``load()``, or what it returned earlier, while nothing written since may have
    changed it."""
    view = current()
    if view is None:
        return await load()
    hit, value = view.get(key)
    if hit:
        return value  # type: ignore[no-any-return]
    value = await load()
    view.put(key, value)
    return value


async def kept_each(
    names: Iterable[_K],
    key: Callable[[_K], Key],
    load: Callable[[list[_K]], Awaitable[Mapping[_K, _V]]],
) -> dict[_K, _V]:
    """``load(names)`` (what it leaves out does not exist), loading only the names not
    kept; that a name does not exist is kept too."""
    wanted = list(names)
    view = current()
    if view is None:
        return dict(await load(wanted))
    found, missing = view.take({name: key(name) for name in wanted})
    if missing:
        loaded = await load(missing)
        for name in missing:
            found[name] = loaded.get(name)
            view.put(key(name), found[name])
    return {name: value for name, value in found.items() if value is not None}
