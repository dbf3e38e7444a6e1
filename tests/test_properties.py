"""The pipeline against the plain-Python reference, on random (and odd) documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from resolvers import Database, InstanceRef, MetricsResult, fetch_metrics
from tests.factories import NOW
from tests.reference import reference_metrics

INSTANCE_IDS = [ObjectId(f"{n:024x}") for n in range(1, 5)]

_MISSING = object()


def _maybe(strategy: st.SearchStrategy[Any], *odd: Any) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``; sometimes missing, null or a value of the wrong type."""
    return st.one_of(strategy, strategy, strategy, st.sampled_from([_MISSING, None, *odd]))


_millis = st.integers(min_value=-100 * 86_400_000, max_value=86_400_000)
_dates = _millis.map(lambda ms: NOW + timedelta(milliseconds=ms))
_edges = st.sampled_from([NOW - timedelta(days=7), NOW - timedelta(days=30), NOW])
_names = st.sampled_from(
    [
        "text",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contact",
        "reaction",
        "poll",
        "pending",
        "sent",
        "delivered",
        "read",
        "played",
        "failed",
        "ephemeral",
        "unknown",
        "",
        "Text",
    ]
)
_jids = st.sampled_from(
    ["a@s.whatsapp.net", "b@s.whatsapp.net", "c@s.whatsapp.net", "g1@g.us", "g2@g.us", ""]
)
_media = st.one_of(
    st.none(),
    st.fixed_dictionaries(
        {},
        optional={
            "type": st.one_of(_names, st.sampled_from([None, 7])),
            "mimetype": st.just("x/y"),
            "size": st.integers(0, 10**6),
        },
    ),
    st.sampled_from(["image", [{"type": "image"}], 3]),
)

_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "chatId": _maybe(_jids, 42, ["a@s.whatsapp.net"]),
    "isGroup": _maybe(st.booleans(), 1, "true", [True]),
    "fromMe": _maybe(st.booleans(), 0, "false", [False]),
    "sender": _maybe(_jids, 5, ["b@s.whatsapp.net"]),
    "type": _maybe(_names, 3, True, ["text"]),
    "status": _maybe(_names, 2.5),
    "media": st.one_of(_media, st.just(_MISSING)),
    "timestamp": _maybe(
        st.one_of(_dates, _edges),
        "2026-11-20T00:00:00Z",
        1_700_000_000,
        [NOW - timedelta(days=1)],
    ),
}


def _odd_owner(instance_id: ObjectId) -> st.SearchStrategy[Any]:
    """Not an ObjectId, yet close to one: such a message counts for no instance."""
    return st.sampled_from(
        [[instance_id], [instance_id, INSTANCE_IDS[-1]], str(instance_id), _MISSING, None]
    )


# mostly an ObjectId; sometimes an array holding it, its string, missing or null
_owners = st.sampled_from(INSTANCE_IDS).flatmap(
    lambda i: st.one_of(st.just(i), st.just(i), st.just(i), st.just(i), _odd_owner(i))
)


@st.composite
def _message(draw: st.DrawFn) -> dict[str, Any]:
    owner = draw(_owners)
    doc = {} if owner is _MISSING else {"instanceId": owner}
    for field, strategy in _FIELDS.items():
        value = draw(strategy)
        if value is not _MISSING:
            doc[field] = value
    return doc


_selections = st.lists(
    st.tuples(st.sampled_from(INSTANCE_IDS[:3]), st.booleans()), min_size=1, max_size=4
)


def _as_contract(result: MetricsResult) -> dict[str, Any]:
    return {
        "totalMessages": result.total_messages,
        "messagesSent": result.messages_sent,
        "messagesReceived": result.messages_received,
        "groupMessages": result.group_messages,
        "individualMessages": result.individual_messages,
        "messagesWithMedia": result.messages_with_media,
        "messagesByType": result.messages_by_type,
        "mediaByType": result.media_by_type,
        "messagesByStatus": result.messages_by_status,
        "uniqueChats": result.unique_chats,
        "uniqueGroups": result.unique_groups,
        "uniqueContacts": result.unique_contacts,
        "messagesLast7Days": result.messages_last_7_days,
        "messagesLast30Days": result.messages_last_30_days,
        "firstMessageAt": result.first_message_at,
        "lastMessageAt": result.last_message_at,
    }


@settings(
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(docs=st.lists(_message(), max_size=40), selection=_selections)
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
    assert _as_contract(result) == expected


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
