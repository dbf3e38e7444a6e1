"""The pure pipeline builders, without a database."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from resolvers import InstanceRef, build_metrics_pipeline
from resolvers.pipeline import (
    KNOWN_STATUSES,
    KNOWN_TYPES,
    build_range_pipeline,
    empty_metrics,
    read_metrics,
)
from resolvers.timeranges import TimeRange
from tests.factories import NOW

A, B = ObjectId(), ObjectId()


def test_match_selects_instances_by_the_in_alone_then_drops_array_ids() -> None:
    refs = [InstanceRef(A, "a", False), InstanceRef(B, "b", False)]
    first, second = build_metrics_pipeline(instances=refs, now=NOW)[:2]
    assert first == {"$match": {"instanceId": {"$in": [A, B]}}}
    assert second == {"$match": {"$expr": {"$and": [{"$ne": [{"$type": "$instanceId"}, "array"]}]}}}


def test_match_drops_group_messages_only_of_ignoring_instances() -> None:
    refs = [InstanceRef(A, "a", True), InstanceRef(B, "b", False)]
    second = build_metrics_pipeline(instances=refs, now=NOW)[1]["$match"]["$expr"]["$and"]
    ignored = {"$and": [{"$in": ["$instanceId", [A]]}, {"$eq": ["$isGroup", True]}]}
    assert second[1:] == [{"$not": [ignored]}]


def test_recent_windows_start_seven_and_thirty_days_before_now() -> None:
    pipeline = build_metrics_pipeline(instances=[InstanceRef(A, "a", False)], now=NOW)
    text = repr(pipeline)
    assert repr(NOW - timedelta(days=7)) in text
    assert repr(NOW - timedelta(days=30)) in text


def test_pipeline_is_one_facet_after_the_matches() -> None:
    pipeline = build_metrics_pipeline(instances=[InstanceRef(A, "a", False)], now=NOW)
    assert [next(iter(stage)) for stage in pipeline] == ["$match", "$match", "$facet"]


def test_read_metrics_lists_known_keys_first_then_others_by_name() -> None:
    facets = {
        "byType": [
            {"_id": "zeta", "count": 1},
            {"_id": "text", "count": 4},
            {"_id": "alpha", "count": 2},
        ]
    }
    by_type = read_metrics(facets).messages_by_type
    assert list(by_type) == [*KNOWN_TYPES, "alpha", "zeta"]
    assert by_type["text"] == 4 and by_type["image"] == 0 and by_type["alpha"] == 2


def test_empty_metrics_are_zero_with_every_known_key() -> None:
    empty = empty_metrics()
    assert empty.total_messages == 0 and empty.unique_contacts == 0
    assert empty.messages_by_status == dict.fromkeys(KNOWN_STATUSES, 0)
    assert empty.first_message_at is None and empty.last_message_at is None


def test_a_range_is_matched_by_an_equality_and_a_range_alone_then_the_odd_cases() -> None:
    """SecantusDB serves only that first stage from the instanceId + timestamp index."""
    span = TimeRange(NOW - timedelta(days=30), NOW)
    pipeline = build_range_pipeline(instance=InstanceRef(A, "a", True), now=NOW, range=span)
    first, second = pipeline[0]["$match"], pipeline[1]["$match"]
    assert first == {"instanceId": A, "timestamp": {"$gte": span.start, "$lt": span.end}}
    assert list(second) == ["$expr"]
    assert {"$not": [{"$eq": ["$isGroup", True]}]} in second["$expr"]["$and"]


def test_unique_counts_can_be_left_out() -> None:
    pipeline = build_metrics_pipeline(instances=[InstanceRef(A, "a", False)], now=NOW, unique=False)
    assert set(pipeline[-1]["$facet"]) == {"totals", "byType", "byStatus", "mediaByType"}
    assert read_metrics({}).unique_chats == 0
