"""Operator actions on accounts and instances (used by the CLI and the demo seed)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from resolvers.db import Database, translate_driver_errors
from resolvers.errors import BadUserInput, NotFound
from resolvers.instances import MAX_NAME_LENGTH, ignores_group_messages
from resolvers.tokens import hash_token, new_token

__all__ = [
    "AccountInfo",
    "Created",
    "InstanceInfo",
    "Rotated",
    "create_account",
    "create_instance",
    "find_account",
    "insert_account",
    "list_accounts",
    "list_instances",
    "rotate",
    "rotate_token",
    "set_ignore_group_messages",
]


@dataclass(frozen=True, slots=True)
class Created:
    """A new account or instance and its token, which is shown once and never stored."""

    id: ObjectId
    name: str
    token: str


@dataclass(frozen=True, slots=True)
class InstanceInfo:
    id: ObjectId
    account_id: ObjectId
    name: str
    ignore_group_messages: bool


@dataclass(frozen=True, slots=True)
class AccountInfo:
    """What an operator may see of an account: never its token or hash."""

    id: ObjectId
    name: str
    instances: int
    created_at: datetime | None
    demo: bool


@dataclass(frozen=True, slots=True)
class Rotated:
    """A new token; ``instance`` None means the account's own token."""

    account: str
    instance: str | None
    token: str
    demo: bool


async def create_account(*, db: Database, name: str, now: datetime) -> Created:
    """A new account; refused when an account already has this name, since names are how
    operators pick accounts (``--account Acme``)."""
    name = _check_name(name, what="account")
    with translate_driver_errors():
        taken = await db.accounts.find_one({"name": name}, {"_id": 1})
    if taken is not None:
        raise BadUserInput(f'An account named "{name}" already exists (id {taken["_id"]}).')
    try:
        return await insert_account(db=db, name=name, now=now)
    except DuplicateKeyError as exc:  # created meanwhile: the unique index on names
        raise BadUserInput(f'An account named "{name}" already exists.') from exc


async def insert_account(
    *, db: Database, name: str, now: datetime, extra: dict[str, Any] | None = None
) -> Created:
    """Insert an account with a fresh token, no questions asked (``extra`` fields too)."""
    token = new_token()
    doc = {"name": name, "tokenHash": hash_token(token), "createdAt": now, **(extra or {})}
    with translate_driver_errors():
        result = await db.accounts.insert_one(doc)
    return Created(id=result.inserted_id, name=name, token=token)


async def list_accounts(*, db: Database) -> list[AccountInfo]:
    """Every account by name, with how many instances it has."""
    with translate_driver_errors():
        counts = {
            row["_id"]: row["n"]
            async for row in await db.instances.aggregate(
                [{"$group": {"_id": "$accountId", "n": {"$sum": 1}}}]
            )
        }
        docs = (
            await db.accounts.find({}, {"tokenHash": 0}).sort([("name", 1), ("_id", 1)]).to_list()
        )
    return [
        AccountInfo(
            id=doc["_id"],
            name=doc["name"],
            instances=counts.get(doc["_id"], 0),
            created_at=doc.get("createdAt"),
            demo=bool(doc.get("demo")),
        )
        for doc in docs
    ]


async def find_account(*, db: Database, ref: str) -> dict[str, Any]:
    """An account by id, or by name when exactly one account has it."""
    with translate_driver_errors():
        if ObjectId.is_valid(ref):
            account = await db.accounts.find_one({"_id": ObjectId(ref)})
            if account is not None:
                return account
        matches = await db.accounts.find({"name": ref}).limit(2).to_list()
    if not matches:
        raise NotFound(f'No account with id or name "{ref}".')
    if len(matches) > 1:
        raise BadUserInput(f'Several accounts are named "{ref}"; give the account id instead.')
    return matches[0]


async def create_instance(
    *, db: Database, account: str, name: str, ignore_group_messages: bool, now: datetime
) -> Created:
    name = _check_instance_name(name)
    owner = await find_account(db=db, ref=account)
    token = new_token()
    doc = {
        "accountId": owner["_id"],
        "name": name,
        "tokenHash": hash_token(token),
        "settings": {"ignoreGroupMessages": ignore_group_messages},
        "createdAt": now,
    }
    with translate_driver_errors():
        try:
            result = await db.instances.insert_one(doc)
        except DuplicateKeyError as exc:
            raise BadUserInput(
                f'Account "{owner["name"]}" already has an instance "{name}".'
            ) from exc
    return Created(id=result.inserted_id, name=name, token=token)


async def list_instances(*, db: Database, account: str | None = None) -> list[InstanceInfo]:
    query: dict[str, Any] = {}
    if account is not None:
        query["accountId"] = (await find_account(db=db, ref=account))["_id"]
    with translate_driver_errors():
        docs = await db.instances.find(query).sort([("accountId", 1), ("name", 1)]).to_list()
    return [_info(doc) for doc in docs]


async def set_ignore_group_messages(
    *, db: Database, account: str, name: str, value: bool
) -> InstanceInfo:
    owner = await find_account(db=db, ref=account)
    with translate_driver_errors():
        doc = await db.instances.find_one_and_update(
            {"accountId": owner["_id"], "name": name},
            {"$set": {"settings.ignoreGroupMessages": value}},
            return_document=True,
        )
    if doc is None:
        raise NotFound(f'Account "{owner["name"]}" has no instance "{name}".')
    return _info(doc)


async def rotate(*, db: Database, account: str, instance: str | None) -> Rotated:
    """A new token for the account (``instance`` None) or one of its instances; the old
    token stops working at once (only the new hash is stored)."""
    owner = await find_account(db=db, ref=account)
    if instance is None:
        token = await rotate_token(db=db, collection="accounts", id=owner["_id"])
    else:
        with translate_driver_errors():
            found = await db.instances.find_one(
                {"accountId": owner["_id"], "name": instance}, {"_id": 1}
            )
        if found is None:
            raise NotFound(f'Account "{owner["name"]}" has no instance "{instance}".')
        token = await rotate_token(db=db, collection="instances", id=found["_id"])
    return Rotated(
        account=owner["name"], instance=instance, token=token, demo=bool(owner.get("demo"))
    )


async def rotate_token(*, db: Database, collection: str, id: ObjectId) -> str:
    """Give an account or instance a new token; the old one stops working at once."""
    token = new_token()
    with translate_driver_errors():
        await db[collection].update_one({"_id": id}, {"$set": {"tokenHash": hash_token(token)}})
    return token


def _info(doc: dict[str, Any]) -> InstanceInfo:
    return InstanceInfo(
        id=doc["_id"],
        account_id=doc["accountId"],
        name=doc["name"],
        ignore_group_messages=ignores_group_messages(doc),
    )


def _check_name(name: str, *, what: str) -> str:
    name = name.strip()
    if not name:
        raise BadUserInput(f"The {what} name must not be empty.")
    if len(name) > MAX_NAME_LENGTH:
        raise BadUserInput(f"The {what} name is longer than {MAX_NAME_LENGTH} characters.")
    return name


def _check_instance_name(name: str) -> str:
    """Instance names travel in URL paths as comma-separated lists: no commas, no padding."""
    if name != name.strip():
        raise BadUserInput("Instance names must not start or end with spaces.")
    if "," in name:
        raise BadUserInput("Instance names must not contain commas.")
    return _check_name(name, what="instance")
