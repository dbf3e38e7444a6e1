"""Intervals as signed sums of rollup buckets (pure): every instant is counted exactly
once inside the interval and never outside, and local days take few documents."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from types import FrameType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.rollups import terms as terms_module
from resolvers.rollups.keys import Level, ceil_to, floor_to
from resolvers.rollups.ranges import SERIES_TOPS, plan_series
from resolvers.rollups.terms import Terms, interval_terms, series_terms
from resolvers.timeranges import Interval, TimeRange, series_bounds

_MS = timedelta(milliseconds=1)
_BASE = datetime(2026, 2, 27, 18, 30, tzinfo=UTC)


def _covered(terms: Terms, moment: datetime) -> int:
    """How many times ``moment`` is counted by ``terms``."""
    return sum(sign for piece, sign in terms.items() if piece.start_time <= moment < piece.end_time)


def _edges(moment: datetime) -> list[datetime]:
    found = [moment]
    for level in Level:
        start = floor_to(moment, level)
        found += [start, ceil_to(start + _MS, level)]
    return found


_instants = st.one_of(
    st.integers(-70 * 86_400_000, 70 * 86_400_000).map(lambda ms: _BASE + ms * _MS),
    st.integers(-70, 70).map(lambda days: _BASE + timedelta(days=days)),
    st.integers(-300, 300).map(lambda quarters: _BASE + quarters * timedelta(minutes=15)),
)


@settings(max_examples=300, deadline=None)
@given(a=_instants, b=_instants, top=st.sampled_from(list(Level)))
def test_each_instant_is_counted_once_inside_and_never_outside(
    a: datetime, b: datetime, top: Level
) -> None:
    low, high = min(a, b), max(a, b)
    if top in (Level.QUARTER, Level.HOUR):  # one piece per quarter or hour between
        high = min(high, low + timedelta(days=3))
    for terms in (interval_terms(low, high), series_terms([low, high], top=top)[0]):
        probes = {
            edge + shift for edge in _edges(low) + _edges(high) for shift in (-_MS, 0 * _MS, _MS)
        }
        for moment in sorted(probes):
            assert _covered(terms, moment) == int(low <= moment < high), (low, high, moment)
        raw = sum(
            (piece.end_time - piece.start_time for piece in terms if piece.level is None),
            timedelta(),
        )
        assert raw <= 2 * timedelta(minutes=7, seconds=30)  # at most half a quarter an end


def test_a_kolkata_day_is_its_utc_day_plus_and_minus_the_evening_tails() -> None:
    day = datetime(2026, 3, 1, tzinfo=UTC)
    start, end = day - timedelta(hours=5, minutes=30), day + timedelta(hours=18, minutes=30)

    terms = interval_terms(start, end)

    assert sum(1 for piece, sign in terms.items() if piece.level is Level.DAY and sign == 1) == 1
    by_level = {level: sum(1 for piece in terms if piece.level is level) for level in Level}
    assert by_level == {Level.QUARTER: 4, Level.HOUR: 10, Level.DAY: 1, Level.MONTH: 0}
    assert not any(piece.level is None for piece in terms)


def test_points_of_a_series_share_their_boundaries_documents() -> None:
    days = [datetime(2026, 3, 1, 18, 30, tzinfo=UTC) + timedelta(days=k) for k in range(31)]

    points = series_terms(days)

    documents = {piece for point in points for piece in point}
    assert len(points) == 30
    assert len(documents) <= 30 * 8 + 8  # a day and its evening tail each, not 20 hours


def _cuts(points: int, interval: Interval, zone: str) -> list[datetime]:
    """The cuts of a series of about ``points`` points from a minute off a boundary."""
    start = datetime(2026, 1, 1, 0, 7, tzinfo=UTC)
    step = {
        Interval.HOUR: timedelta(hours=1),
        Interval.DAY: timedelta(days=1),
        Interval.WEEK: timedelta(weeks=1),
        Interval.MONTH: timedelta(days=30),
    }[interval]
    span = TimeRange(start, start + (points - 1) * step)
    bounds = series_bounds(range=span, interval=interval, timezone=zone)
    return [bounds[0][0], *(end for _, end in bounds)]


def _calls(work: Callable[[], object]) -> int:
    """How many functions (Python and built-in) ``work`` calls: a count of the work it
    does, the same on any machine, unlike its time."""
    count = 0

    def profile(frame: FrameType, event: str, arg: Any) -> None:
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    previous = sys.getprofile()
    sys.setprofile(profile)
    try:
        work()
    finally:
        sys.setprofile(previous)
    return count


@pytest.mark.parametrize("interval", list(Interval))
@pytest.mark.parametrize("zone", ["UTC", "America/New_York", "Asia/Kolkata", "Pacific/Chatham"])
def test_planning_a_series_takes_little_work_per_point(interval: Interval, zone: str) -> None:
    """A series is planned on every request, before any read: a thousand points plan
    in a few dozen calls each, whatever the interval and the zone (an instant's pieces
    are worked out once per position in its top bucket, a split is costed from its
    spans, only the split chosen is built), and twice the points take twice the work.
    The old planner made 100 to 2,000 calls a point (every split of every cut, every
    day of every month listed for the split through days)."""
    tops = SERIES_TOPS[interval]
    small, large = _cuts(500, interval, zone), _cuts(1000, interval, zone)

    work_small = _calls(lambda: plan_series(small, tops=tops))
    work_large = _calls(lambda: plan_series(large, tops=tops))

    assert len(large) > 950
    assert work_large <= 60 * (len(large) - 1)
    assert work_large <= 2.2 * work_small


def test_each_position_of_an_instant_is_rounded_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """A thousand local month starts at +05:30 fall on a handful of positions in their
    UTC month (18:30 on its last day, for each month length): each is rounded once per
    split, so the rounding work does not grow with the points (the old planner weighed
    every rounding path for every cut of every split)."""
    weighed = 0
    cost = terms_module._cost

    def counted(*args: Any) -> int:
        nonlocal weighed
        weighed += 1
        return cost(*args)

    monkeypatch.setattr(terms_module, "_cost", counted)
    tops = SERIES_TOPS[Interval.MONTH]
    found = []
    for points in (500, 1000):
        weighed = 0
        plan_series(_cuts(points, Interval.MONTH, "Asia/Kolkata"), tops=tops)
        found.append(weighed)

    assert found[1] <= 120
    assert found[1] <= found[0] + 16
