"""Ratios, the Markdown report and the console summary, from results alone (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from bench.anatomy import READ_SLICE
from bench.model import (
    DRIVER,
    GRAPHQL,
    HEALTH,
    METRICS_PATHS,
    REST,
    ExplainStat,
    Figure,
    InsertStat,
    Ratio,
    Results,
    StageTiming,
    Summary,
    Throughput,
)

__all__ = [
    "compute_ratios",
    "concurrency_gain",
    "derive_notes",
    "find_summary",
    "format_ms",
    "redact_uri",
    "render_markdown",
    "single_targets",
    "size_label",
    "summary_lines",
]

_URI = re.compile(r"^(?P<scheme>[a-z0-9+.-]+://)(?:[^@/]*@)?(?P<hosts>[^/?#]*)", re.IGNORECASE)


def size_label(count: int) -> str:
    """10_000 -> "10k", 1_000_000 -> "1M", 2_500 -> "2.5k", 999 -> "999"."""
    for unit, scale in (("M", 1_000_000), ("k", 1_000)):
        if count >= scale:
            return f"{count / scale:g}{unit}"
    return str(count)


def redact_uri(uri: str) -> str:
    """Scheme and hosts of a connection string: no credentials, database or options."""
    match = _URI.match(uri.strip())
    if match is None:
        return "(unparsable URI)"
    return f"{match['scheme']}{match['hosts']}"


def format_ms(seconds: float | None) -> str:
    """Milliseconds with precision that suits the magnitude."""
    if seconds is None:
        return "n/a"
    ms = seconds * 1000
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 1000:
        return f"{ms:.1f}"
    return f"{ms:,.0f}"


def _format_ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}x"


def _format_count(value: int | None) -> str:
    return "n/a" if value is None else f"{value:,}"


# --- lookups -------------------------------------------------------------------------


def find_summary(figures: Iterable[Figure], target: str, path: str) -> Summary | None:
    for figure in figures:
        if figure.target == target and figure.path == path:
            return figure.summary
    return None


def _health(figures: Iterable[Figure]) -> Summary | None:
    return next((f.summary for f in figures if f.path == HEALTH), None)


def single_targets(figures: Iterable[Figure]) -> list[tuple[str, int]]:
    """Single-instance targets (label, messages), smallest first."""
    seen = {(f.target, f.messages) for f in figures if f.instances == 1}
    return sorted(seen, key=lambda item: item[1])


def _consolidated_targets(figures: Iterable[Figure]) -> list[tuple[str, int]]:
    seen = {(f.target, f.messages) for f in figures if f.instances > 1}
    return sorted(seen, key=lambda item: item[1])


def _ratio(numerator: Summary | None, denominator: Summary | None) -> float | None:
    if numerator is None or denominator is None or not denominator.median:
        return None
    return numerator.median / denominator.median


# --- ratios --------------------------------------------------------------------------


def _base(figures: Sequence[Figure], base: str | None) -> tuple[str, int] | None:
    singles = single_targets(figures)
    if base is None:
        return singles[0] if singles else None
    return next((single for single in singles if single[0] == base), None)


def compute_ratios(figures: Sequence[Figure], base: str | None = None) -> list[Ratio]:
    """Growth with size against ``base`` (default: the smallest single instance),
    consolidation, metrics over health, and API over the driver; every ratio compares
    medians measured in the same run."""
    found = _base(figures, base)
    if found is None:
        return []
    base, base_messages = found
    singles = single_targets(figures)
    larger = [(t, m) for t, m in singles if m > base_messages]
    ratios: list[Ratio] = []
    for target, messages in [*larger, *_consolidated_targets(figures)]:
        for path in METRICS_PATHS:
            ratios.append(
                Ratio(
                    name=f"{path}: latency({target}) / latency({base})",
                    value=_ratio(
                        find_summary(figures, target, path), find_summary(figures, base, path)
                    ),
                    note=f"messages x{messages / base_messages:g}",
                )
            )
    health = _health(figures)
    for path in (REST, GRAPHQL):
        ratios.append(
            Ratio(
                name=f"{path} metrics ({base}) / health",
                value=_ratio(find_summary(figures, base, path), health),
                note="a metrics request against a bare round trip",
            )
        )
    for target, _ in [*singles, *_consolidated_targets(figures)]:
        raw = find_summary(figures, target, DRIVER)
        for path in (REST, GRAPHQL):
            api = find_summary(figures, target, path)
            overhead = "" if api is None or raw is None else _overhead(api, raw)
            ratios.append(
                Ratio(name=f"{path} / driver ({target})", value=_ratio(api, raw), note=overhead)
            )
    return ratios


def _overhead(api: Summary, raw: Summary, *, min_runs: int = 3) -> str:
    """The API's cost over the bare aggregation, and whether it stands out of the noise
    (boxplot notches of the two medians overlap or not)."""
    delta = api.median - raw.median
    sign = "+" if delta >= 0 else "-"
    text = f"API overhead {sign}{format_ms(abs(delta))} ms (medians)"
    if min(api.n, raw.n) < min_runs:
        return f"{text}; too few runs to tell from noise"
    noise = api.notch + raw.notch
    if abs(delta) < noise:
        return f"{text}; not distinguishable from noise (±{format_ms(noise)} ms)"
    return text


# --- Markdown ------------------------------------------------------------------------


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], align: str) -> list[str]:
    """A Markdown table; ``align`` has one ``l`` or ``r`` per column."""
    rule = ["---:" if a == "r" else "---" for a in align]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(rule) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def _latency_section(figures: Sequence[Figure]) -> list[str]:
    rows = []
    for figure in figures:
        s = figure.summary
        per_message = (
            f"{s.median * 1e6 / figure.messages:.1f}"
            if figure.messages and figure.path != HEALTH
            else ""
        )
        rows.append(
            [
                figure.target,
                f"{figure.messages:,}" if figure.messages else "",
                figure.path,
                str(s.n),
                format_ms(s.median),
                format_ms(s.p95),
                format_ms(s.minimum),
                format_ms(s.maximum),
                f"{s.spread:.2f}",
                per_message,
            ]
        )
    header = [
        "target",
        "messages",
        "path",
        "n",
        "median ms",
        "p95 ms",
        "min ms",
        "max ms",
        "p95/median",
        "µs/message",
    ]
    return [
        "## Latency",
        "",
        "One request at a time; median and p95 over n measured runs, warm-up discarded.",
        "REST is `GET /metrics/{names}`, GraphQL the full `metrics` query on `POST /graphql`,",
        "driver the same aggregation through `AsyncMongoClient` in the harness (no HTTP,",
        "no auth, no instance lookup); health is `GET /health` (one `ping`).",
        "",
        *_table(header, rows, "lrlrrrrrrr"),
        "",
    ]


def _ratio_section(ratios: Sequence[Ratio]) -> list[str]:
    rows = [[r.name, _format_ratio(r.value), r.note] for r in ratios]
    return [
        "## Ratios",
        "",
        "Medians from the same run. Linear growth makes a size ratio equal the messages ratio.",
        "",
        *_table(["ratio", "value", "note"], rows, "lrl"),
        "",
    ]


def concurrency_gain(throughput: Throughput, figures: Sequence[Figure]) -> float | None:
    """Requests per second under load over one-at-a-time (1 / the sequential median of the
    same path and target): 1.0 means the clients gained nothing from concurrency."""
    alone = find_summary(figures, throughput.target, throughput.path)
    if alone is None or not alone.median or not throughput.seconds:
        return None
    return throughput.rps * alone.median


def _throughput_section(throughput: Throughput | None, figures: Sequence[Figure]) -> list[str]:
    if throughput is None:
        return []
    t = throughput
    latency = t.latency
    row = [
        t.target,
        t.path,
        str(t.clients),
        str(t.completed),
        str(t.errors),
        f"{t.seconds:.1f}",
        f"{t.rps:.2f}",
        format_ms(latency.median if latency else None),
        format_ms(latency.p95 if latency else None),
        _format_ratio(concurrency_gain(t, figures)),
    ]
    header = [
        "target",
        "path",
        "clients",
        "completed",
        "errors",
        "seconds",
        "requests/s",
        "median ms",
        "p95 ms",
        "vs one at a time",
    ]
    lines = [
        "## Throughput",
        "",
        f"{t.clients} concurrent clients, each sending its next request as soon as the last",
        "one answers, until the request or time bound; requests in flight at the time bound",
        "finish and count. Latency here is under that load. `vs one at a time` is requests/s",
        "over 1 / the sequential median of the same request (1.00x: concurrency gains nothing).",
        "",
        *_table(header, [row], "llrrrrrrrr"),
        "",
    ]
    if t.first_error:
        lines += [f"First error: `{t.first_error}`", ""]
    return lines


def _explain_section(explains: Sequence[ExplainStat]) -> list[str]:
    if not explains:
        return []
    rows = []
    for e in explains:
        per_message = (
            f"{e.docs_examined / e.messages:.2f}" if e.docs_examined is not None else "n/a"
        )
        rows.append(
            [
                e.target,
                f"{e.messages:,}",
                _format_count(e.docs_examined),
                _format_count(e.keys_examined),
                per_message,
                ", ".join(e.plan_stages) or "n/a",
                _format_count(e.cursor_ms),
            ]
        )
    header = [
        "target",
        "messages",
        "docs examined",
        "keys examined",
        "docs/message",
        "plan stages",
        "read ms",
    ]
    return [
        "## Documents examined per metrics request",
        "",
        "From `explain` with `executionStats` on the same pipeline; `read ms` is the",
        "`executionTimeMillis` the server reports for the read stage (index scan and fetch).",
        "",
        *_table(header, rows, "lrrrrlr"),
        "",
    ]


def _own_times(stages: Sequence[StageTiming]) -> list[tuple[str, float]]:
    """Each slice's own median: a facet's minus the read's, never below zero (a cheap facet
    can come out below the read alone by noise)."""
    read = next((s.summary.median for s in stages if s.stage == READ_SLICE), 0.0)
    return [
        (s.stage, s.summary.median if s.stage == READ_SLICE else max(0.0, s.summary.median - read))
        for s in stages
    ]


def _share(part: float, whole: float | None) -> str:
    return f"{part / whole:.0%}" if whole else "n/a"


def _stage_section(
    stages: Sequence[StageTiming], figures: Sequence[Figure], base: str
) -> list[str]:
    if not stages:
        return []
    full_summary = find_summary(figures, base, DRIVER)
    full = full_summary.median if full_summary else None
    own = dict(_own_times(stages))
    rows = [
        [
            s.stage,
            str(s.summary.n),
            format_ms(s.summary.median),
            format_ms(own[s.stage]),
            _share(own[s.stage], full),
        ]
        for s in stages
    ]
    summed = sum(own.values())
    rows.append(["sum of the slices (read once)", "", "", format_ms(summed), _share(summed, full)])
    if full is not None:
        rest = full - summed
        rows.append(
            [
                "rest: full minus the slices (`$facet` fan-out)",
                "",
                "",
                format_ms(rest),
                _share(rest, full),
            ]
        )
    return [
        f"## Where the time goes ({base}, driver)",
        "",
        "Each slice run alone: the read (`$match` + fetch, counted), then each `$facet`",
        "branch after the same read. `own ms` subtracts the read (0 when below it by noise);",
        f"`share` is over the full pipeline's driver median ({format_ms(full)} ms), whose rest",
        "is what running the branches together inside one `$facet` costs.",
        "",
        *_table(["slice", "n", "median ms", "own ms", "share"], rows, "lrrrr"),
        "",
    ]


def _insert_section(inserts: Sequence[InsertStat]) -> list[str]:
    rows = [
        [
            i.instance,
            f"{i.messages:,}",
            f"{i.generate_s:.1f}",
            f"{i.insert_s:.1f}",
            f"{i.rate:,.0f}",
        ]
        for i in inserts
    ]
    header = ["instance", "messages", "generate s", "insert s", "inserted/s"]
    return [
        "## Dataset",
        "",
        "`resolvers.seed.generate_messages`, inserted with `insert_many(ordered=False)` in",
        "batches, indexes in place; insert time excludes generation.",
        "",
        *_table(header, rows, "lrrrr"),
        "",
    ]


def render_markdown(results: Results, ratios: Sequence[Ratio]) -> str:
    env = results.environment
    found = _base(results.figures, results.base_target or None)
    base = found[0] if found else "?"
    lines = [
        "# Metrics benchmark",
        "",
        f"- **Date**: {env.date}",
        f"- **Machine**: {env.cpu_count} CPUs ({env.cpu_model}), {env.platform}, "
        f"Python {env.python}",
        f"- **Database**: {env.database}",
        f"- **Run time**: {results.elapsed_s / 60:.1f} min",
        "- **Settings**: " + ", ".join(f"{k} {v}" for k, v in results.settings),
        "",
        *_latency_section(results.figures),
        *_ratio_section(ratios),
        *_throughput_section(results.throughput, results.figures),
        *_explain_section(results.explains),
        *_stage_section(results.stages, results.figures, base),
        *_insert_section(results.inserts),
    ]
    if results.notes:
        lines += ["## Notes", "", *[f"- {note}" for note in results.notes], ""]
    return "\n".join(lines)


def _timeout_notes(
    figures: Sequence[Figure], throughput: Throughput | None, timeout_s: float
) -> list[str]:
    slow = sorted(
        {
            f"{f.target} {f.path}"
            for f in figures
            if f.path in (REST, GRAPHQL) and f.summary.maximum > timeout_s
        }
    )
    if throughput is not None and throughput.latency and throughput.latency.maximum > timeout_s:
        slow.append(f"{throughput.target} {throughput.path} under {throughput.clients} clients")
    if not slow:
        return []
    return [
        f"Over the service's default query timeout ({timeout_s:g} s, "
        "REQUEST_TIMEOUT_MS): " + ", ".join(slow) + ". With the default these answer "
        "503 UNAVAILABLE; the harness raises the timeout for its run."
    ]


def derive_notes(
    *,
    figures: Sequence[Figure],
    explains: Sequence[ExplainStat],
    stages: Sequence[StageTiming],
    throughput: Throughput | None,
    base: str | None = None,
    few_runs: int = 5,
    default_timeout_s: float | None = None,
) -> list[str]:
    """Things worth a second look, read off the results. ``default_timeout_s`` is the
    service's default query timeout, which the harness raises for its run."""
    notes = []
    for e in explains:
        if "COLLSCAN" in e.plan_stages:
            notes.append(f"{e.target}: COLLSCAN in the plan: the read does not use an index.")
        if e.docs_examined is not None and e.docs_examined > e.messages:
            notes.append(
                f"{e.target}: {e.docs_examined:,} documents examined for "
                f"{e.messages:,} messages: the read touches other instances' messages."
            )
    if explains and all(e.docs_examined is None for e in explains):
        notes.append("explain reports no totalDocsExamined on this server (n/a above).")
    if stages:
        found = _base(figures, base)
        full = find_summary(figures, found[0], DRIVER) if found else None
        name, slowest = max(_own_times(stages), key=lambda item: item[1])
        if full is not None:
            share = f"{_share(slowest, full.median)} of the full pipeline"
        else:
            share = f"{_share(slowest, sum(t for _, t in _own_times(stages)))} of the slices"
        notes.append(f"Slowest slice: {name}, {share}.")
    short = sorted(
        {f"{f.target} {f.path} (n={f.summary.n})" for f in figures if f.summary.n < few_runs}
    )
    if short:
        notes.append(
            "Fewer than "
            f"{few_runs} runs (requests slower than the time budget; raise --budget for more): "
            + ", ".join(short)
            + "."
        )
    if default_timeout_s is not None:
        notes += _timeout_notes(figures, throughput, default_timeout_s)
    if throughput is not None and throughput.errors:
        notes.append(f"Throughput: {throughput.errors} requests failed.")
    return notes


def summary_lines(results: Results, ratios: Sequence[Ratio]) -> list[str]:
    """A few console lines: database, medians per target and path, throughput, growth."""
    lines = [f"database: {results.environment.database}"]
    targets: dict[str, list[str]] = {}
    for figure in results.figures:
        s = figure.summary
        targets.setdefault(figure.target, []).append(
            f"{figure.path} {format_ms(s.median)} ms (p95 {format_ms(s.p95)}, n={s.n})"
        )
    lines += [f"{target}: " + "; ".join(parts) for target, parts in targets.items()]
    t = results.throughput
    if t is not None:
        lines.append(
            f"throughput {t.target} {t.path}, {t.clients} clients: {t.rps:.2f} req/s "
            f"({t.completed} requests, {t.errors} errors; "
            f"{_format_ratio(concurrency_gain(t, results.figures))} one at a time)"
        )
    lines += [
        f"{r.name}: {_format_ratio(r.value)}"
        for r in ratios
        if r.name.startswith((f"{REST}: ", f"{DRIVER}: ")) or "/ health" in r.name
    ]
    return lines
