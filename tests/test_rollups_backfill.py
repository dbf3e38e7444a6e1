"""Building while messages change (pure): one read plus the events around it leaves the
rollups equal to a fold of the messages' final states over every built key, and the
sweep reads every dated message exactly once, a bounded number at a time."""

from __future__ import annotations

import bisect
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.rollups.backfill import (
    Listing,
    Span,
    Start,
    Step,
    Sweep,
    Undated,
    Window,
    estimate,
    route,
)
from resolvers.rollups.changes import Changes
from resolvers.rollups.events import DocumentChange
from resolvers.rollups.keys import Level
from resolvers.rollups.state import Build, InstanceProgress, message_key

A, B = ObjectId(f"{1:024x}"), ObjectId(f"{2:024x}")
DAY, MS = timedelta(days=1), timedelta(milliseconds=1)
D0 = datetime(2026, 11, 1, tzinfo=UTC)
DAYS = [D0 + n * DAY for n in range(5)]

_states = st.fixed_dictionaries(
    {
        "instanceId": st.sampled_from([A, A, B, [A]]),
        "timestamp": st.one_of(
            st.sampled_from(DAYS).map(lambda day: day + timedelta(hours=13)),
            st.sampled_from([DAYS[3], "2026-11-02", None]),
        ),
        "status": st.sampled_from(["read", "sent"]),
        "isGroup": st.booleans(),
        "chatId": st.sampled_from(["a@s.whatsapp.net", "b@s.whatsapp.net", None]),
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


_LISTED = Build(listed=(A, B))
_STARTED = InstanceProgress(low=DAYS[2], high=DAYS[2], estimate=9)
_MIDDLE = InstanceProgress(low=DAYS[1], high=DAYS[3], undated=True)
_UPPED = InstanceProgress(low=DAYS[1], high=DAYS[3], undated=True, above=True)
STEPS: dict[str, tuple[Build, Step]] = {
    "start": (_LISTED, Start(A, DAYS[2], 9)),
    "undated": (_LISTED.with_progress(A, _STARTED), Undated(A)),
    "up": (_LISTED.with_progress(A, _MIDDLE), Span(A, DAYS[3], DAYS[4], downward=False)),
    "up to the end": (_LISTED.with_progress(A, _MIDDLE), Span(A, DAYS[3], None, downward=False)),
    "down": (_LISTED.with_progress(A, _UPPED), Span(A, DAYS[0], DAYS[1], downward=True)),
    "down to the start": (_LISTED.with_progress(A, _UPPED), Span(A, None, DAYS[1], downward=True)),
}


def _read(step_kind: str, scenario: Scenario) -> tuple[Build, Step]:
    """A build before the read and the step a real read would produce from ``observed``."""
    if step_kind == "listing":
        seen = [doc for doc in scenario.observed.values() if doc is not None]
        keys = [key for doc in seen if (key := message_key(doc)) is not None]
        return Build(), Listing(tuple(sorted({instance for instance, _ in keys}, key=str)))
    return STEPS[step_kind]


def _fold(docs: list[dict[str, Any] | None], build: Build) -> Changes:
    changes = Changes()
    for doc in docs:
        key = message_key(doc)
        if key is not None and build.built(key):
            changes.add(before=None, after=doc)
    return changes


def _total(*parts: Changes) -> dict[str, Counter[Any]]:
    """The sum of several changes, entry by entry (what writing them all adds up to)."""
    total: dict[str, Counter[Any]] = {
        "i": Counter(),
        "b": Counter(),
        "v": Counter(),
        "t": Counter(),
    }
    for part in parts:
        for instance, counters in part.instance_counters().items():
            total["i"].update({(instance, path): n for path, n in counters.items()})
        for level in Level:
            for key, counters in part.bucket_counters(level).items():
                total["b"].update({(level, key, path): n for path, n in counters.items()})
        for value, flags in part.value_counts().items():
            total["v"].update({(value, flag): n for flag, n in flags.items()})
        for owner, times in part.timestamps().items():
            total["t"].update({(owner, moment): n for moment, n in times.items()})
    return {name: Counter({k: n for k, n in c.items() if n}) for name, c in total.items()}


def _saved_before(step_kind: str, build: Build, choice: int) -> Build:
    """What is written when the read starts: the build itself or less (its instance's
    reads so far still in memory)."""
    options = [build] if build.listed is None else [build, _LISTED]
    return options[choice % len(options)]


@settings(max_examples=400, deadline=None)
@given(
    scenario=scenarios(),
    step_kind=st.sampled_from(["listing", *STEPS]),
    choice=st.integers(0, 1),
)
def test_a_read_corrected_by_its_window_equals_a_fold_of_final_states(
    scenario: Scenario, step_kind: str, choice: int
) -> None:
    build, step = _read(step_kind, scenario)
    saved = _saved_before(step_kind, build, choice)
    docs = [doc for doc in scenario.observed.values() if doc is not None]
    window = Window(step, [doc for doc in docs if _covered(step, doc)])
    initial = list(scenario.initial.values())
    # before the window, the saved keys are written; the keys built since are in memory
    written, now, pending = _fold(initial, saved), Changes(), Changes()
    for doc in initial:
        key = message_key(doc)
        if key is not None and build.built(key) and not saved.built(key):
            pending.add(before=None, after=doc)
    for doc_id, before, after in scenario.events:
        change = DocumentChange(before=before, after=after)
        route(
            changes=now,
            change=change,
            doc_id=doc_id,
            build=build,
            window=window,
            saved=saved,
            deferred=pending,
        )
    folded = Changes()  # the consumer's is adds-only: same sums, fewer timestamps
    window.fold(folded)

    final = dict(scenario.initial)
    for doc_id, _, after in scenario.events:
        final[doc_id] = after
    # what is written stays exact for the saved keys; written with the rest, for all
    assert _total(written, now) == _total(_fold(list(final.values()), saved))
    expected = _fold(list(final.values()), window.advance(build))
    assert _total(written, now, pending, folded) == _total(expected)


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


def test_once_all_is_read_events_on_keys_not_written_yet_wait_for_them() -> None:
    """The build is done in memory (``build`` None) while its last reads are written: an
    event on those keys waits with them; one on keys already written is a delta now."""
    now, later = Changes(), Changes()
    unwritten = {"instanceId": A, "timestamp": DAYS[1], "status": "read"}
    written = {"instanceId": ObjectId(f"{3:024x}"), "timestamp": DAYS[1], "status": "read"}
    for doc in (unwritten, written):
        change = DocumentChange(before=doc, after={**doc, "status": "sent"})
        route(
            changes=now,
            change=change,
            doc_id=1,
            build=None,
            window=None,
            saved=_LISTED,
            deferred=later,
        )
    assert now.instances == {written["instanceId"]} and later.instances == {A}


def test_steps_cover_what_they_say() -> None:
    assert Listing((A,)).covers((B, DAYS[0])) and not Listing((A,)).covers((A, None))
    assert not Start(A, DAYS[1], 0).covers((A, DAYS[1]))
    up = Span(A, DAYS[1], DAYS[3], downward=False)
    assert up.covers((A, DAYS[1])) and up.covers((A, DAYS[3] - MS))
    assert not up.covers((A, DAYS[3])) and not up.covers((A, None)) and not up.covers((B, DAYS[2]))
    assert Span(A, None, DAYS[1], downward=True).covers((A, datetime(1, 1, 1, tzinfo=UTC)))
    assert Undated(A).covers((A, None)) and not Undated(A).covers((B, None))


def test_a_fold_of_inserts_keeps_only_the_extreme_timestamps_and_refuses_removals() -> None:
    docs = [{"instanceId": A, "timestamp": DAYS[n] + timedelta(hours=n)} for n in (2, 0, 4, 1)]
    exact, folded = Changes(), Changes(adds_only=True)
    for doc in docs:
        exact.add(before=None, after=doc)
        folded.add(before=None, after=doc)
    low, high = docs[1]["timestamp"], docs[2]["timestamp"]
    assert folded.timestamps() == {(A, "o"): {low: 1, high: 1}}
    assert _total(folded)["b"] == _total(exact)["b"] and len(folded) < len(exact)
    try:
        folded.add(before=docs[0], after=None)
    except ValueError:
        pass
    else:
        raise AssertionError("an adds-only fold took a removal")


@settings(max_examples=100, deadline=None)
@given(scenario=scenarios(), limit=st.integers(1, 7))
def test_changes_split_into_parts_that_add_up_to_them(scenario: Scenario, limit: int) -> None:
    whole = Changes()
    for _, before, after in scenario.events:
        whole.add(before=before, after=after)
    parts = whole.split(limit)
    assert _total(*parts) == _total(whole)
    assert all(len(part) <= limit or len(part.timestamps()) == 1 for part in parts)
    assert all(not part.is_empty() for part in parts)
    for level in Level:  # every mark kept, beside its bucket's counters (alone it makes none)
        assert set().union(*(part.value_marks(level) for part in parts)) == whole.value_marks(level)
        counted = whole.bucket_counters(level).keys()
        for part in parts:
            alone = part.value_marks(level) - part.bucket_counters(level).keys()
            assert not alone & counted


# --- the sweep --------------------------------------------------------------------------


def _sweep(moments: list[datetime], *, pivot: datetime, target: int) -> list[int]:
    """Run the sweep over sorted ``moments`` (one instance); the size of each read.
    Asserts every moment is read exactly once and the sweep ends."""
    progress = InstanceProgress(low=pivot, high=pivot, undated=True)
    sweep, reads, seen = Sweep(target=target), [], Counter[datetime]()
    sweep.begin(A, timedelta(hours=1))
    while not progress.done:
        span = sweep.next(A, progress)
        low = 0 if span.start is None else bisect.bisect_left(moments, span.start)
        high = len(moments) if span.end is None else bisect.bisect_left(moments, span.end)
        seen.update(moments[low:high])
        reads.append(high - low)
        sweep.observe(span, high - low)
        build = Build(listed=(A,), progress={A: progress})
        progress = span.advance(build, high - low).progress[A]
        assert len(reads) < 10_000, "the sweep does not end"
    assert seen == Counter(moments)
    assert progress.read == len(moments)
    return reads


@settings(max_examples=200, deadline=None)
@given(
    offsets=st.lists(st.integers(-(10**11), 10**11), max_size=60),
    pivot=st.integers(-(10**10), 10**10),
    target=st.integers(1, 20),
)
def test_the_sweep_reads_every_dated_message_once_whatever_their_spread(
    offsets: list[int], pivot: int, target: int
) -> None:
    now = datetime(2026, 11, 25, tzinfo=UTC)
    moments = sorted(now + offset * MS for offset in offsets)
    _sweep(moments, pivot=now + pivot * MS, target=target)


def test_on_a_history_like_the_benchmarks_each_read_stays_near_the_target() -> None:
    """200k messages over 180 days, denser towards now (as ``bench`` seeds them)."""
    rng, now = random.Random(1), datetime(2026, 11, 25, 12, tzinfo=UTC)
    span = timedelta(days=180).total_seconds()
    moments = sorted(
        now - timedelta(milliseconds=int(1000 * span * rng.random() ** 1.5)) for _ in range(200_000)
    )
    reads = _sweep(moments, pivot=now.replace(second=0), target=2_000)
    assert max(reads) <= 4_000, max(reads)
    assert len(reads) <= 400, len(reads)


def test_the_estimate_integrates_densities_between_the_samples() -> None:
    assert estimate([]) == 0
    # 2 messages a second from 0 to 100 s, then falling linearly to 0 at 300 s
    assert estimate([(50.0, 2.0), (100.0, 2.0), (300.0, 0.0)]) == 100 + 100 + 200
