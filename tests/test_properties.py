"""The pipeline against the plain-Python reference, on random (and odd) documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolvers import Database, InstanceRef, fetch_metrics
from tests.factories import NOW
from tests.reference import reference_metrics
from tests.strategies import INSTANCE_IDS, as_contract, messages, selections


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=st.lists(messages(), max_size=40), selection=selections)
async def test_pipeline_matches_reference(
    db: Database, docs: list[dict[str, Any]], selection: list[tuple[ObjectId, bool]]
) -> None:
    await db.messages.delete_many({})
    if docs:
        await db.messages.insert_many([dict(doc) for doc in docs])
    # one setting per instance, as in the database: the first mention wins
    settings_by_id = dict(reversed(selection))
    refs = [
        InstanceRef(id=i, name=str(i), ignore_group_messages=settings_by_id[i])
        for i in dict.fromkeys(i for i, _ in selection)
    ]

    result = await fetch_metrics(db=db, instances=refs, now=NOW)

    expected = reference_metrics(
        docs, instances=[(ref.id, ref.ignore_group_messages) for ref in refs], now=NOW
    )
    assert as_contract(result) == expected


def test_reference_counts_a_simple_case_by_hand() -> None:
    """The reference itself, checked against numbers worked out by hand."""
    a = INSTANCE_IDS[0]
    docs = [
        {
            "instanceId": a,
            "chatId": "x@s.whatsapp.net",
            "isGroup": False,
            "fromMe": True,
            "type": "text",
            "status": "read",
            "timestamp": NOW - timedelta(days=1),
        },
        {
            "instanceId": a,
            "chatId": "g@g.us",
            "isGroup": True,
            "fromMe": False,
            "sender": "y@s.whatsapp.net",
            "type": "image",
            "media": {"type": "image"},
            "status": "read",
            "timestamp": datetime(2026, 10, 1, tzinfo=UTC),
        },
    ]
    got = reference_metrics(docs, instances=[(a, False)], now=NOW)
    assert (got["totalMessages"], got["messagesSent"], got["uniqueContacts"]) == (2, 1, 2)
    assert (got["messagesLast7Days"], got["messagesLast30Days"]) == (1, 1)
    assert got["mediaByType"]["image"] == 1 and got["mediaByType"]["video"] == 0
    ignoring = reference_metrics(docs, instances=[(a, True)], now=NOW)
    assert (ignoring["totalMessages"], ignoring["uniqueContacts"]) == (1, 1)
