"""Results kept by the identity of what they were made from, the least recent dropped."""

from __future__ import annotations

from graph.reuse import ByIdentity


class Made:
    def __init__(self, n: int) -> None:
        self.n = n

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Made) and other.n == self.n

    __hash__ = None  # type: ignore[assignment]


def test_a_result_is_found_for_the_very_object_and_tag_it_was_kept_for() -> None:
    kept: ByIdentity[str] = ByIdentity(limit=4)
    one = Made(1)
    kept.put(one, "one")
    kept.put(one, "one, tagged", tag="t")
    assert kept.get(one) == "one" and kept.get(one, tag="t") == "one, tagged"
    assert kept.get(Made(1)) is None  # equal, not the same
    assert kept.get(one, tag="other") is None


def test_the_least_recently_used_results_go_past_the_limit() -> None:
    kept: ByIdentity[int] = ByIdentity(limit=3)
    made = [Made(n) for n in range(5)]
    for thing in made[:3]:
        kept.put(thing, thing.n)
    assert kept.get(made[0]) == 0  # now the most recent
    kept.put(made[3], 3)
    kept.put(made[4], 4)
    assert len(kept) == 3
    assert [kept.get(thing) for thing in made] == [0, None, None, 3, 4]


def test_a_kept_object_outlives_its_last_other_reference() -> None:
    """Its id cannot be reused by another object while its result is kept."""
    kept: ByIdentity[int] = ByIdentity(limit=2)
    kept.put(Made(7), 7)
    later = [Made(n) for n in range(1_000)]  # many new objects: none takes the kept id
    assert all(kept.get(thing) is None for thing in later)
