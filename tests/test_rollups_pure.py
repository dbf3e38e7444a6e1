"""The pure core of the rollups: contribution rules, field names, time buckets, delta
algebra and the first/last rule, without a database."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

from bson import ObjectId
from hypothesis import given
from hypothesis import strategies as st

from resolvers.rollups.changes import Changes, next_extreme
from resolvers.rollups.contribution import contribution
from resolvers.rollups.keys import (
    Level,
    ceil_to,
    cover,
    decode_key,
    encode_key,
    floor_to,
    part_index,
)
from resolvers.rollups.read import count_since, window
from tests.factories import NOW
from tests.reference import one_instance
from tests.strategies import INSTANCE_IDS, messages

A = INSTANCE_IDS[0]
T = datetime(2026, 11, 20, 10, 7, 30, tzinfo=UTC)


def _doc(**fields: Any) -> dict[str, Any]:
    base = {"instanceId": A, "chatId": "a@s.whatsapp.net", "isGroup": False, "fromMe": False}
    return {**base, "type": "text", "status": "read", "timestamp": T, **fields}


# --- contribution rules -------------------------------------------------------------


def test_received_one_to_one_text_counts_chat_and_contact() -> None:
    part = contribution(_doc())
    assert part is not None
    assert (part.instance, part.flag, part.timestamp) == (A, "o", T)
    assert sorted(part.counters) == ["i", "n", "r", "st.read", "t.text"]
    assert part.values == {("chat", "a@s.whatsapp.net"), ("contact", "a@s.whatsapp.net")}


def test_received_group_message_counts_the_group_and_its_sender() -> None:
    part = contribution(_doc(chatId="g@g.us", isGroup=True, sender="b@s.whatsapp.net"))
    assert part is not None and part.flag == "g"
    assert sorted(part.counters) == ["n", "r", "st.read", "t.text"]
    assert part.values == {("chat", "g@g.us"), ("group", "g@g.us"), ("contact", "b@s.whatsapp.net")}


def test_sent_group_message_has_no_contact() -> None:
    part = contribution(_doc(chatId="g@g.us", isGroup=True, fromMe=True, sender="b@x"))
    assert part is not None
    assert part.values == {("chat", "g@g.us"), ("group", "g@g.us")}
    assert "s" in part.counters and "r" not in part.counters


def test_booleans_count_only_when_they_are_booleans() -> None:
    part = contribution(_doc(isGroup="true", fromMe=1))
    assert part is not None and part.flag == "o"
    assert sorted(part.counters) == ["n", "st.read", "t.text"]
    assert part.values == {("chat", "a@s.whatsapp.net")}


def test_odd_keys_count_as_unknown_and_media_only_as_an_object() -> None:
    for odd in (None, "", 3, ["text"]):
        part = contribution(_doc(type=odd, status=odd, media={"size": 1}))
        assert part is not None
        assert {"t.unknown", "st.unknown", "m", "mt.unknown"} <= set(part.counters)
    for not_media in (None, "image", [{"type": "image"}], 3):
        part = contribution(_doc(media=not_media))
        assert part is not None and "m" not in part.counters


def test_keys_become_safe_field_names() -> None:
    part = contribution(_doc(type="a.b", status="$set", media={"type": "50%"}))
    assert part is not None
    assert {"t.a%2Eb", "st.%24set", "mt.50%25"} <= set(part.counters)


def test_only_a_date_is_a_timestamp_kept_to_the_millisecond() -> None:
    for odd in ("2026-11-20T00:00:00Z", 1_700_000_000, [T], None):
        part = contribution(_doc(timestamp=odd))
        assert part is not None and part.timestamp is None
    part = contribution(_doc(timestamp=T.replace(microsecond=123_456)))
    assert part is not None and part.timestamp == T.replace(microsecond=123_000)


def test_only_an_object_id_instance_counts() -> None:
    for odd in ([A], str(A), None):
        assert contribution(_doc(instanceId=odd)) is None
    doc = _doc()
    del doc["instanceId"]
    assert contribution(doc) is None
    assert contribution(None) is None


def test_empty_or_odd_chat_and_sender_are_no_values() -> None:
    part = contribution(_doc(chatId="", isGroup=True, sender=5))
    assert part is not None and part.values == frozenset()


def _summary(changes: Changes, instance: ObjectId, *, ignore: bool) -> dict[str, Any]:
    """The metrics the counters and values of ``changes`` stand for (windows left out)."""
    flags = ("o",) if ignore else ("o", "g")
    counters = changes.instance_counters().get(instance, {})

    def total(name: str) -> int:
        return sum(counters.get(f"{flag}.{name}", 0) for flag in flags)

    def by(prefix: str) -> Counter[str]:
        found: Counter[str] = Counter()
        for path, count in counters.items():
            flag, _, rest = path.partition(".")
            if flag in flags and rest.startswith(prefix + "."):
                found[decode_key(rest[len(prefix) + 1 :])] += count
        return found

    def unique(kind: str) -> int:
        values = changes.value_counts().items()
        return sum(
            1
            for (i, k, _), n in values
            if (i, k) == (instance, kind) and sum(n.get(f, 0) for f in flags) > 0
        )

    times = [
        moment
        for flag in flags
        for moment, net in changes.timestamps().get((instance, flag), {}).items()
        if net > 0
    ]
    return {
        "totalMessages": total("n"),
        "messagesSent": total("s"),
        "messagesReceived": total("r"),
        "groupMessages": 0 if ignore else counters.get("g.n", 0),
        "individualMessages": total("i"),
        "messagesWithMedia": total("m"),
        "messagesByType": by("t"),
        "mediaByType": by("mt"),
        "messagesByStatus": by("st"),
        "uniqueChats": unique("chat"),
        "uniqueGroups": unique("group"),
        "uniqueContacts": unique("contact"),
        "firstMessageAt": min(times, default=None),
        "lastMessageAt": max(times, default=None),
    }


@given(docs=st.lists(messages(), max_size=30), ignore=st.booleans())
def test_folded_contributions_are_the_reference_metrics(
    docs: list[dict[str, Any]], ignore: bool
) -> None:
    changes = Changes()
    for doc in docs:
        changes.add(before=None, after=doc)
    for instance in INSTANCE_IDS:
        expected = one_instance(docs, instance_id=instance, ignore_groups=ignore, now=NOW)
        for name in ("messagesLast7Days", "messagesLast30Days"):
            del expected[name]
        assert _summary(changes, instance, ignore=ignore) == expected


# --- field names --------------------------------------------------------------------


@given(key=st.text())
def test_encoding_a_key_round_trips(key: str) -> None:
    field = encode_key(key)
    assert decode_key(field) == key
    assert not {".", "$", "\x00"} & set(field)


def test_encoding_leaves_plain_keys_alone_and_escapes_by_hand() -> None:
    assert encode_key("delivered") == "delivered"
    assert encode_key("a.b$%\x00") == "a%2Eb%24%25%00"
    assert decode_key("100%252E") == "100%2E"


# --- time buckets -------------------------------------------------------------------


def test_buckets_floor_and_ceil_in_utc_also_before_1970() -> None:
    assert floor_to(T, Level.QUARTER) == datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    assert ceil_to(T, Level.QUARTER) == datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    assert floor_to(T, Level.DAY) == datetime(2026, 11, 20, tzinfo=UTC)
    old = datetime(1969, 12, 31, 23, 59, 59, 999_000, tzinfo=UTC)
    assert floor_to(old, Level.HOUR) == datetime(1969, 12, 31, 23, tzinfo=UTC)
    assert ceil_to(old, Level.DAY) == datetime(1970, 1, 1, tzinfo=UTC)
    edge = datetime(2026, 11, 20, 10, 15, tzinfo=UTC)
    assert ceil_to(edge, Level.QUARTER) == edge == floor_to(edge, Level.QUARTER)


_QUARTER_MS = 900_000
_moments = st.builds(
    lambda quarters, offset: NOW + timedelta(milliseconds=quarters * _QUARTER_MS + offset),
    st.integers(-400, 400),
    st.sampled_from([0, 0, 1, -1, 450_000, 899_999]),
)


def _pieces(part: Any) -> list[tuple[datetime, datetime | None]]:
    pieces: list[tuple[datetime, datetime | None]] = list(part.raw)
    pieces += [(start, start + Level.QUARTER.width) for start in part.quarters]
    pieces += [(start, start + Level.HOUR.width) for start in part.hours]
    if part.days_from is not None:
        pieces.append((part.days_from, part.days_to))
    return sorted(pieces, key=lambda piece: piece[0])


@given(start=_moments, end=st.none() | _moments)
def test_cover_splits_an_interval_into_aligned_buckets_without_gap_or_overlap(
    start: datetime, end: datetime | None
) -> None:
    part = cover(start, end)
    pieces = _pieces(part)
    if end is not None and end <= start:
        assert pieces == []
        return
    assert pieces[0][0] == start
    for (_, previous_end), (next_start, _) in pairwise(pieces):
        assert previous_end == next_start
    assert pieces[-1][1] == end
    assert all(high - low < Level.QUARTER.width for low, high in part.raw)
    assert all(floor_to(q, Level.QUARTER) == q for q in part.quarters)
    assert all(floor_to(h, Level.HOUR) == h for h in part.hours)
    assert part.days_from is None or floor_to(part.days_from, Level.DAY) == part.days_from
    assert len(part.raw) <= 2 and len(part.quarters) <= 6 and len(part.hours) <= 46


def test_cover_of_a_window_from_a_quarter_boundary_reads_no_raw_messages() -> None:
    part = cover(datetime(2026, 11, 18, 12, 15, tzinfo=UTC))
    assert part.raw == ()
    assert len(part.quarters) == 3 and len(part.hours) == 11
    assert part.days_from == datetime(2026, 11, 19, tzinfo=UTC) and part.days_to is None


def _bucket_docs(times: list[datetime], level: Level) -> dict[datetime, dict[str, Any]]:
    """Bucket documents of ``level`` for messages of flag o at ``times``, by brute force:
    ``c.o.n`` and, per finer bucket, ``n.<index>.o``."""
    docs: dict[datetime, dict[str, Any]] = {}
    finer = level.finer
    assert finer is not None
    for moment in times:
        doc = docs.setdefault(floor_to(moment, level), {"c": {"o": {"n": 0}}, "n": {}})
        doc["c"]["o"]["n"] += 1
        part = doc["n"].setdefault(str(part_index(floor_to(moment, finer), level)), {"o": 0})
        part["o"] += 1
    return docs


@given(
    cutoff=_moments,
    offsets=st.lists(
        st.integers(-40 * 86_400_000, 3 * 86_400_000) | st.sampled_from([0, 1, -1, 899_999]),
        max_size=40,
    ),
)
def test_a_window_counts_from_buckets_what_a_scan_counts(
    cutoff: datetime, offsets: list[int]
) -> None:
    plan = window(cutoff)
    times = [plan.cutoff + timedelta(milliseconds=offset) for offset in offsets]
    raw = 0
    if plan.raw is not None:
        low, high = plan.raw
        raw = sum(1 for moment in times if low <= moment < high)

    got = count_since(
        plan,
        months=_bucket_docs(times, Level.MONTH),
        day=_bucket_docs(times, Level.DAY).get(plan.day),
        hour=_bucket_docs(times, Level.HOUR).get(plan.hour),
        raw=raw,
        flag="o",
    )

    assert got == sum(1 for moment in times if moment >= plan.cutoff)
    assert plan.raw is None or plan.raw[1] - plan.raw[0] <= timedelta(minutes=7, seconds=30)


def test_months_start_on_the_first_and_cut_into_days() -> None:
    assert floor_to(T, Level.MONTH) == datetime(2026, 11, 1, tzinfo=UTC)
    assert ceil_to(T, Level.MONTH) == datetime(2026, 12, 1, tzinfo=UTC)
    december = datetime(2026, 12, 31, 23, tzinfo=UTC)
    assert ceil_to(december, Level.MONTH) == datetime(2027, 1, 1, tzinfo=UTC)
    assert part_index(datetime(2026, 12, 31, tzinfo=UTC), Level.MONTH) == 30
    assert part_index(datetime(2026, 12, 31, 23, tzinfo=UTC), Level.DAY) == 23
    assert part_index(datetime(2026, 12, 31, 23, 45, tzinfo=UTC), Level.HOUR) == 3


# --- delta algebra ------------------------------------------------------------------

_states = st.none() | messages()


@given(first=_states, second=_states, third=_states)
def test_two_steps_add_up_to_one(
    first: dict[str, Any] | None, second: dict[str, Any] | None, third: dict[str, Any] | None
) -> None:
    stepwise, direct = Changes(), Changes()
    stepwise.add(before=first, after=second)
    stepwise.add(before=second, after=third)
    direct.add(before=first, after=third)
    assert stepwise == direct


@given(doc=messages())
def test_a_delete_cancels_its_insert_to_nothing(doc: dict[str, Any]) -> None:
    changes = Changes()
    changes.add(before=None, after=doc)
    changes.add(before=doc, after=None)
    assert changes == Changes()
    assert changes.instances == frozenset()
    # its days and hours stay marked: a value set read in between would hold its values
    part = contribution(doc)
    held = part is not None and part.timestamp is not None and bool(part.values)
    assert changes.is_empty() is not held


@given(docs=st.lists(messages(), max_size=20), data=st.data())
def test_a_fold_of_inserts_does_not_depend_on_their_order(
    docs: list[dict[str, Any]], data: st.DataObject
) -> None:
    forward, shuffled = Changes(), Changes()
    for doc in docs:
        forward.add(before=None, after=doc)
    for doc in data.draw(st.permutations(docs)):
        shuffled.add(before=None, after=doc)
    assert forward == shuffled


def test_a_status_update_moves_only_the_status_counters() -> None:
    changes = Changes()
    changes.add(before=_doc(status="sent"), after=_doc(status="read", updatedAt=NOW))
    assert changes.instance_counters() == {A: {"o.st.sent": -1, "o.st.read": 1}}
    for level in Level:
        key = (A, floor_to(T, level))
        assert changes.bucket_counters(level) == {key: {"o.st.sent": -1, "o.st.read": 1}}
    assert changes.value_counts() == {} and changes.timestamps() == {}
    assert changes.instances == {A}
    assert all(not changes.value_marks(level) for level in Level)  # kept value sets hold


def _marks(before: dict[str, Any] | None, after: dict[str, Any] | None) -> dict[Level, set[Any]]:
    changes = Changes()
    changes.add(before=before, after=after)
    return {level: set(changes.value_marks(level)) for level in Level}


def _days_and_hours(*moments: datetime) -> dict[Level, set[Any]]:
    marked = {level: set() for level in Level}
    for moment in moments:
        marked[Level.DAY].add((A, moment.replace(hour=0, minute=0, second=0)))
        marked[Level.HOUR].add((A, moment.replace(minute=0, second=0)))
    return marked


def test_a_new_chat_marks_the_messages_day_and_hour_though_no_count_changes() -> None:
    changes = Changes()
    changes.add(before=_doc(), after=_doc(chatId="b@s.whatsapp.net"))
    assert all(not changes.bucket_counters(level) for level in Level)
    assert _marks(_doc(), _doc(chatId="b@s.whatsapp.net")) == _days_and_hours(T)


def test_moving_a_message_marks_the_days_and_hours_it_leaves_and_enters() -> None:
    later = datetime(2026, 11, 22, 15, 0, tzinfo=UTC)
    assert _marks(_doc(), _doc(timestamp=later)) == _days_and_hours(T, later)
    # within its hour its values stay where they were
    assert _marks(_doc(), _doc(timestamp=T + timedelta(seconds=5))) == _days_and_hours()


def test_a_message_turning_into_a_group_message_marks_its_values() -> None:
    group = _doc(isGroup=True, chatId="g@g.us", sender="a@s.whatsapp.net")
    assert _marks(_doc(chatId="g@g.us", sender="a@s.whatsapp.net"), group) == _days_and_hours(T)


def test_messages_without_values_or_date_mark_nothing() -> None:
    assert _marks(None, _doc(chatId=None)) == _days_and_hours()
    assert _marks(_doc(timestamp="2026-11-20"), None) == _days_and_hours()
    assert _marks(None, _doc()) == _days_and_hours(T)


def test_a_chat_change_touches_the_instance_through_its_values_alone() -> None:
    changes = Changes()
    changes.add(before=_doc(), after=_doc(chatId="b@s.whatsapp.net"))
    assert changes.instance_counters() == {}
    assert changes.instances == {A}


def test_an_undated_message_counts_for_its_instance_but_no_bucket() -> None:
    changes = Changes()
    changes.add(before=None, after=_doc(timestamp="yesterday"))
    assert changes.instance_counters()[A]["o.n"] == 1
    assert all(changes.bucket_counters(level) == {} for level in Level)
    assert changes.timestamps() == {}


# --- first and last -----------------------------------------------------------------

_stamps = st.integers(0, 20).map(lambda minutes: T + timedelta(minutes=minutes))


@given(
    old=st.lists(_stamps, max_size=8),
    added=st.lists(_stamps, max_size=4),
    data=st.data(),
    lowest=st.booleans(),
)
def test_next_extreme_is_right_or_asks_to_look_again(
    old: list[datetime], added: list[datetime], data: st.DataObject, lowest: bool
) -> None:
    gone = data.draw(st.sets(st.integers(0, len(old) - 1))) if old else set()
    removed = [old[index] for index in gone]
    remaining = Counter(old)
    remaining.subtract(Counter(removed))
    remaining.update(added)
    times: Counter[datetime] = Counter(added)
    times.subtract(Counter(removed))
    pick = min if lowest else max
    stored = pick(old, default=None)

    known, value = next_extreme(
        stored=stored, times={t: n for t, n in times.items() if n}, lowest=lowest
    )

    if known:
        assert value == pick(remaining.elements(), default=None)


def test_removing_the_first_message_asks_to_look_again_and_a_later_one_does_not() -> None:
    later = T + timedelta(hours=1)
    assert next_extreme(stored=T, times={T: -1}, lowest=True) == (False, None)
    assert next_extreme(stored=T, times={later: -1}, lowest=True) == (True, T)
    assert next_extreme(stored=later, times={later: -1, T: 1}, lowest=False) == (False, None)
    assert next_extreme(stored=None, times={T: 1}, lowest=False) == (True, T)
