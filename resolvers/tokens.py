"""Tokens: generated once, stored only as SHA-256 hashes, matched by hash."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass

from bson import ObjectId

from resolvers.db import Database, translate_driver_errors

__all__ = [
    "AccountCaller",
    "Caller",
    "InstanceCaller",
    "authenticate",
    "hash_token",
    "new_token",
]


def new_token() -> str:
    """A fresh random token (256 bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """Lowercase hex SHA-256 of the token, as stored in ``tokenHash``."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


@dataclass(frozen=True, slots=True)
class AccountCaller:
    """An account token: sees every instance of its account."""

    account_id: ObjectId
    token_hash: str


@dataclass(frozen=True, slots=True)
class InstanceCaller:
    """An instance token: sees only its own instance."""

    account_id: ObjectId
    instance_id: ObjectId
    instance_name: str
    token_hash: str


Caller = AccountCaller | InstanceCaller


async def authenticate(*, db: Database, token: str | None) -> Caller | None:
    """The caller a token belongs to, or None when it is missing or matches nothing."""
    if not token:
        return None
    token_hash = hash_token(token)
    with translate_driver_errors():
        account = await db.accounts.find_one({"tokenHash": token_hash}, {"_id": 1})
        if account is not None:
            return AccountCaller(account_id=account["_id"], token_hash=token_hash)
        instance = await db.instances.find_one(
            {"tokenHash": token_hash}, {"_id": 1, "accountId": 1, "name": 1}
        )
    if instance is None:
        return None
    return InstanceCaller(
        account_id=instance["accountId"],
        instance_id=instance["_id"],
        instance_name=instance["name"],
        token_hash=token_hash,
    )
