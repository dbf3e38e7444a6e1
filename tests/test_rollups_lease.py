"""The consumer lease: one holder at a time, taken over when expired, fenced in commits."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest

from resolvers import Database
from resolvers.rollups.lease import (
    LeaseLost,
    fence,
    read_lease,
    release_lease,
    renew_lease,
    take_lease,
)
from tests.factories import NOW

TTL = timedelta(seconds=10)


async def test_first_taker_holds_the_lease_and_others_are_refused(db: Database) -> None:
    assert await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    assert not await take_lease(db=db, holder="b", now=NOW + timedelta(seconds=9), ttl=TTL)
    lease = await read_lease(db=db)
    assert lease is not None and lease.holder == "a" and lease.expires_at == NOW + TTL


async def test_holder_taking_again_renews(db: Database) -> None:
    assert await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    assert await take_lease(db=db, holder="a", now=NOW + timedelta(seconds=5), ttl=TTL)
    assert not await take_lease(db=db, holder="b", now=NOW + timedelta(seconds=12), ttl=TTL)


async def test_expired_lease_is_taken_over_and_the_old_holder_cannot_renew(db: Database) -> None:
    assert await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    assert await take_lease(db=db, holder="b", now=NOW + TTL, ttl=TTL)
    assert not await renew_lease(db=db, holder="a", now=NOW + TTL, ttl=TTL)
    assert await renew_lease(db=db, holder="b", now=NOW + TTL, ttl=TTL)
    lease = await read_lease(db=db)
    assert lease is not None and lease.holder == "b"


async def test_released_lease_is_free_at_once(db: Database) -> None:
    assert await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    await release_lease(db=db, holder="b", now=NOW)  # not b's: no effect
    assert not await take_lease(db=db, holder="b", now=NOW + timedelta(seconds=1), ttl=TTL)
    await release_lease(db=db, holder="a", now=NOW + timedelta(seconds=1))
    assert await take_lease(db=db, holder="b", now=NOW + timedelta(seconds=1), ttl=TTL)


async def test_stale_holder_cannot_commit(db: Database) -> None:
    """After a takeover, the old holder's transaction fails at the fence and none of its
    writes land."""
    await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    await take_lease(db=db, holder="b", now=NOW + TTL, ttl=TTL)
    async with db.client.start_session() as session:
        with pytest.raises(LeaseLost):
            async with await session.start_transaction():
                await db.rollup_probe.insert_one({"_id": 1}, session=session)
                await fence(db=db, holder="a", now=NOW + TTL, ttl=TTL, session=session)
    assert await db.rollup_probe.find_one({"_id": 1}) is None


async def test_fence_extends_the_lease_so_a_racing_takeover_loses(db: Database) -> None:
    """A takeover that starts while the holder's transaction is open (the lease looked
    expired) does not win once the transaction, which renewed the lease, commits."""
    await take_lease(db=db, holder="a", now=NOW, ttl=TTL)
    later = NOW + TTL + timedelta(seconds=1)
    async with db.client.start_session() as session, await session.start_transaction():
        await fence(db=db, holder="a", now=later, ttl=TTL, session=session)
        await db.rollup_probe.insert_one({"_id": 1}, session=session)
        takeover = asyncio.create_task(take_lease(db=db, holder="b", now=later, ttl=TTL))
        await asyncio.sleep(0.05)
    assert not await takeover
    lease = await read_lease(db=db)
    assert lease is not None and lease.holder == "a" and lease.expires_at == later + TTL
    assert await db.rollup_probe.find_one({"_id": 1}) == {"_id": 1}
