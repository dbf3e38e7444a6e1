"""One change-stream consumer per database: a lease in ``rollup_lease``.

The lease is one document (``_id: "consumer"``) naming its holder and when it expires.
A process takes it when it is free or expired and renews it while it runs; every
transaction that applies changes first writes the lease document with its own holder
in the filter (``fence``). That write is what makes a stale holder harmless: once
another process took the lease, the filter matches nothing and the transaction is
abandoned; and a takeover that races a transaction conflicts on the same document, so
only one of them wins. Clocks only decide when a lease may be taken, never whether
changes are applied twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import DuplicateKeyError

from resolvers.db import Database, update_unrecorded

__all__ = [
    "LEASE_COLLECTION",
    "Lease",
    "LeaseLost",
    "fence",
    "read_lease",
    "release_lease",
    "renew_lease",
    "take_lease",
]

LEASE_COLLECTION = "rollup_lease"
_ID = "consumer"


class LeaseLost(Exception):
    """Another process holds the consumer lease now."""


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str
    expires_at: datetime


async def take_lease(*, db: Database, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Take the lease if it is free, expired or already ours (then it is renewed)."""
    free_or_ours = {"_id": _ID, "$or": [{"holder": holder}, {"expiresAt": {"$lte": now}}]}
    try:
        await db[LEASE_COLLECTION].update_one(
            free_or_ours, _held_by(holder, until=now + ttl), upsert=True
        )
    except DuplicateKeyError:
        return False  # the document exists and someone else holds it
    return True


async def renew_lease(*, db: Database, holder: str, now: datetime, ttl: timedelta) -> bool:
    """Extend our lease; False when it is no longer ours."""
    result = await update_unrecorded(
        db[LEASE_COLLECTION], {"_id": _ID, "holder": holder}, _held_by(holder, until=now + ttl)
    )
    return result.matched_count == 1


async def release_lease(*, db: Database, holder: str, now: datetime) -> None:
    """Let another process take the lease at once (if it is still ours)."""
    await db[LEASE_COLLECTION].update_one(
        {"_id": _ID, "holder": holder}, {"$set": {"expiresAt": now}}
    )


async def fence(
    *, db: Database, holder: str, now: datetime, ttl: timedelta, session: AsyncClientSession
) -> None:
    """Inside the caller's transaction: prove the lease is still ours (and extend it), or
    raise ``LeaseLost`` so the transaction is abandoned."""
    result = await db[LEASE_COLLECTION].update_one(
        {"_id": _ID, "holder": holder}, _held_by(holder, until=now + ttl), session=session
    )
    if result.matched_count != 1:
        raise LeaseLost(f"the rollup consumer lease is no longer held by {holder}")


async def read_lease(*, db: Database) -> Lease | None:
    doc = await db[LEASE_COLLECTION].find_one({"_id": _ID})
    if doc is None:
        return None
    expires: datetime = doc["expiresAt"]
    if expires.tzinfo is None:  # a client without tz_aware reads UTC as naive
        expires = expires.replace(tzinfo=UTC)
    return Lease(holder=str(doc["holder"]), expires_at=expires)


def _held_by(holder: str, *, until: datetime) -> dict[str, Any]:
    return {"$set": {"holder": holder, "expiresAt": until}}
