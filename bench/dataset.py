"""The benchmark data: one account, its instances, and their generated messages."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from bench.model import InsertStat
from resolvers import Database, InstanceRef
from resolvers.admin import create_account, create_instance
from resolvers.seed import generate_messages

__all__ = ["BenchInstance", "create_bench_account", "create_filled_instance"]


@dataclass(frozen=True, slots=True)
class BenchInstance:
    ref: InstanceRef
    messages: int
    token: str
    insert: InsertStat


async def create_bench_account(*, db: Database, now: datetime) -> tuple[str, str]:
    """A new account: its id and its token (which sees all its instances)."""
    account = await create_account(db=db, name="Benchmark", now=now)
    return str(account.id), account.token


async def create_filled_instance(
    *,
    db: Database,
    account_id: str,
    name: str,
    messages: int,
    seed: int,
    days: int,
    now: datetime,
    batch: int,
    progress: Callable[[str], None] = lambda _: None,
) -> BenchInstance:
    """Create instance ``name`` and insert ``messages`` generated messages in batches."""
    created = await create_instance(
        db=db, account=account_id, name=name, ignore_group_messages=False, now=now
    )
    docs = generate_messages(instance_id=created.id, count=messages, days=days, now=now, seed=seed)
    generate_s = insert_s = 0.0
    done = 0
    while True:
        started = time.perf_counter()
        chunk: list[dict[str, Any]] = list(itertools.islice(docs, batch))
        generate_s += time.perf_counter() - started
        if not chunk:
            break
        started = time.perf_counter()
        await db.messages.insert_many(chunk, ordered=False)
        insert_s += time.perf_counter() - started
        done += len(chunk)
        if done % (batch * 20) == 0:
            progress(f"  {name}: {done:,}/{messages:,} inserted")
    stat = InsertStat(instance=name, messages=messages, generate_s=generate_s, insert_s=insert_s)
    ref = InstanceRef(id=created.id, name=name, ignore_group_messages=False)
    return BenchInstance(ref=ref, messages=messages, token=created.token, insert=stat)
