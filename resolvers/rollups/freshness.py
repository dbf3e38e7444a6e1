"""Read-your-writes: may a request answer from the rollups, or must it scan?

A request first reads ``rollup_state``; that read's ``operationTime`` T is at least the
cluster time of every write acknowledged before the request began. The rollups answer
for an instance only if it is built and the consumer's applied position reaches T:
in this process the consumer's position (a short wait nudges it to poll at once), in
another process ``rollup_state.appliedAt``, which the lease holder refreshes while idle.
Past the wait, or for an instance still building, the answer comes from the full scan.

A rebuild drops the rollups; it also bumps ``rollup_state.generation``. Read the rollups
in a transaction (one snapshot) and call ``confirm`` in it: only instances of the same
generation that are still built are safe to answer from what that snapshot holds.

Without a change stream (``watermark.py``) there is no cluster time to compare: the
request's moment is the wall clock, and the rollups answer for an instance when the
watermark has passed it (the leader polls at once when asked; another process waits for
``rollup_state.watermark``) and no batch is half written to it (``rollup_state.seq`` odd
with the instance in ``dirty``). Without a transaction around the reads, ``confirm`` also
asks that no batch was written at all since ``check_freshness``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime

from bson import ObjectId, Timestamp
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.read_concern import ReadConcern

from resolvers.db import Database
from resolvers.rollups.consumer import RollupConsumer
from resolvers.rollups.source import RollupSource
from resolvers.rollups.state import RollupState, read_state
from resolvers.rollups.watermark import WatermarkFollower
from resolvers.rollups.watermark_state import WatermarkState, read_watermark_state

__all__ = ["Freshness", "check_freshness", "confirm", "confirm_state", "snapshot_reads"]


@dataclass(frozen=True, slots=True)
class Freshness:
    """Which of the asked instances the rollups may answer."""

    asked_at: Timestamp | None
    """The request's cluster time (T)."""
    usable: frozenset[ObjectId]
    fallback: frozenset[ObjectId]
    """Instances to answer from the full scan."""
    reason: str | None
    """Why some instances fall back (None when none does)."""
    generation: int = 0
    watermark: datetime | None = None
    """The watermark that vouched (watermark mode only)."""
    seq: int | None = None
    """``rollup_state.seq`` when it vouched (watermark mode only)."""
    snapshot: bool = True
    """Whether the database has transactions (a standalone ``mongod`` has none)."""
    state: RollupState | None = None
    """The change stream's state that vouched (read at ``asked_at``)."""

    @property
    def all_usable(self) -> bool:
        return not self.fallback


async def check_freshness(
    *,
    db: Database,
    instances: Collection[ObjectId],
    consumer: RollupConsumer | None = None,
    wait: float = 0.25,
    poll: float = 0.02,
) -> Freshness:
    """Whether ``instances`` may be answered from the rollups, waiting at most ``wait``
    seconds for the consumer to reach the request's cluster time. ``consumer`` is this
    process's consumer, if any (it only helps while it holds the lease)."""
    asked = frozenset(instances)
    if isinstance(consumer, RollupSource) and consumer.mode != "change-stream":
        if consumer.mode is None:
            return _scan(asked, None, "the rollups' source is not known yet", None)
        found = await _by_watermark(db, asked, consumer.watermark, wait=wait, poll=poll)
        return replace(found, snapshot=consumer.transactions is not False)
    state, now = await _state_and_time(db)
    if state is None or now is None:
        return _scan(asked, now, "the rollups have not been built yet", state)
    if consumer is not None and consumer.status().phase in ("building", "ready"):
        if not await consumer.position.wait_for(now, timeout=wait):
            return _scan(asked, now, "the rollup consumer is behind", state)
        # No second read of the state: a rebuild or a restarted instance since the first
        # one is caught by ``confirm``, in the snapshot that reads the rollups.
    else:
        state = await _applied_state(db, state, now, deadline=time.monotonic() + wait, poll=poll)
    if state is None:
        return _scan(asked, now, "the rollup consumer is behind", None)
    return _verdict(asked, now, state)


async def confirm(
    *, db: Database, freshness: Freshness, session: AsyncClientSession | None = None
) -> frozenset[ObjectId]:
    """The instances of ``freshness.usable`` that are still built in the same generation,
    read in ``session`` (the caller's transaction that also reads the rollups)."""
    if freshness.seq is not None:
        return await _confirm_watermark(db=db, freshness=freshness, session=session)
    return (await confirm_state(db=db, freshness=freshness, session=session))[0]


async def confirm_state(
    *, db: Database, freshness: Freshness, session: AsyncClientSession | None = None
) -> tuple[frozenset[ObjectId], RollupState | None]:
    """``confirm`` by the change stream's state, with the state it read."""
    state = await read_state(db=db, session=session)
    if state is None or state.generation != freshness.generation:
        return frozenset(), state
    return state.ready_instances(freshness.usable), state


async def _confirm_watermark(
    *, db: Database, freshness: Freshness, session: AsyncClientSession | None
) -> frozenset[ObjectId]:
    state = await read_watermark_state(db=db, session=session)
    if state is None or state.generation != freshness.generation:
        return frozenset()
    snapshot = session is not None and session.in_transaction
    if not snapshot and state.seq != freshness.seq:
        return frozenset()  # a batch may have been written between two of the reads
    return state.usable(freshness.usable)


async def snapshot_reads(
    session: AsyncClientSession, freshness: Freshness
) -> contextlib.AbstractAsyncContextManager[object]:
    """What to read the rollups and ``confirm`` in: a snapshot transaction, or, where the
    database has no transactions, plain reads (``confirm`` then also asks that no batch
    was written since ``check_freshness``)."""
    if not freshness.snapshot:
        return contextlib.nullcontext()
    return await session.start_transaction(read_concern=ReadConcern("snapshot"))


async def _by_watermark(
    db: Database,
    asked: frozenset[ObjectId],
    follower: WatermarkFollower,
    *,
    wait: float,
    poll: float,
) -> Freshness:
    """The watermark's answer: ``asked`` usable once the watermark passes now."""
    now = follower.now()
    deadline = time.monotonic() + wait
    if follower.leading and not await follower.position.wait_for(now, timeout=wait):
        return _scan(asked, None, "the rollups' watermark is behind", None)
    while True:
        state = await read_watermark_state(db=db)
        if state is None or not state.ours:
            return _scan(asked, None, "the rollups have not been built yet", None)
        if (state.watermark is not None and state.watermark >= now) or follower.leading:
            return _watermark_verdict(asked, state)
        if time.monotonic() >= deadline:
            return _scan(asked, None, "the rollups' watermark is behind", None)
        await asyncio.sleep(poll)


def _watermark_verdict(asked: frozenset[ObjectId], state: WatermarkState) -> Freshness:
    usable = state.usable(asked)
    fallback = asked - usable
    reason = None
    if fallback:
        reason = "a batch is being written" if state.writing else f"building ({state.percent()}%)"
    return Freshness(
        None, usable, fallback, reason, state.generation, watermark=state.watermark, seq=state.seq
    )


async def _state_and_time(db: Database) -> tuple[RollupState | None, Timestamp | None]:
    async with db.client.start_session(causal_consistency=False) as session:
        state = await read_state(db=db, session=session)
        return state, session.operation_time


async def _applied_state(
    db: Database, state: RollupState, now: Timestamp, *, deadline: float, poll: float
) -> RollupState | None:
    """The first ``rollup_state`` whose ``appliedAt`` reaches ``now`` (None: not in time)."""
    current: RollupState | None = state
    while current is None or current.applied_at is None or current.applied_at < now:
        if time.monotonic() >= deadline:
            return None
        await asyncio.sleep(poll)
        current = await read_state(db=db)
    return current


def _verdict(asked: frozenset[ObjectId], now: Timestamp, state: RollupState) -> Freshness:
    usable = state.ready_instances(asked)
    fallback = asked - usable
    reason = None if not fallback else f"building ({state.percent():.1f}%)"
    return Freshness(now, usable, fallback, reason, state.generation, state=state)


def _scan(
    asked: frozenset[ObjectId], now: Timestamp | None, reason: str, state: RollupState | None
) -> Freshness:
    generation = 0 if state is None else state.generation
    return Freshness(now, frozenset(), asked, reason, generation)
