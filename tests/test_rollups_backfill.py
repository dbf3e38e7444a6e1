"""Building while messages change (pure): one read plus the events around it leaves the
rollups equal to a fold of the messages' final states over every built key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.rollups.backfill import (
    Days,
    Listing,
    Ranging,
    Step,
    Undated,
    Window,
    next_span,
    route,
)
from resolvers.rollups.changes import Changes
from resolvers.rollups.events import DocumentChange
from resolvers.rollups.state import Build, InstanceProgress, message_key

A, B = ObjectId(f"{1:024x}"), ObjectId(f"{2:024x}")
DAY = timedelta(days=1)
D0 = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = [D0 + n * DAY for n in range(5)]

_states = st.fixed_dictionaries(
    {
        "instanceId": st.sampled_from([A, A, B, [A]]),
        "timestamp": st.one_of(
            st.sampled_from(DAYS).map(lambda day: day + timedelta(hours=13)),
            st.sampled_from(["2026-11-02", None]),
        ),
        "status": st.sampled_from(["read", "sent"]),
        "isGroup": st.booleans(),
    }
)


@dataclass
class Scenario:
    """Messages before a read, the writes during its window, and what the read saw."""

    initial: dict[int, dict[str, Any] | None]
    events: list[tuple[int, dict[str, Any] | None, dict[str, Any] | None]]
    observed: dict[int, dict[str, Any] | None]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    ids = range(6)
    initial = {i: draw(st.one_of(st.none(), _states)) for i in ids}
    current = {i: (None if doc is None else {"_id": i, **doc}) for i, doc in initial.items()}
    history: dict[int, list[dict[str, Any] | None]] = {i: [current[i]] for i in ids}
    events = []
    for _ in range(draw(st.integers(0, 12))):
        i = draw(st.sampled_from(list(ids)))
        new = draw(st.one_of(st.none(), _states))
        after = None if new is None else {"_id": i, **new}
        if current[i] is None and after is None:
            continue
        events.append((i, current[i], after))
        current[i] = after
        history[i].append(after)
    # a read meets a message that changes during the window in any of its states, or
    # misses it; one that does not change, it meets as it is
    observed = {
        i: states[0] if len(states) == 1 else draw(st.sampled_from([*states, None]))
        for i, states in history.items()
    }
    start = {i: (None if doc is None else {"_id": i, **doc}) for i, doc in initial.items()}
    return Scenario(initial=start, events=events, observed=observed)


def _read(step_kind: str, scenario: Scenario) -> tuple[Build, Step]:
    """A build before the read and the step a real read would produce from ``observed``."""
    seen = [doc for doc in scenario.observed.values() if doc is not None]
    keys = [key for doc in seen if (key := message_key(doc)) is not None]
    if step_kind == "listing":
        return Build(), Listing(tuple(sorted({instance for instance, _ in keys}, key=str)))
    listed = Build(listed=(A, B))
    if step_kind == "ranging":
        days = [day for instance, day in keys if instance == A and day is not None]
        undated = any(instance == A and day is None for instance, day in keys)
        return listed, Ranging(A, min(days, default=None), max(days, default=None), undated)
    ranged = InstanceProgress(ranged=True, low=DAYS[0], high=DAYS[4])
    if step_kind == "undated":
        return listed.with_progress(A, ranged), Undated(A)
    progress = InstanceProgress(ranged=True, low=DAYS[0], high=DAYS[4], undated=True)
    build = listed.with_progress(A, InstanceProgress(**{**_fields(progress), "next_day": DAYS[1]}))
    return build, Days(A, DAYS[1], DAYS[3])


def _fields(progress: InstanceProgress) -> dict[str, Any]:
    return {name: getattr(progress, name) for name in progress.__slots__}


def _fold(docs: list[dict[str, Any] | None], build: Build) -> Changes:
    changes = Changes()
    for doc in docs:
        key = message_key(doc)
        if key is not None and build.built(key):
            changes.add(before=None, after=doc)
    return changes


@settings(max_examples=400, deadline=None)
@given(scenario=scenarios(), step_kind=st.sampled_from(["listing", "ranging", "undated", "days"]))
def test_a_read_corrected_by_its_window_equals_a_fold_of_final_states(
    scenario: Scenario, step_kind: str
) -> None:
    build, step = _read(step_kind, scenario)
    docs = [doc for doc in scenario.observed.values() if doc is not None]
    window = Window(step, [doc for doc in docs if _covered(step, doc)])
    # the rollups before the window: every built key holds its messages as they were
    rollups = _fold(list(scenario.initial.values()), build)
    for doc_id, before, after in scenario.events:
        change = DocumentChange(before=before, after=after)
        route(changes=rollups, change=change, doc_id=doc_id, build=build, window=window)
    window.fold(rollups)

    final = dict(scenario.initial)
    for doc_id, _, after in scenario.events:
        final[doc_id] = after
    assert rollups == _fold(list(final.values()), step.advance(build))


def _covered(step: Step, doc: dict[str, Any]) -> bool:
    key = message_key(doc)
    return key is not None and step.covers(key)


def test_ready_rollups_take_every_event_as_a_delta() -> None:
    changes = Changes()
    before = {"instanceId": A, "timestamp": DAYS[0], "status": "read"}
    after = {**before, "status": "sent"}
    route(
        changes=changes,
        change=DocumentChange(before=before, after=after),
        doc_id=1,
        build=None,
        window=None,
    )
    expected = Changes()
    expected.add(before=before, after=after)
    assert changes == expected and not changes.is_empty()


def test_steps_cover_what_they_say() -> None:
    assert Listing((A,)).covers((B, DAYS[0])) and not Listing((A,)).covers((A, None))
    ranging = Ranging(A, DAYS[1], DAYS[3], has_undated=True)
    assert ranging.covers((A, DAYS[0])) and ranging.covers((A, DAYS[4]))
    assert not ranging.covers((A, DAYS[2])) and not ranging.covers((A, None))
    assert Ranging(A, None, None, has_undated=False).covers((A, None))
    assert Days(A, DAYS[1], DAYS[3]).covers((A, DAYS[2]))
    assert not Days(A, DAYS[1], DAYS[3]).covers((A, DAYS[3]))
    assert Undated(A).covers((A, None)) and not Undated(A).covers((B, None))


def test_day_span_grows_on_small_reads_and_shrinks_on_large_ones() -> None:
    assert next_span(span_days=4, read=10, target=2000) == 8
    assert next_span(span_days=64, read=0, target=2000) == 64
    assert next_span(span_days=4, read=5000, target=2000) == 2
    assert next_span(span_days=1, read=5000, target=2000) == 1
    assert next_span(span_days=4, read=1500, target=2000) == 4
