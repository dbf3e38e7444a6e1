"""Time ranges and local-calendar series boundaries (pure), against dates worked out
from the published DST rules, and the brute-force reference."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from resolvers import timeranges
from resolvers.errors import BadUserInput
from resolvers.timeranges import MAX_POINTS, Interval, TimeRange, make_range, series_bounds
from tests.reference import reference_bounds

H = timedelta(hours=1)


def _utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def _bounds(start: datetime, end: datetime, interval: Interval, zone: str) -> list:
    return series_bounds(range=TimeRange(start, end), interval=interval, timezone=zone)


def _lengths(start: datetime, end: datetime, interval: Interval, zone: str) -> list[timedelta]:
    return [high - low for low, high in _bounds(start, end, interval, zone)]


def test_make_range_converts_to_utc_and_refuses_naive_or_reversed() -> None:
    kolkata = timezone(timedelta(hours=5, minutes=30))
    got = make_range(datetime(2026, 1, 1, tzinfo=kolkata), datetime(2026, 1, 2, tzinfo=UTC))
    assert got == TimeRange(_utc(2025, 12, 31, 18, 30), _utc(2026, 1, 2))
    assert got.start.tzinfo is UTC
    with pytest.raises(BadUserInput, match="UTC offset"):
        make_range(datetime(2026, 1, 1), _utc(2026, 1, 2))
    with pytest.raises(BadUserInput, match="UTC offset"):
        make_range(_utc(2026, 1, 1), datetime(2026, 1, 2))
    with pytest.raises(BadUserInput, match="after"):
        make_range(_utc(2026, 1, 2), _utc(2026, 1, 1))
    assert make_range(_utc(2026, 1, 1), _utc(2026, 1, 1)).start == _utc(2026, 1, 1)


def test_make_range_rounds_up_to_the_millisecond_a_date_is_stored_in() -> None:
    got = make_range(_utc(2026, 1, 1, 0, 0, 0, 1), _utc(2026, 1, 1, 0, 0, 1, 999_001))
    assert got == TimeRange(_utc(2026, 1, 1, 0, 0, 0, 1000), _utc(2026, 1, 1, 0, 0, 2))


def test_a_day_is_23_or_25_hours_across_dst_in_new_york() -> None:
    # 2026: DST starts Sunday March 8 (02:00 -> 03:00), ends Sunday November 1
    spring = _lengths(_utc(2026, 3, 7, 5), _utc(2026, 3, 10, 4), Interval.DAY, "America/New_York")
    assert spring == [24 * H, 23 * H, 24 * H]
    autumn = _lengths(_utc(2026, 10, 31, 4), _utc(2026, 11, 3, 5), Interval.DAY, "America/New_York")
    assert autumn == [24 * H, 25 * H, 24 * H]


def test_a_day_whose_midnight_does_not_exist_starts_when_the_clock_jumps() -> None:
    # Sao Paulo 2018: DST began at midnight on November 4 (00:00 -03 -> 01:00 -02)
    bounds = _bounds(_utc(2018, 11, 3, 3), _utc(2018, 11, 6, 2), Interval.DAY, "America/Sao_Paulo")
    assert bounds == [
        (_utc(2018, 11, 3, 3), _utc(2018, 11, 4, 3)),
        (_utc(2018, 11, 4, 3), _utc(2018, 11, 5, 2)),  # 23 hours, from 01:00 local
        (_utc(2018, 11, 5, 2), _utc(2018, 11, 6, 2)),
    ]
    # and ended at midnight on February 18 (00:00 -02 -> 23:00 -03): Feb 17 has 25 hours
    ended = _lengths(_utc(2018, 2, 16, 2), _utc(2018, 2, 19, 3), Interval.DAY, "America/Sao_Paulo")
    assert ended == [24 * H, 25 * H, 24 * H]


def test_hours_of_a_fold_are_separate_points_and_a_gap_has_none() -> None:
    ny = "America/New_York"
    autumn = _bounds(_utc(2026, 11, 1, 4), _utc(2026, 11, 1, 8), Interval.HOUR, ny)
    assert [low for low, _ in autumn] == [_utc(2026, 11, 1, h) for h in (4, 5, 6, 7)]
    spring = _bounds(_utc(2026, 3, 8, 5), _utc(2026, 3, 8, 8), Interval.HOUR, ny)
    assert [low for low, _ in spring] == [_utc(2026, 3, 8, h) for h in (5, 6, 7)]
    # Chatham leaves DST at 03:45 local (+13:45 -> 02:45 +12:45): from 02:45 +13:45,
    # the hour 03 at +13:45 lasts 45 minutes, then 02:45-03:00 at +12:45 is a point
    chatham = _lengths(_utc(2026, 4, 4, 13), _utc(2026, 4, 4, 16), Interval.HOUR, "Pacific/Chatham")
    assert chatham == [timedelta(minutes=m) for m in (15, 45, 15, 60, 45)]


def test_every_hour_of_a_two_hour_fold_is_a_point() -> None:
    # Troll (Antarctica) leaves +02 for +00 at 01:00 UTC on the last Sunday of October:
    # local 01:00 and 02:00 come twice; each of the six real hours is its own point
    start, end = _utc(2026, 10, 24, 22), _utc(2026, 10, 25, 4)
    troll = _bounds(start, end, Interval.HOUR, "Antarctica/Troll")
    assert [low for low, _ in troll] == [start + k * H for k in range(6)]
    assert troll == reference_bounds((start, end), interval="HOUR", timezone="Antarctica/Troll")


def test_offsets_of_half_and_three_quarter_hours() -> None:
    kolkata = _bounds(_utc(2026, 1, 1), _utc(2026, 1, 3), Interval.DAY, "Asia/Kolkata")
    assert [low for low, _ in kolkata] == [
        _utc(2026, 1, 1),
        _utc(2026, 1, 1, 18, 30),
        _utc(2026, 1, 2, 18, 30),
    ]
    kathmandu = _bounds(_utc(2026, 1, 1), _utc(2026, 1, 1, 3), Interval.HOUR, "Asia/Kathmandu")
    assert [low for low, _ in kathmandu] == [
        _utc(2026, 1, 1),
        _utc(2026, 1, 1, 0, 15),
        _utc(2026, 1, 1, 1, 15),
        _utc(2026, 1, 1, 2, 15),
    ]


def test_weeks_start_on_monday_and_months_on_the_first() -> None:
    # 2026-01-01 is a Thursday
    weeks = _bounds(_utc(2026, 1, 1), _utc(2026, 1, 20), Interval.WEEK, "UTC")
    assert [low for low, _ in weeks] == [_utc(2026, 1, d) for d in (1, 5, 12, 19)]
    assert weeks[-1] == (_utc(2026, 1, 19), _utc(2026, 1, 20))
    months = _bounds(_utc(2026, 1, 15), _utc(2026, 4, 2), Interval.MONTH, "America/New_York")
    assert [low for low, _ in months] == [
        _utc(2026, 1, 15),
        _utc(2026, 2, 1, 5),
        _utc(2026, 3, 1, 5),
        _utc(2026, 4, 1, 4),  # after the change to DST
    ]


def test_points_are_clipped_to_the_range_and_an_empty_range_has_none() -> None:
    bounds = _bounds(_utc(2026, 1, 1, 7, 20), _utc(2026, 1, 1, 9, 5), Interval.HOUR, "UTC")
    assert bounds == [
        (_utc(2026, 1, 1, 7, 20), _utc(2026, 1, 1, 8)),
        (_utc(2026, 1, 1, 8), _utc(2026, 1, 1, 9)),
        (_utc(2026, 1, 1, 9), _utc(2026, 1, 1, 9, 5)),
    ]
    assert _bounds(_utc(2026, 1, 1), _utc(2026, 1, 1), Interval.DAY, "UTC") == []


def test_at_most_a_thousand_points() -> None:
    start = _utc(2026, 1, 1)
    assert len(_bounds(start, start + MAX_POINTS * H, Interval.HOUR, "UTC")) == MAX_POINTS
    with pytest.raises(BadUserInput, match="1000 points"):
        _bounds(start, start + (MAX_POINTS + 1) * H, Interval.HOUR, "UTC")
    with pytest.raises(BadUserInput, match="1000 points"):  # refused without listing them
        _bounds(_utc(1, 1, 2), _utc(9999, 1, 1), Interval.HOUR, "UTC")


def test_series_at_the_ends_of_the_calendar_are_answered_or_refused_never_an_error() -> None:
    assert _bounds(_utc(1, 1, 1), _utc(1, 3, 1), Interval.MONTH, "UTC") == [
        (_utc(1, 1, 1), _utc(1, 2, 1)),
        (_utc(1, 2, 1), _utc(1, 3, 1)),
    ]
    with pytest.raises(BadUserInput, match="1000 points"):
        _bounds(_utc(1, 1, 1), _utc(9999, 12, 31), Interval.MONTH, "UTC")
    for interval in Interval:  # the boundary after the range is past year 9999
        with pytest.raises(BadUserInput, match="supported dates"):
            _bounds(_utc(9999, 12, 1), _utc(9999, 12, 31, 23), interval, "Pacific/Kiritimati")


@pytest.mark.parametrize("name", ["Mars/Olympus", "", "../etc/passwd", "/usr/share/zoneinfo/UTC"])
def test_an_unknown_timezone_is_bad_user_input_naming_it(name: str) -> None:
    with pytest.raises(BadUserInput, match="Unknown timezone") as error:
        _bounds(_utc(2026, 1, 1), _utc(2026, 1, 2), Interval.DAY, name)
    assert f'"{name}"' in error.value.message


ZONES = [
    "UTC",
    "America/New_York",
    "America/Sao_Paulo",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Pacific/Chatham",
    "Australia/Lord_Howe",
    "Antarctica/Troll",
]
_SPAN = {
    Interval.HOUR: timedelta(days=3),
    Interval.DAY: timedelta(days=20),
    Interval.WEEK: timedelta(days=70),
    Interval.MONTH: timedelta(days=400),
}
# around DST changes of each zone (and 2018 in Sao Paulo, Troll's two-hour fold),
# minutes off any boundary
_anchors = st.sampled_from(
    [
        _utc(2018, 2, 17),
        _utc(2018, 11, 3),
        _utc(2026, 3, 7),
        _utc(2026, 4, 4),
        _utc(2026, 9, 26),
        _utc(2026, 10, 24),
        _utc(2026, 10, 31),
    ]
)


@settings(max_examples=60, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    interval=st.sampled_from(list(Interval)),
    anchor=_anchors,
    offset=st.integers(-86_400, 86_400),
    length=st.floats(0, 1),
)
def test_bounds_equal_the_brute_force_reference(
    zone: str, interval: Interval, anchor: datetime, offset: int, length: float
) -> None:
    start = anchor + timedelta(seconds=offset)
    end = start + _SPAN[interval] * length
    end -= timedelta(microseconds=end.microsecond)
    expected = reference_bounds((start, end), interval=interval.value, timezone=zone)
    assert _bounds(start, end, interval, zone) == expected


class _CountedZone(ZoneInfo):
    """A timezone that counts its look-ups (``datetime`` calls these for every
    conversion): how much zone work a series takes, not how long."""

    lookups = 0

    def utcoffset(self, dt: datetime | None) -> timedelta | None:
        _CountedZone.lookups += 1
        return super().utcoffset(dt)

    def dst(self, dt: datetime | None) -> timedelta | None:
        _CountedZone.lookups += 1
        return super().dst(dt)

    def fromutc(self, dt: datetime) -> datetime:
        _CountedZone.lookups += 1
        return super().fromutc(dt)


@pytest.mark.parametrize(
    ("interval", "per_point"),
    [(Interval.HOUR, 2), (Interval.DAY, 2), (Interval.WEEK, 2), (Interval.MONTH, 2)],
)
@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata", "America/New_York", "Pacific/Chatham"])
def test_a_thousand_points_take_a_few_timezone_look_ups_each(
    monkeypatch: pytest.MonkeyPatch, interval: Interval, per_point: int, zone: str
) -> None:
    """Each local day, week or month boundary is read from the zone twice (its two fold
    readings tell a plain wall time from a gap or a fold), each hour too (its offset, as
    it walks in UTC, and the conversion that finds it). The first walk checked every
    boundary again (3
    look-ups a day, 7 an hour); hours on the wall clock took 4."""
    monkeypatch.setattr(timeranges, "zone", _CountedZone)
    start = _utc(2026, 1, 1, 0, 7)
    step = {Interval.HOUR: H, Interval.WEEK: timedelta(weeks=1)}.get(interval, timedelta(days=1))
    if interval is Interval.MONTH:
        step = timedelta(days=30)
    _CountedZone.lookups = 0

    bounds = _bounds(start, start + 990 * step, interval, zone)

    assert len(bounds) > 950
    assert _CountedZone.lookups <= per_point * len(bounds) + 8
