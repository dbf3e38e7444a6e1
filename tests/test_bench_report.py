"""The benchmark's pure parts on fixed inputs whose answers are worked out by hand:
statistics, labels, the size argument, the targets and the report."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from bench.report import (
    FULL_SCAN,
    GRAPHQL,
    HEALTH,
    HEALTH_BESIDE,
    REST,
    Build,
    Load,
    Results,
    Size,
    Writes,
    checks,
    ms,
    render,
    size_label,
)
from bench.run import parse_args, parse_sizes
from bench.stats import Summary, percentile, summarize


def flat(p50: float, n: int = 50) -> Summary:
    """Samples whose percentiles are p50, 1.5x and 2x it."""
    return Summary(n=n, p50=p50, p95=p50 * 1.5, p99=p50 * 2, max=p50 * 3)


def size(messages: int, *, rest: float, graphql: float, health: float = 0.002) -> Size:
    latency = {HEALTH: flat(health), REST: flat(rest), GRAPHQL: flat(graphql)}
    return Size(messages, "seeded in 1.0 s", Build("ready", 600.0, 210.0, 900.0), latency)


def writes(
    rate: int, *, lag_p99: float, done: int | None = None, retryable: bool = False, **kw: int
) -> Writes:
    lag = Summary(n=10, p50=lag_p99 / 2, p95=lag_p99, p99=lag_p99, max=lag_p99)
    count = rate * 20 if done is None else done
    unapplied, wrong = kw.get("unapplied", 0), kw.get("wrong", 0)
    return Writes(rate, count, 20.0, lag, unapplied, flat(0.05), wrong, retryable)


def full_run(base: Size | None = None) -> Results:
    sizes = [base or size(10_000, rest=0.020, graphql=0.020)]
    sizes.append(size(1_000_000, rest=0.022, graphql=0.030))
    load = Load(1_000_000, 16, completed=700, errors=0, seconds=20.0, latency=flat(0.4))
    rates = [writes(100, lag_p99=0.5), writes(200, lag_p99=0.9), writes(400, lag_p99=2.0)]
    rates.append(writes(200, lag_p99=9.0, done=2_000, retryable=True))  # not in the check
    return Results([("Date", "today")], sizes, load, rates)


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 95) == pytest.approx(4.8)
    assert percentile([1.0, 2.0], 50) == pytest.approx(1.5)
    assert percentile([7.0], 99) == 7.0


@pytest.mark.parametrize(("samples", "q"), [([], 50), ([1.0], -1), ([1.0], 101)])
def test_percentile_refuses_no_samples_and_out_of_range(samples: list[float], q: float) -> None:
    with pytest.raises(ValueError):
        percentile(samples, q)


def test_summarize_one_to_a_hundred() -> None:
    summary = summarize([float(x) for x in range(100, 0, -1)])
    assert (summary.n, summary.max) == (100, 100.0)
    assert summary.p50 == pytest.approx(50.5)
    assert summary.p95 == pytest.approx(95.05)
    assert summary.p99 == pytest.approx(99.01)


@pytest.mark.parametrize(
    ("messages", "label"),
    [(100, "100"), (1_000, "1k"), (1_500, "1,500"), (100_000, "100k"), (1_000_000, "1M")],
)
def test_size_label(messages: int, label: str) -> None:
    assert size_label(messages) == label


@pytest.mark.parametrize(
    ("seconds", "shown"), [(0.00123, "1.23"), (0.0456, "45.6"), (1.5, "1,500")]
)
def test_milliseconds_keep_three_figures_or_more(seconds: float, shown: str) -> None:
    assert ms(seconds) == shown


def test_sizes_take_units_sort_and_drop_repeats() -> None:
    assert parse_sizes("1M, 10K,1k,1_000") == (1_000, 10_000, 1_000_000)
    assert parse_args([]).sizes == (1_000, 10_000, 100_000, 1_000_000)
    assert parse_args(["--quick"]).sizes == (1_000, 10_000)


@pytest.mark.parametrize("text", ["", "0", "ten", "1x", "-5"])
def test_sizes_refuse_nonsense(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        parse_sizes(text)


def test_checks_of_a_full_run() -> None:
    found = {c.figure: (c.value, c.passed) for c in checks(full_run())}
    assert found == {
        "REST: latency(1M) / latency(10k), p50": ("1.10x", True),
        "GraphQL: latency(1M) / latency(10k), p50": ("1.50x", False),
        "p50 / health p50 at 10k": ("REST 10.00x, GraphQL 10.00x", True),
        "p50 / health p50 at 1M": ("REST 11.00x, GraphQL 15.00x", False),
        "throughput, 16 clients on 1M": ("35.00 requests/s", True),
        "consumer: highest write rate kept up": ("200/s (lag p99 900 ms)", True),
        "initial build of 1M": ("600 s", None),
    }


@pytest.mark.parametrize(
    "rate",
    [
        writes(200, lag_p99=1.2),  # lag
        writes(200, lag_p99=0.5, done=3_500),  # 175/s achieved of 200
        writes(200, lag_p99=0.5, unapplied=1),
        writes(200, lag_p99=0.5, wrong=1),
    ],
)
def test_a_rate_is_kept_up_only_when_every_condition_holds(rate: Writes) -> None:
    assert not rate.kept_up
    assert writes(200, lag_p99=0.5, done=3_600).kept_up  # 180/s: 90% of 200


def test_a_quick_run_leaves_the_1m_targets_unjudged() -> None:
    small = [size(1_000, rest=0.01, graphql=0.01), size(10_000, rest=0.01, graphql=0.01)]
    load = Load(10_000, 16, completed=800, errors=0, seconds=20.0, latency=None)
    found = {c.figure: (c.value, c.passed) for c in checks(Results([], small, load, []))}
    assert found["REST: latency(1M) / latency(10k), p50"] == ("not measured", None)
    assert found["throughput, 16 clients on 10k"] == ("40.00 requests/s", None)
    assert found["consumer: highest write rate kept up"][1] is None
    assert found["initial build of 1M"] == ("not measured", None)


def test_report_rows() -> None:
    base = size(10_000, rest=0.020, graphql=0.020)
    scan = {**base.latency, FULL_SCAN: flat(6.0, n=5)}
    text = render(full_run(Size(10_000, "reused", Build("absent", None), scan)))
    assert "| REST: latency(1M) / latency(10k), p50 | 1.10x | ≤ 1.2 | pass |" in text
    assert "| GraphQL: latency(1M) / latency(10k), p50 | 1.50x | ≤ 1.2 | **FAIL** |" in text
    assert "| 1M | GraphQL | ready | 50 | 30.0 | 45.0 |" in text
    assert "| 10k | full scan |  | 5 | 6,000 | 9,000 |" in text
    assert "| 1M | seeded in 1.0 s | ready | 600 | 210 | 900 |" in text
    assert "| 10k | reused | absent |  |  |  |" in text
    assert "| 1M | 16 | 700 | 0 | 20.0 | 35.00 | 400 | 600 |" in text
    assert (
        "| 400 | plain | 20 | 400 | 8000 | 1,000 | 2,000 | 2,000 | 0 | 50.0 | 75.0 | 0 | no |"
        in text
    )
    assert "| 200 | retryable | 20 | 100 | 2000 | 4,500 | 9,000 | 9,000 | 0 |" in text
    assert "`bench.harness.extra_queries`" in text  # issue 10's figures: not there yet


def test_a_size_whose_rollups_never_got_ready_is_reported_not_judged() -> None:
    stuck = Size(1_000_000, "seeded in 207.1 s", Build("building 0%", None, 63.0, 3_300.0), {})
    results = Results([], [size(10_000, rest=0.02, graphql=0.02), stuck], None, [])
    found = {c.figure: (c.value, c.passed) for c in checks(results)}
    assert found["REST: latency(1M) / latency(10k), p50"] == ("not measured", None)
    assert "p50 / health p50 at 1M" not in found
    assert found["initial build of 1M"] == ("not ready (building 0%)", None)
    assert "| 1M | seeded in 207.1 s | building 0% |  | 63 | 3,300 |" in render(results)


def test_the_growth_ratio_comes_from_the_rounds_that_measure_both_together() -> None:
    """Their own phases (1.10x and 1.50x) are shown beside it, not judged."""
    together = {
        "10k REST": flat(0.010),
        "10k GraphQL": flat(0.020),
        "1M REST": flat(0.011),
        "1M GraphQL": flat(0.026),
    }
    run = dataclasses.replace(full_run(), together=together)
    found = {c.figure: (c.value, c.passed) for c in checks(run)}
    assert found["REST: latency(1M) / latency(10k), p50"] == (
        "1.10x together (1.10x in their own phases)",
        True,
    )
    assert found["GraphQL: latency(1M) / latency(10k), p50"] == (
        "1.30x together (1.50x in their own phases)",
        False,
    )
    text = render(run)
    assert "| 1M | GraphQL, together | ready | 50 | 26.0 | 39.0 |" in text


@pytest.mark.parametrize(
    ("beside", "found"),
    [
        # health beside the series slower than in the metrics rounds (2 ms): 18 / 2
        (0.003, [("REST 11.00x, GraphQL 15.00x", False), ("series 9.00x", True)]),
        # faster: every ratio is to it, 22 / 1.5, 30 / 1.5, 18 / 1.5
        (0.0015, [("REST 14.67x, GraphQL 20.00x", False), ("series 12.00x", False)]),
    ],
)
def test_every_ratio_is_to_the_lower_health_of_the_run(
    beside: float, found: list[tuple[str, bool]]
) -> None:
    base, large = full_run().sizes
    latency = {**large.latency, HEALTH_BESIDE: flat(beside), "series": flat(0.018)}
    sizes = [base, dataclasses.replace(large, latency=latency)]
    run = dataclasses.replace(full_run(), sizes=sizes, extra=["series"])
    checked = [(c.value, c.passed) for c in checks(run) if c.figure == "p50 / health p50 at 1M"]
    assert checked == found
