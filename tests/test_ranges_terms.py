"""Intervals as signed sums of rollup buckets (pure): every instant is counted exactly
once inside the interval and never outside, and local days take few documents."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers.rollups.keys import Level, ceil_to, floor_to
from resolvers.rollups.terms import Terms, interval_terms, series_terms

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
