"""A real ``message-metrics serve`` on a seeded test database, for the browser tests.

The messages are placed relative to the real clock (the server's), over the last 95
days (a third in the last week), from a fixed random seed: three instances, every type,
status and media type, group and one-to-one, sent and received.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import uuid4

import httpx
from bson import ObjectId

from resolvers import ensure_indexes, open_client
from tests.factories import make_tenant
from tests.server import serve

__all__ = ["INSTANCES", "Site", "graphql", "running_site"]

#: The seeded instances and their ``ignoreGroupMessages`` at the start.
INSTANCES = {"sales": False, "support": False, "marketing": False}

_TYPES = ("text", "text", "text", "image", "audio", "video", "document", "sticker", "reaction")
_STATUSES = ("read", "delivered", "sent", "pending", "failed", "played")
_MEDIA = {"image", "audio", "video", "document", "sticker"}


@dataclass(frozen=True)
class Site:
    """The server's base URL and the seeded tokens."""

    base: str
    account_token: str
    instance_tokens: dict[str, str]


@contextmanager
def running_site(
    *, mongodb_uri: str, log: Path, env: dict[str, str] | None = None
) -> Iterator[Site]:
    """Seed a fresh database (dropped afterwards) and serve it on 127.0.0.1."""
    database = f"test_browser_{uuid4().hex[:12]}"
    account_token, instance_tokens = asyncio.run(_seed(mongodb_uri, database))
    with serve(mongodb_uri=mongodb_uri, database=database, log=log, env=env) as base:
        yield Site(base=base, account_token=account_token, instance_tokens=instance_tokens)


def graphql(site: Site, query: str, variables: dict[str, Any] | None = None, *, token: str) -> Any:
    """The ``data`` of one operation over HTTP (fails on any error)."""
    response = httpx.post(
        f"{site.base}/graphql",
        json={"query": query, "variables": variables or {}},
        headers={"token": token},
        timeout=30,
    )
    body = response.json()
    assert response.status_code == 200 and not body.get("errors"), body
    return body["data"]


async def _seed(mongodb_uri: str, database: str) -> tuple[str, dict[str, str]]:
    client = open_client(mongodb_uri, server_selection_timeout_ms=5_000)
    async with client:
        db = client[database]
        await ensure_indexes(db)
        tenant = await make_tenant(db, name="Browser", instances=INSTANCES)
        now = datetime.now(UTC)
        rng = random.Random(11)
        messages = [
            _message(instance_id, now=now, rng=rng)
            for instance_id in tenant.instance_ids.values()
            for _ in range(120)
        ]
        await db["messages"].insert_many(messages)
    return tenant.account_token, tenant.instance_tokens


def _message(instance_id: ObjectId, *, now: datetime, rng: random.Random) -> dict[str, Any]:
    # A third of the messages within the last week, so every preset range has data.
    back = rng.uniform(0, 7) if rng.random() < 0.34 else rng.uniform(0, 95)
    timestamp = now - timedelta(days=back, minutes=1)
    kind = rng.choice(_TYPES)
    group = rng.random() < 0.3
    contact = rng.randrange(12)
    chat = f"1203630{rng.randrange(4)}@g.us" if group else f"55119000{contact:04d}@s.whatsapp.net"
    return {
        "instanceId": instance_id,
        "chatId": chat,
        "isGroup": group,
        "fromMe": rng.random() < 0.45,
        "sender": f"55119000{contact:04d}@s.whatsapp.net" if group else None,
        "type": kind,
        "status": rng.choice(_STATUSES),
        "media": {"type": kind, "size": rng.randrange(1, 10**6)} if kind in _MEDIA else None,
        "timestamp": timestamp,
        "updatedAt": timestamp,
    }
