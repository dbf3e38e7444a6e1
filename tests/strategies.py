"""Hypothesis strategies for message documents, odd ones included (shared by the
property tests of the full-scan pipeline and of the rollups)."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from bson import ObjectId
from hypothesis import strategies as st

from resolvers import MetricsResult
from tests.factories import NOW
from tests.reference import KNOWN_STATUSES, KNOWN_TYPES

INSTANCE_IDS = [ObjectId(f"{n:024x}") for n in range(1, 5)]

MISSING = object()
"""A field value that means: leave the field out."""


def maybe(strategy: st.SearchStrategy[Any], *odd: Any) -> st.SearchStrategy[Any]:
    """Mostly ``strategy``; sometimes missing, null or a value of the wrong type."""
    return st.one_of(strategy, strategy, strategy, st.sampled_from([MISSING, None, *odd]))


_millis = st.integers(min_value=-100 * 86_400_000, max_value=86_400_000)
DATES = _millis.map(lambda ms: NOW + timedelta(milliseconds=ms))
_edges = st.sampled_from([NOW - timedelta(days=7), NOW - timedelta(days=30), NOW])
_DEFAULT_DATES = st.one_of(DATES, _edges)
_names = st.sampled_from(
    [*KNOWN_TYPES, *KNOWN_STATUSES, "ephemeral", "unknown", "", "Text", "a.b", "$x", "50%"]
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

FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "chatId": maybe(_jids, 42, ["a@s.whatsapp.net"]),
    "isGroup": maybe(st.booleans(), 1, "true", [True]),
    "fromMe": maybe(st.booleans(), 0, "false", [False]),
    "sender": maybe(_jids, 5, ["b@s.whatsapp.net"]),
    "type": maybe(_names, 3, True, ["text"]),
    "status": maybe(_names, 2.5),
    "media": st.one_of(_media, st.just(MISSING)),
}


def timestamps(dates: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly ``dates``; sometimes missing, null, a string, a number or an array of a date."""
    return maybe(dates, "2026-11-20T00:00:00Z", 1_700_000_000, [NOW - timedelta(days=1)])


def _odd_owner(instance_id: ObjectId) -> st.SearchStrategy[Any]:
    """Not an ObjectId, yet close to one: such a message counts for no instance."""
    return st.sampled_from(
        [[instance_id], [instance_id, INSTANCE_IDS[-1]], str(instance_id), MISSING, None]
    )


# mostly an ObjectId; sometimes an array holding it, its string, missing or null
_owners = st.sampled_from(INSTANCE_IDS).flatmap(
    lambda i: st.one_of(st.just(i), st.just(i), st.just(i), st.just(i), _odd_owner(i))
)


@st.composite
def messages(draw: st.DrawFn, dates: st.SearchStrategy[Any] = _DEFAULT_DATES) -> dict[str, Any]:
    """One message document; ``dates`` gives its timestamp when it is a date."""
    owner = draw(_owners)
    doc = {} if owner is MISSING else {"instanceId": owner}
    for field, strategy in {**FIELDS, "timestamp": timestamps(dates)}.items():
        value = draw(strategy)
        if value is not MISSING:
            doc[field] = value
    return doc


selections = st.lists(
    st.tuples(st.sampled_from(INSTANCE_IDS[:3]), st.booleans()), min_size=1, max_size=4
)
"""Instances to ask for, with ignoreGroupMessages (the first mention of an id wins)."""


def as_contract(result: MetricsResult) -> dict[str, Any]:
    """A ``MetricsResult`` under the contract's field names (as the reference returns)."""
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


_MS = timedelta(milliseconds=1)


def near(marks: list[Any]) -> st.SearchStrategy[Any]:
    """One of ``marks``, or a millisecond either side of it."""
    return st.sampled_from(marks).flatmap(
        lambda mark: st.sampled_from([mark, mark, mark - _MS, mark + _MS])
    )


@st.composite
def time_ranges(draw: st.DrawFn, marks: st.SearchStrategy[Any]) -> tuple[Any, Any]:
    """``(from, to)`` with ``from <= to``, each end drawn from ``marks`` (sometimes the
    two are equal: an empty range)."""
    low, high = sorted([draw(marks), draw(marks)])
    return (low, low) if draw(st.integers(0, 9)) == 0 else (low, high)
