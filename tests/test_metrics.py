"""fetch_metrics on a small dataset whose numbers were worked out by hand."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pymongo
import pytest
from bson import ObjectId

from resolvers import Database, InstanceRef, Unavailable, build_metrics_pipeline, fetch_metrics
from resolvers.seed import generate_messages
from tests.factories import NOW, message

A, B = ObjectId(), ObjectId()


def _dataset() -> list[dict]:
    return [
        message(A, days_ago=1, fromMe=True, status="delivered"),
        message(
            A,
            days_ago=2,
            chatId="2@s.whatsapp.net",
            type="image",
            media={"type": "image", "mimetype": "image/jpeg"},
        ),
        message(
            A,
            days_ago=10,
            chatId="g@g.us",
            isGroup=True,
            sender="3@s.whatsapp.net",
            type="audio",
            media={"type": "audio"},
            status="played",
        ),
        message(A, days_ago=40, chatId="g@g.us", isGroup=True, fromMe=True, type="poll"),
        message(B, days_ago=3, chatId="1@s.whatsapp.net", type="sticker", media={"type": "gif"}),
        message(B, days_ago=60, chatId="h@g.us", isGroup=True, sender="1@s.whatsapp.net"),
    ]


async def test_metrics_of_one_instance(db: Database) -> None:
    await db.messages.insert_many(_dataset())
    got = await fetch_metrics(db=db, instances=[InstanceRef(A, "a", False)], now=NOW)
    assert (got.total_messages, got.messages_sent, got.messages_received) == (4, 2, 2)
    assert (got.group_messages, got.individual_messages, got.messages_with_media) == (2, 2, 2)
    assert (got.unique_chats, got.unique_groups, got.unique_contacts) == (3, 1, 3)
    assert (got.messages_last_7_days, got.messages_last_30_days) == (2, 3)
    assert got.messages_by_type["image"] == 1 and got.messages_by_type["poll"] == 1
    assert got.media_by_type == {"image": 1, "audio": 1, "video": 0, "document": 0, "sticker": 0}
    assert got.messages_by_status["played"] == 1 and got.messages_by_status["read"] == 2
    assert got.first_message_at == NOW - timedelta(days=40)
    assert got.last_message_at == NOW - timedelta(days=1)


async def test_metrics_leave_out_group_messages_of_an_ignoring_instance(db: Database) -> None:
    await db.messages.insert_many(_dataset())
    got = await fetch_metrics(db=db, instances=[InstanceRef(A, "a", True)], now=NOW)
    assert (got.total_messages, got.group_messages, got.unique_groups) == (2, 0, 0)
    assert (got.unique_chats, got.unique_contacts) == (2, 2)
    assert got.first_message_at == NOW - timedelta(days=2)


async def test_metrics_sum_two_instances_including_unique_counts(db: Database) -> None:
    await db.messages.insert_many(_dataset())
    refs = [InstanceRef(A, "a", False), InstanceRef(B, "b", False)]
    got = await fetch_metrics(db=db, instances=refs, now=NOW)
    assert got.total_messages == 6
    # "1@s.whatsapp.net" is a contact of both instances: counted once for each
    assert (got.unique_chats, got.unique_contacts) == (5, 4)
    assert got.media_by_type["gif"] == 1
    assert list(got.media_by_type)[-1] == "gif"
    assert got.first_message_at == NOW - timedelta(days=60)


async def test_metrics_of_no_messages_are_zero_with_null_dates(db: Database) -> None:
    got = await fetch_metrics(db=db, instances=[InstanceRef(A, "a", False)], now=NOW)
    assert got.total_messages == 0 and got.messages_by_type["text"] == 0
    assert got.first_message_at is None and got.last_message_at is None


async def test_a_query_over_its_deadline_is_unavailable_not_unreachable(db: Database) -> None:
    messages = generate_messages(instance_id=A, count=5_000, days=90, now=NOW, seed=7)
    await db.messages.insert_many(list(messages))
    with pytest.raises(Unavailable, match="did not answer in time"), pymongo.timeout(0.05):
        await fetch_metrics(db=db, instances=[InstanceRef(A, "a", False)], now=NOW)


def _examined(explained: Any) -> list[int]:
    """Every ``totalDocsExamined`` in an explain (its shape differs between servers)."""
    if isinstance(explained, dict):
        found = [explained["totalDocsExamined"]] if "totalDocsExamined" in explained else []
        return found + [n for value in explained.values() for n in _examined(value)]
    if isinstance(explained, list):
        return [n for value in explained for n in _examined(value)]
    return []


async def test_the_full_scan_reads_only_the_messages_of_the_instances_named(db: Database) -> None:
    """The fallback must cost what the instance holds: on SecantusDB an ``$in`` beside a
    ``$not`` read every message of every instance (minutes at a million)."""
    await db.messages.insert_many(
        [message(B, days_ago=k / 10) for k in range(300)]
        + [message(A, days_ago=1), message(A, days_ago=2, isGroup=True)]
        + [message(ObjectId(), days_ago=1) | {"instanceId": [A]}]  # counts for none
    )
    refs = [InstanceRef(A, "a", True)]
    pipeline = build_metrics_pipeline(instances=refs, now=NOW)
    command = {"aggregate": "messages", "pipeline": pipeline, "cursor": {}}
    explained = await db.command("explain", command, verbosity="executionStats")

    examined = _examined(explained)
    assert examined and max(examined) <= 3, examined
    assert (await fetch_metrics(db=db, instances=refs, now=NOW)).total_messages == 1
