"""The benchmark harness's pure parts: statistics, explain digging, ratios, the report."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench.anatomy import (
    READ_SLICE,
    cursor_millis,
    docs_examined,
    keys_examined,
    plan_stages,
    split_pipeline,
)
from bench.cli import _plan, parse_args
from bench.model import (
    DRIVER,
    GRAPHQL,
    HEALTH,
    REST,
    Environment,
    ExplainStat,
    Figure,
    InsertStat,
    Results,
    StageTiming,
    Summary,
    Throughput,
)
from bench.query import FULL_METRICS_QUERY
from bench.report import (
    compute_ratios,
    concurrency_gain,
    derive_notes,
    format_ms,
    redact_uri,
    render_markdown,
    size_label,
    summary_lines,
)
from bench.stats import percentile, summarize

SCHEMA = Path(__file__).resolve().parent.parent / "schema.graphql"


def steady(median: float, n: int = 10) -> Summary:
    return Summary(
        n=n,
        median=median,
        p95=median * 1.5,
        minimum=median / 2,
        maximum=median * 2,
        p25=median * 0.9,
        p75=median * 1.1,
    )


def figures() -> list[Figure]:
    """Fixed figures: 10k at 10/11/12 ms, 100k at 10x that, 3x10k at 3x, health 1 ms."""
    out = [Figure("-", 0, HEALTH, steady(0.001), instances=0)]
    for target, messages, factor, instances in (
        ("10k", 10_000, 1, 1),
        ("3x10k", 30_000, 3, 3),
        ("100k", 100_000, 10, 1),
    ):
        for path, seconds in ((REST, 0.011), (GRAPHQL, 0.012), (DRIVER, 0.010)):
            out.append(Figure(target, messages, path, steady(seconds * factor), instances))
    return out


def results() -> Results:
    return Results(
        environment=Environment(
            date="2026-11-25 12:00 UTC",
            cpu_count=2,
            cpu_model="Test CPU",
            platform="Linux-test",
            python="3.11.7",
            database="SecantusDB 0.7.0b3 embedded",
        ),
        settings=(("sizes", "10k, 100k"), ("runs", "≤50")),
        inserts=(InsertStat("bench-10k", 10_000, generate_s=0.2, insert_s=4.0),),
        figures=tuple(figures()),
        explains=(ExplainStat("10k", 10_000, 10_000, 10_000, ("FETCH", "IXSCAN"), 450),),
        stages=(
            StageTiming(READ_SLICE, steady(0.002)),
            StageTiming("$facet totals", steady(0.008)),
            StageTiming("$facet byType", steady(0.003)),
        ),
        throughput=Throughput("10k", REST, 16, completed=200, errors=0, seconds=4.0, latency=None),
        elapsed_s=300.0,
    )


# --- statistics ------------------------------------------------------------------------


def test_percentile_interpolates_between_closest_ranks() -> None:
    samples = [4.0, 1.0, 3.0, 2.0, 5.0]
    assert percentile(samples, 50) == 3.0
    assert percentile(samples, 0) == 1.0
    assert percentile(samples, 100) == 5.0
    assert percentile(samples, 95) == pytest.approx(4.8)
    assert percentile([1.0, 2.0], 50) == pytest.approx(1.5)


def test_percentile_of_one_sample_is_that_sample() -> None:
    assert percentile([7.0], 95) == 7.0


@pytest.mark.parametrize("q", [-1, 101])
def test_percentile_rejects_out_of_range(q: float) -> None:
    with pytest.raises(ValueError):
        percentile([1.0], q)


def test_percentile_rejects_no_samples() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)


def test_summarize() -> None:
    summary = summarize([float(x) for x in range(1, 21)])
    assert (summary.n, summary.minimum, summary.maximum) == (20, 1.0, 20.0)
    assert summary.median == pytest.approx(10.5)
    assert summary.p95 == pytest.approx(19.05)
    assert summary.spread == pytest.approx(19.05 / 10.5)
    assert (summary.p25, summary.p75) == (pytest.approx(5.75), pytest.approx(15.25))
    assert summary.notch == pytest.approx(1.58 * 9.5 / 20**0.5)


# --- labels and URIs ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("count", "label"),
    [(999, "999"), (1_000, "1k"), (2_500, "2.5k"), (10_000, "10k"), (1_000_000, "1M")],
)
def test_size_label(count: int, label: str) -> None:
    assert size_label(count) == label


@pytest.mark.parametrize(
    ("uri", "redacted"),
    [
        (
            "mongodb://user:s3cret@db1:27017,db2:27017/app?authSource=admin",
            "mongodb://db1:27017,db2:27017",
        ),
        (
            "mongodb+srv://u:p@cluster0.example.net/?retryWrites=true",
            "mongodb+srv://cluster0.example.net",
        ),
        ("mongodb://127.0.0.1:27017", "mongodb://127.0.0.1:27017"),
        ("not a uri", "(unparsable URI)"),
    ],
)
def test_redact_uri_drops_credentials_and_options(uri: str, redacted: str) -> None:
    assert redact_uri(uri) == redacted
    assert "s3cret" not in redact_uri(uri)


def test_format_ms_scales_precision() -> None:
    assert format_ms(0.00123) == "1.23"
    assert format_ms(0.0456) == "45.6"
    assert format_ms(12.3456) == "12,346"
    assert format_ms(None) == "n/a"


# --- explain -----------------------------------------------------------------------------

SECANTUS_EXPLAIN = {
    "stages": [
        {
            "$cursor": {
                "queryPlanner": {
                    "winningPlan": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}
                },
                "executionStats": {
                    "executionTimeMillis": 456,
                    "totalKeysExamined": 10_000,
                    "totalDocsExamined": 10_000,
                },
            }
        },
        {"$facet": {}},
    ],
    # SecantusDB repeats the read stage's figures at the top: they count once.
    "queryPlanner": {"winningPlan": {"stage": "FETCH", "inputStage": {"stage": "IXSCAN"}}},
    "executionStats": {
        "executionTimeMillis": 456,
        "totalKeysExamined": 10_000,
        "totalDocsExamined": 10_000,
    },
}

SHARDED_EXPLAIN = {
    "shards": {
        "a": {
            "stages": [
                {
                    "$cursor": {
                        "queryPlanner": {"winningPlan": {"stage": "COLLSCAN"}},
                        "executionStats": {"totalDocsExamined": 700, "totalKeysExamined": 0},
                    }
                }
            ]
        },
        "b": {
            "stages": [
                {
                    "$cursor": {
                        "queryPlanner": {"winningPlan": {"stage": "COLLSCAN"}},
                        "executionStats": {"totalDocsExamined": 300, "totalKeysExamined": 0},
                    }
                }
            ]
        },
    }
}


def test_explain_figures_count_once_per_server() -> None:
    assert docs_examined(SECANTUS_EXPLAIN) == 10_000
    assert keys_examined(SECANTUS_EXPLAIN) == 10_000
    assert cursor_millis(SECANTUS_EXPLAIN) == 456
    assert plan_stages(SECANTUS_EXPLAIN) == ("FETCH", "IXSCAN")


def test_explain_figures_sum_over_shards() -> None:
    assert docs_examined(SHARDED_EXPLAIN) == 1_000
    assert keys_examined(SHARDED_EXPLAIN) == 0
    assert plan_stages(SHARDED_EXPLAIN) == ("COLLSCAN",)


def test_explain_without_figures_is_not_available() -> None:
    assert docs_examined({"ok": 1}) is None
    assert keys_examined({"ok": 1}) is None
    assert cursor_millis({"ok": 1}) is None
    assert plan_stages({"ok": 1}) == ()


def test_split_pipeline_slices_read_and_each_facet() -> None:
    match = {"$match": {"instanceId": 1}}
    pipeline = [match, {"$facet": {"a": [{"$count": "n"}], "b": [{"$group": {"_id": None}}]}}]
    slices = split_pipeline(pipeline)
    assert [name for name, _ in slices] == [READ_SLICE, "$facet a", "$facet b"]
    assert slices[0][1] == [match, {"$count": "n"}]
    assert slices[2][1] == [match, {"$facet": {"b": [{"$group": {"_id": None}}]}}]
    assert split_pipeline([match]) == []


# --- ratios and report -----------------------------------------------------------------


def test_ratios_compare_medians_of_the_same_run() -> None:
    ratios = {r.name: r for r in compute_ratios(figures())}
    growth = ratios["driver: latency(100k) / latency(10k)"]
    assert growth.value == pytest.approx(10.0)
    assert growth.note == "messages x10"
    assert ratios["REST: latency(3x10k) / latency(10k)"].value == pytest.approx(3.0)
    assert ratios["REST metrics (10k) / health"].value == pytest.approx(11.0)
    overhead = ratios["GraphQL / driver (10k)"]
    assert overhead.value == pytest.approx(1.2)
    assert overhead.note.startswith("API overhead +2.00 ms (medians)")


def test_ratios_grow_from_the_named_base() -> None:
    tiny = [Figure("100", 100, path, steady(0.005)) for path in (REST, GRAPHQL, DRIVER)]
    ratios = {r.name: r for r in compute_ratios([*tiny, *figures()], base="10k")}
    assert "driver: latency(100k) / latency(10k)" in ratios
    assert not any("latency(100)" in name or "latency(10k) /" in name for name in ratios)
    assert "REST / driver (100)" in ratios
    assert compute_ratios(figures(), base="nope") == []


def test_api_overhead_within_noise_says_so() -> None:
    noisy = [
        Figure("10k", 10_000, REST, Summary(5, 5.3, 6.2, 5.0, 6.3, p25=5.1, p75=6.1)),
        Figure("10k", 10_000, DRIVER, Summary(5, 5.5, 6.4, 4.0, 6.5, p25=5.0, p75=6.0)),
        Figure("100", 100, REST, Summary(50, 0.082, 0.11, 0.056, 0.11, p25=0.078, p75=0.086)),
        Figure("100", 100, DRIVER, Summary(50, 0.060, 0.09, 0.042, 0.09, p25=0.055, p75=0.064)),
        Figure("1M", 1_000_000, REST, steady(600.0, n=1)),
        Figure("1M", 1_000_000, DRIVER, steady(590.0, n=1)),
    ]
    ratios = {r.name: r for r in compute_ratios(noisy)}
    assert ratios["REST / driver (10k)"].note.endswith("not distinguishable from noise (±1,413 ms)")
    assert ratios["REST / driver (100)"].note == "API overhead +22.0 ms (medians)"
    assert ratios["REST / driver (1M)"].note.endswith("too few runs to tell from noise")
    assert ratios["REST / driver (10k)"].note.startswith("API overhead -200.0 ms")


def test_ratios_missing_figures_are_not_available() -> None:
    only_rest = [f for f in figures() if f.path in (REST, HEALTH)]
    ratios = {r.name: r for r in compute_ratios(only_rest)}
    assert ratios["driver: latency(100k) / latency(10k)"].value is None
    assert ratios["REST / driver (10k)"].value is None
    assert compute_ratios([]) == []


def test_markdown_has_header_tables_and_figures() -> None:
    res = results()
    text = render_markdown(res, compute_ratios(res.figures))
    assert text.startswith("# Metrics benchmark\n")
    assert "- **Date**: 2026-11-25 12:00 UTC" in text
    assert "2 CPUs (Test CPU)" in text
    assert "- **Database**: SecantusDB 0.7.0b3 embedded" in text
    for heading in (
        "## Latency",
        "## Ratios",
        "## Throughput",
        "## Documents examined",
        "## Where the time goes",
        "## Dataset",
    ):
        assert heading in text
    assert "| 100k | 100,000 | driver | 10 | 100.0 | 150.0 | 50.0 | 200.0 | 1.50 | 1.0 |" in text
    assert "| 10k | 10,000 | 10,000 | 10,000 | 1.00 | FETCH, IXSCAN | 450 |" in text
    assert "| bench-10k | 10,000 | 0.2 | 4.0 | 2,500 |" in text
    assert "| $facet totals | 10 | 8.00 | 6.00 | 60% |" in text
    assert "| sum of the slices (read once) |  |  | 9.00 | 90% |" in text
    assert "| rest: full minus the slices (`$facet` fan-out) |  |  | 1.00 | 10% |" in text
    assert "| 10k | REST | 16 | 200 | 0 | 4.0 | 50.00 | n/a | n/a | 0.55x |" in text
    # every table row has as many cells as its header
    for block in re.findall(r"(?:^\|.*\|\n?)+", text, flags=re.MULTILINE):
        widths = {row.count("|") for row in block.strip().splitlines()}
        assert len(widths) == 1, block


def test_concurrency_gain_compares_with_one_at_a_time() -> None:
    res = results()
    assert res.throughput is not None
    assert concurrency_gain(res.throughput, res.figures) == pytest.approx(50 * 0.011)
    assert concurrency_gain(res.throughput, []) is None


def test_notes_flag_collscan_extra_documents_and_few_runs() -> None:
    explains = [ExplainStat("10k", 10_000, 25_000, 0, ("COLLSCAN",), None)]
    few = [Figure("1M", 1_000_000, REST, steady(600.0, n=1))]
    notes = derive_notes(figures=few, explains=explains, stages=[], throughput=None)
    assert any("COLLSCAN" in note for note in notes)
    assert any("25,000 documents examined" in note for note in notes)
    assert any("1M REST (n=1)" in note for note in notes)


def test_notes_name_the_slowest_slice() -> None:
    notes = derive_notes(
        figures=[], explains=[], stages=results().stages, throughput=None, few_runs=0
    )
    assert notes == ["Slowest slice: $facet totals, 67% of the slices."]
    with_full = derive_notes(
        figures=figures(), explains=[], stages=results().stages, throughput=None, few_runs=0
    )
    assert with_full == ["Slowest slice: $facet totals, 60% of the full pipeline."]


def test_notes_flag_requests_over_the_default_query_timeout() -> None:
    slow = [Figure("100k", 100_000, REST, steady(40.0, n=1))]
    notes = derive_notes(
        figures=slow, explains=[], stages=[], throughput=None, few_runs=0, default_timeout_s=30
    )
    assert len(notes) == 1
    assert "default query timeout (30 s" in notes[0]
    assert "100k REST" in notes[0]
    fast = derive_notes(
        figures=figures(), explains=[], stages=[], throughput=None, default_timeout_s=30
    )
    assert not any("timeout" in note for note in fast)


def test_summary_lines_name_database_and_targets() -> None:
    res = results()
    lines = summary_lines(res, compute_ratios(res.figures))
    assert lines[0] == "database: SecantusDB 0.7.0b3 embedded"
    assert any(line.startswith("100k: REST 110.0 ms") for line in lines)
    assert any("16 clients: 50.00 req/s" in line for line in lines)


# --- the operation and the arguments -------------------------------------------------------


def _fields(sdl: str, type_name: str) -> set[str]:
    body = re.search(rf"type {type_name} \{{(.*?)\n\}}", sdl, flags=re.DOTALL)
    assert body is not None
    without_docs = re.sub(r'""".*?"""', "", body.group(1), flags=re.DOTALL)
    return set(re.findall(r"^\s*(\w+)\s*:", without_docs, flags=re.MULTILINE))


def test_graphql_query_asks_every_metrics_field() -> None:
    fields = _fields(SCHEMA.read_text(encoding="utf-8"), "Metrics")
    asked = set(re.findall(r"\w+", FULL_METRICS_QUERY.split("{", 2)[2]))
    assert fields and fields <= asked


def test_arguments_default_and_large() -> None:
    options = parse_args([])
    assert options.sizes == (10_000, 100_000)
    assert options.consolidated == 3
    assert options.base_label == "10k"
    assert _plan(options) == (
        [
            ("bench-100", 100),
            ("bench-10k", 10_000),
            ("bench-100k", 100_000),
            ("bench-10k-2", 10_000),
            ("bench-10k-3", 10_000),
        ],
        ["bench-100", "bench-10k", "bench-100k"],
        ["bench-10k", "bench-10k-2", "bench-10k-3"],
    )
    alone = parse_args(["--sizes", "50", "--consolidated", "1", "--overhead-size", "100"])
    assert _plan(alone) == ([("bench-50", 50)], ["bench-50"], [])
    assert parse_args(["--large"]).sizes == (10_000, 100_000, 1_000_000)
    assert parse_args(["--sizes", "5000,1000", "--runs", "3"]).sizes == (1_000, 5_000)
