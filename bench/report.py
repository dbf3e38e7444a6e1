"""What a run measured, the targets it is held to, and the Markdown report (pure)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from bench.stats import Summary

__all__ = [
    "BASE",
    "FULL_SCAN",
    "GRAPHQL",
    "HEALTH",
    "HEALTH_BESIDE",
    "LARGE",
    "REST",
    "WRITES_TARGET",
    "Build",
    "Check",
    "Load",
    "Results",
    "Size",
    "Writes",
    "checks",
    "headline",
    "render",
    "size_label",
]

HEALTH, REST, GRAPHQL, FULL_SCAN = "health", "REST", "GraphQL", "full scan"
HEALTH_BESIDE = "health, in the rounds of issue 10's figures"
BASE, LARGE = 10_000, 1_000_000
GROWTH_TARGET, HEALTH_TARGET, RATE_TARGET, WRITES_TARGET, LAG_TARGET = 1.2, 10.0, 30.0, 200, 1.0


@dataclass(frozen=True, slots=True)
class Build:
    """Starting the service on a database without rollups until ``checks.rollups`` is
    ready; ``state`` is the last one seen (``absent``: /health reports no rollups)."""

    state: str
    seconds: float | None
    service_peak_mb: float | None = None
    database_peak_mb: float | None = None


@dataclass(frozen=True, slots=True)
class Size:
    messages: int
    seeding: str
    build: Build
    latency: Mapping[str, Summary]
    """By path: HEALTH, REST, GRAPHQL, FULL_SCAN (small sizes) and extra figures."""


@dataclass(frozen=True, slots=True)
class Load:
    messages: int
    clients: int
    completed: int
    errors: int
    seconds: float
    latency: Summary | None

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds else 0.0


@dataclass(frozen=True, slots=True)
class Writes:
    """One write rate held for a while; ``lag`` None when no consumer position exists."""

    rate: int
    writes: int
    seconds: float
    lag: Summary | None
    unapplied: int
    reads: Summary | None
    wrong_reads: int
    retryable: bool = False
    """Sent as retryable writes (what drivers do by default), which SecantusDB records."""

    @property
    def achieved(self) -> float:
        return self.writes / self.seconds if self.seconds else 0.0

    @property
    def kept_up(self) -> bool:
        return (
            self.lag is not None
            and self.unapplied == 0
            and self.wrong_reads == 0
            and self.achieved >= 0.9 * self.rate
            and self.lag.p99 <= LAG_TARGET
        )


@dataclass(frozen=True, slots=True)
class Results:
    header: Sequence[tuple[str, str]]
    sizes: Sequence[Size]
    load: Load | None
    writes: Sequence[Writes]
    extra: Sequence[str] = ()
    """Labels of the figures measured beside ``metrics`` on the largest instance."""
    together: Mapping[str, Summary] | None = None
    """10k and 1M measured in the same rounds, each by its own service (``10k REST``,
    ``1M GraphQL`` ...): the growth ratio, with the database in one state for both."""


@dataclass(frozen=True, slots=True)
class Check:
    figure: str
    value: str
    target: str
    passed: bool | None
    """None: not measured, or not on the instance the target is for."""


def size_label(messages: int) -> str:
    for unit, suffix in ((1_000_000, "M"), (1_000, "k")):
        if messages >= unit and messages % unit == 0:
            return f"{messages // unit}{suffix}"
    return f"{messages:,}"


def ms(seconds: float) -> str:
    value = seconds * 1000
    return f"{value:,.0f}" if value >= 100 else f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def _ratio(value: float) -> str:
    return f"{value:.2f}x"


# --- targets ------------------------------------------------------------------------


def checks(results: Results) -> list[Check]:
    measured = [size for size in results.sizes if size.latency]
    by_size = {size.messages: size for size in measured}
    out = [_growth(by_size, path, results.together) for path in (REST, GRAPHQL)]
    out += [_against_health(size, (REST, GRAPHQL)) for size in measured]
    if results.extra:
        out.append(_against_health(results.sizes[-1], results.extra))
    builds = {size.messages: size.build for size in results.sizes}
    return [*out, _throughput(results.load), _consumer(results.writes), _build(builds)]


def _growth(
    by_size: Mapping[int, Size], path: str, together: Mapping[str, Summary] | None
) -> Check:
    """From the rounds that measure both together, when there are; the sizes' own
    phases (each right after its build) are shown beside it."""
    figure = f"{path}: latency(1M) / latency(10k), p50"
    target = f"≤ {GROWTH_TARGET}"
    if LARGE not in by_size or BASE not in by_size:
        return Check(figure, "not measured", target, None)
    phases = by_size[LARGE].latency[path].p50 / by_size[BASE].latency[path].p50
    if together is None:
        return Check(figure, _ratio(phases), target, phases <= GROWTH_TARGET)
    large, base = (together[f"{size_label(n)} {path}"].p50 for n in (LARGE, BASE))
    value = f"{_ratio(large / base)} together ({_ratio(phases)} in their own phases)"
    return Check(figure, value, target, large / base <= GROWTH_TARGET)


def _against_health(size: Size, paths: Sequence[str]) -> Check:
    """Each path's p50 over the lowest health p50 of the run's rounds at that size."""
    reference = min(size.latency[h].p50 for h in (HEALTH, HEALTH_BESIDE) if h in size.latency)
    ratios = {path: size.latency[path].p50 / reference for path in paths}
    value = ", ".join(f"{path} {_ratio(ratio)}" for path, ratio in ratios.items())
    figure = f"p50 / health p50 at {size_label(size.messages)}"
    return Check(figure, value, f"≤ {HEALTH_TARGET:g}x", max(ratios.values()) <= HEALTH_TARGET)


def _throughput(load: Load | None) -> Check:
    target = f"≥ {RATE_TARGET:g} requests/s on 1M"
    if load is None:
        return Check("throughput", "not measured", target, None)
    figure = f"throughput, {load.clients} clients on {size_label(load.messages)}"
    passed = load.rate >= RATE_TARGET if load.messages == LARGE else None
    return Check(figure, f"{load.rate:.2f} requests/s", target, passed)


def _consumer(writes: Sequence[Writes]) -> Check:
    figure = "consumer: highest write rate kept up"
    target = f"≥ {WRITES_TARGET} writes/s, lag p99 ≤ {LAG_TARGET:g} s"
    writes = [w for w in writes if not w.retryable]  # the target assumes plain writes
    if all(w.lag is None for w in writes):
        return Check(figure, "no lag measured (no consumer position)", target, None)
    kept = [w for w in writes if w.kept_up]
    if not kept:
        return Check(figure, f"none (from {writes[0].rate}/s)", target, False)
    best = max(kept, key=lambda w: w.rate)
    assert best.lag is not None
    value = f"{best.rate}/s (lag p99 {ms(best.lag.p99)} ms)"
    return Check(figure, value, target, best.rate >= WRITES_TARGET)


def _build(builds: Mapping[int, Build]) -> Check:
    figure = "initial build of 1M"
    build = builds.get(LARGE)
    if build is None or build.seconds is None:
        value = "not measured" if build is None else f"not ready ({build.state})"
        return Check(figure, value, "reported", None)
    return Check(figure, f"{build.seconds:,.0f} s", "reported", None)


# --- Markdown -----------------------------------------------------------------------


def _table(headers: str, rows: Sequence[str]) -> list[str]:
    """A Markdown table; the cells of the header and of each row separated by ``|``."""
    return [_row(headers), "|---" * (headers.count("|") + 1) + "|", *map(_row, rows), ""]


def _row(cells: str) -> str:
    return f"| {cells.replace('|', ' | ')} |"


def _verdict(passed: bool | None) -> str:
    return "—" if passed is None else "pass" if passed else "**FAIL**"


def headline(results: Results) -> str:
    rows = [f"{c.figure}|{c.value}|{c.target}|{_verdict(c.passed)}" for c in checks(results)]
    return "\n".join(_table("figure|value|target|result", rows))


def _ms(summary: Summary | None, field: str) -> str:
    return "" if summary is None else ms(getattr(summary, field))


def _latency(results: Results) -> list[str]:
    rows = [
        f"{size_label(size.messages)}|{path}|{'' if path in (HEALTH, FULL_SCAN) else state}|"
        f"{summary.n}|{ms(summary.p50)}|{ms(summary.p95)}"
        for size, state in ((size, size.build.state) for size in results.sizes)
        for path, summary in size.latency.items()
    ]
    rows += [
        f"{figure.split()[0]}|{figure.split(maxsplit=1)[1]}, together|ready|"
        f"{summary.n}|{ms(summary.p50)}|{ms(summary.p95)}"
        for figure, summary in (results.together or {}).items()
    ]
    return _table("messages|figure|rollups|n|p50 ms|p95 ms", rows)


def _builds(results: Results) -> list[str]:
    rows = []
    for size in results.sizes:
        b = size.build
        numbers = [b.seconds, b.service_peak_mb, b.database_peak_mb]
        shown = "|".join("" if x is None else f"{x:,.0f}" for x in numbers)
        rows.append(f"{size_label(size.messages)}|{size.seeding}|{b.state}|{shown}")
    return _table("messages|seeding|rollups|build s|service peak MB|database peak MB", rows)


def _load(load: Load) -> list[str]:
    row = (
        f"{size_label(load.messages)}|{load.clients}|{load.completed}|{load.errors}|"
        f"{load.seconds:.1f}|{load.rate:.2f}|{_ms(load.latency, 'p50')}|{_ms(load.latency, 'p95')}"
    )
    return _table("messages|clients|completed|errors|s|requests/s|p50 ms|p95 ms", [row])


def _writes(writes: Sequence[Writes]) -> list[str]:
    rows = [
        f"{w.rate}|{'retryable' if w.retryable else 'plain'}|{w.seconds:.0f}|"
        f"{w.achieved:.0f}|{w.writes}|{_ms(w.lag, 'p50')}|{_ms(w.lag, 'p99')}|"
        f"{_ms(w.lag, 'max')}|{w.unapplied}|{_ms(w.reads, 'p50')}|{_ms(w.reads, 'p95')}|"
        f"{w.wrong_reads}|{'yes' if w.kept_up else 'no'}"
        for w in writes
    ]
    headers = "target/s|sent as|s|achieved/s|writes|lag p50 ms|lag p99 ms|lag max ms|not applied|"
    return _table(headers + "read p50 ms|read p95 ms|wrong reads|kept up", rows)


_LATENCY_NOTE = (
    "One request at a time, the paths in interleaved rounds, warm-up discarded. REST is "
    "`GET /metrics/{name}`, GraphQL the full `metrics` query, health `GET /health`; every "
    "answer's `totalMessages` is checked. Full scan is today's pipeline "
    "(`build_metrics_pipeline`) through the driver from the harness: no HTTP, no rollups. "
    "`rollups` is `checks.rollups.state` when measuring (`absent`: no rollups in /health). "
    "Issue 10's figures are measured in rounds of their own, with health requests of "
    "their own; every ratio is to the lower of the two health p50s (health beside the "
    "series can be slower: it may also pay for freeing the larger answer before it)."
)
_BUILD_NOTE = (
    "The service starts on a database without rollups; build s is from its start until "
    "`checks.rollups.state` is `ready` (polled every 0.25 s). Service peak is its VmHWM; "
    "the database's RSS is sampled with each poll (one server holds every size)."
)
_WRITES_NOTE = (
    "Writes paced at the target rate from one client, up to 64 under way (alternately an "
    "insert and a status update moving `updatedAt`, in an instance of their own). Lag: "
    "from a write's acknowledgement until `rollup_state.appliedAt` reaches its "
    "`operationTime` (what a request waits for before it reads the rollups; polled every "
    "20 ms). Reads: one REST "
    "request about every second, checked against the inserts acknowledged around it. Kept "
    "up: ≥ 90% of the rate achieved, everything applied, lag p99 ≤ 1 s, no wrong read. "
    "The rates are sent as plain writes (about 1 ms each on SecantusDB, as the target "
    "assumes); the last round as retryable writes, as drivers send them by default: "
    "SecantusDB keeps each for 30 minutes and goes through all it keeps on every one, "
    "sorting them past 10,000, when each write costs it 3-5 ms (about 50 s into 200/s)."
)
_EXTRA_NOTE = (
    "Issue 10's figures (series and ranges on the largest instance, p50 ≤ 10x health): "
    "not measured yet; add them in `bench.harness.extra_queries`."
)


def render(results: Results) -> str:
    lines = ["# Metrics benchmark", ""]
    lines += [f"- **{key}**: {value}" for key, value in results.header]
    lines += ["", "## Targets", "", *headline(results).splitlines(), ""]
    lines += ["## Latency", "", _LATENCY_NOTE, "", *_latency(results)]
    lines += ["## Seeding and rollup build", "", _BUILD_NOTE, "", *_builds(results)]
    lines += ["## Throughput", "", "Clients sending REST requests back to back.", ""]
    lines += _load(results.load) if results.load else ["Not measured.", ""]
    lines += ["## Consumer under writes", "", _WRITES_NOTE, ""]
    lines += _writes(results.writes) if results.writes else ["Not measured.", ""]
    if not results.extra:
        lines += ["## Series and ranges", "", _EXTRA_NOTE, ""]
    return "\n".join(lines)
