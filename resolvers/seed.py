"""Realistic demo messages, and the demo account the embedded database starts with."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from bson import ObjectId

from resolvers.admin import Created, create_instance, insert_account, rotate_token
from resolvers.db import Database, translate_driver_errors
from resolvers.tokens import hash_token

__all__ = [
    "DEMO_NAME",
    "DemoTokens",
    "add_messages",
    "generate_messages",
    "seed_demo",
    "seed_messages",
]

_TYPES = {
    "text": 60,
    "image": 12,
    "audio": 8,
    "video": 4,
    "document": 4,
    "sticker": 5,
    "location": 1,
    "contact": 1,
    "reaction": 4,
    "poll": 1,
}
_MEDIA_TYPES = {"image", "audio", "video", "document", "sticker"}
_MIMETYPES = {
    "image": "image/jpeg",
    "audio": "audio/ogg; codecs=opus",
    "video": "video/mp4",
    "document": "application/pdf",
    "sticker": "image/webp",
}
_SENT_STATUSES = {"read": 55, "delivered": 25, "sent": 10, "played": 5, "pending": 3, "failed": 2}
_RECEIVED_STATUSES = {"read": 85, "delivered": 15}
DEMO_NAME = "Demo Company"
_DEMO_INSTANCES = (("sales", False), ("support", True), ("marketing", False))
_BATCH = 5_000


@dataclass(frozen=True, slots=True)
class DemoTokens:
    """The demo account's token and its instances' tokens, by instance name."""

    account: str
    instances: dict[str, str]


def generate_messages(
    *, instance_id: ObjectId, count: int, days: int, now: datetime, seed: int
) -> Iterator[dict[str, Any]]:
    """``count`` messages of one instance spread over the last ``days`` days, newest denser."""
    rng = random.Random(seed)
    contacts = [
        f"55{rng.randrange(10**10, 10**11)}@s.whatsapp.net" for _ in range(max(5, count // 40))
    ]
    groups = {
        f"{rng.randrange(10**17, 10**18)}@g.us": rng.sample(contacts, min(len(contacts), 8))
        for _ in range(max(1, count // 400))
    }
    group_ids = list(groups)
    span = timedelta(days=days).total_seconds()
    for _ in range(count):
        is_group = rng.random() < 0.3
        chat = rng.choice(group_ids) if is_group else rng.choice(contacts)
        from_me = rng.random() < 0.45
        yield _message(
            rng=rng,
            instance_id=instance_id,
            chat=chat,
            is_group=is_group,
            from_me=from_me,
            sender=rng.choice(groups[chat]) if is_group and not from_me else None,
            timestamp=now - timedelta(seconds=span * rng.random() ** 1.5),
        )


def _message(
    *,
    rng: random.Random,
    instance_id: ObjectId,
    chat: str,
    is_group: bool,
    from_me: bool,
    sender: str | None,
    timestamp: datetime,
) -> dict[str, Any]:
    kind = _pick(rng, _TYPES)
    statuses = _SENT_STATUSES if from_me else _RECEIVED_STATUSES
    media = None
    if kind in _MEDIA_TYPES:
        media = {
            "type": kind,
            "mimetype": _MIMETYPES[kind],
            "size": rng.randrange(2_000, 9_000_000),
        }
    return {
        "instanceId": instance_id,
        "chatId": chat,
        "isGroup": is_group,
        "fromMe": from_me,
        "sender": sender,
        "type": kind,
        "status": _pick(rng, statuses),
        "media": media,
        "timestamp": timestamp,
        "updatedAt": timestamp + timedelta(seconds=rng.randrange(0, 3_600)),
    }


def _pick(rng: random.Random, weights: dict[str, int]) -> str:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


async def seed_messages(
    *,
    db: Database,
    instance_id: ObjectId,
    count: int,
    days: int,
    now: datetime,
    progress: Callable[[int], None] = lambda _: None,
) -> int:
    """Top the instance up to ``count`` messages (idempotent); return how many were added."""
    with translate_driver_errors():
        existing = await db.messages.count_documents({"instanceId": instance_id})
    missing = max(0, count - existing)
    docs = generate_messages(
        instance_id=instance_id, count=missing, days=days, now=now, seed=existing
    )
    batch: list[dict[str, Any]] = []
    for doc in docs:
        batch.append(doc)
        if len(batch) == _BATCH:
            await _insert(db, batch, progress)
            batch = []
    if batch:
        await _insert(db, batch, progress)
    return missing


async def add_messages(
    *,
    db: Database,
    instance_id: ObjectId,
    count: int,
    days: int,
    now: datetime,
    progress: Callable[[int], None] = lambda _: None,
) -> int:
    """Add ``count`` more messages to the instance, whatever it holds; return ``count``."""
    with translate_driver_errors():
        existing = await db.messages.count_documents({"instanceId": instance_id})
    return await seed_messages(
        db=db,
        instance_id=instance_id,
        count=existing + count,
        days=days,
        now=now,
        progress=progress,
    )


async def _insert(
    db: Database, batch: list[dict[str, Any]], progress: Callable[[int], None]
) -> None:
    with translate_driver_errors():
        await db.messages.insert_many(batch, ordered=False)
    progress(len(batch))


async def seed_demo(
    *, db: Database, now: datetime, messages: int, known: DemoTokens | None, renew: bool = False
) -> DemoTokens | None:
    """The demo account's tokens, the account and its instances created on first use.

    Only hashes are stored, so a token can be shown again only when the caller kept it:
    a ``known`` token that still matches its hash is kept; one missing from ``known`` or
    stale is replaced. ``renew`` replaces every token. With ``known`` None and no
    ``renew``, an existing demo is left alone and None returned (nothing to show).
    """
    with translate_driver_errors():
        account = await db.accounts.find_one({"demo": True})
    if account is None:
        return await _create_demo(db=db, now=now, messages=messages)
    if known is None and not renew:
        return None
    kept = None if renew else known
    account_token = await _keep_or_rotate(
        db=db, collection="accounts", doc=account, token=kept.account if kept else None
    )
    with translate_driver_errors():
        instances = await db.instances.find({"accountId": account["_id"]}).sort("_id").to_list()
    tokens = {
        doc["name"]: await _keep_or_rotate(
            db=db,
            collection="instances",
            doc=doc,
            token=kept.instances.get(doc["name"]) if kept else None,
        )
        for doc in instances
    }
    return DemoTokens(account=account_token, instances=tokens)


async def _keep_or_rotate(
    *, db: Database, collection: str, doc: dict[str, Any], token: str | None
) -> str:
    """``token`` while it still opens ``doc``; else a new one."""
    if token is not None and doc.get("tokenHash") == hash_token(token):
        return token
    return await rotate_token(db=db, collection=collection, id=doc["_id"])


async def _create_demo(*, db: Database, now: datetime, messages: int) -> DemoTokens:
    account = await insert_account(db=db, name=DEMO_NAME, now=now, extra={"demo": True})
    tokens: dict[str, str] = {}
    for index, (name, ignore) in enumerate(_DEMO_INSTANCES):
        instance: Created = await create_instance(
            db=db, account=str(account.id), name=name, ignore_group_messages=ignore, now=now
        )
        tokens[name] = instance.token
        share = messages // len(_DEMO_INSTANCES) * (index + 1) // 2 + 1
        await seed_messages(db=db, instance_id=instance.id, count=share, days=90, now=now)
    return DemoTokens(account=account.token, instances=tokens)
