"""Builders of accounts, instances and messages for tests."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
from asgi_lifespan import LifespanManager
from bson import ObjectId

from graph import Settings, create_app
from resolvers import Database
from resolvers.admin import create_account, create_instance

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


@dataclass(frozen=True)
class Tenant:
    """An account with named instances, and every token."""

    account_id: ObjectId
    account_token: str
    instance_ids: dict[str, ObjectId]
    instance_tokens: dict[str, str]


async def make_tenant(
    db: Database, *, name: str = "Acme", instances: dict[str, bool] | None = None
) -> Tenant:
    """An account and its instances; ``instances`` maps name to ignoreGroupMessages."""
    account = await create_account(db=db, name=name, now=NOW)
    ids: dict[str, ObjectId] = {}
    tokens: dict[str, str] = {}
    wanted = {"sales": False} if instances is None else instances
    for instance_name, ignore in wanted.items():
        created = await create_instance(
            db=db,
            account=str(account.id),
            name=instance_name,
            ignore_group_messages=ignore,
            now=NOW,
        )
        ids[instance_name] = created.id
        tokens[instance_name] = created.token
    return Tenant(account.id, account.token, ids, tokens)


def message(instance_id: ObjectId, *, days_ago: float = 1.0, **fields: Any) -> dict[str, Any]:
    """A received one-to-one text message, changed by ``fields``."""
    doc: dict[str, Any] = {
        "instanceId": instance_id,
        "chatId": "5511900000001@s.whatsapp.net",
        "isGroup": False,
        "fromMe": False,
        "sender": None,
        "type": "text",
        "status": "read",
        "media": None,
        "timestamp": NOW - timedelta(days=days_ago),
        "updatedAt": NOW - timedelta(days=days_ago),
    }
    doc.update(fields)
    return doc


@asynccontextmanager
async def app_client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client on the whole app, inside its lifespan, with the clock frozen at NOW."""
    app = create_app(settings, clock=lambda: NOW)
    # stopping waits for the database operation the consumer had under way (a rebuild's
    # collection drops can take SecantusDB seconds on a loaded machine): more than the
    # default 5 s once in a CI run
    async with LifespanManager(app, shutdown_timeout=30) as manager:
        transport = httpx.ASGITransport(app=manager.app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as client:
            yield client
