"""``python -m bench``: build the dataset, start the service, measure, write the report."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

from bench.anatomy import cursor_millis, docs_examined, keys_examined, plan_stages
from bench.database import Target, open_target
from bench.dataset import BenchInstance, create_bench_account, create_filled_instance
from bench.measure import (
    MeasurementError,
    Probe,
    driver_probe,
    explain_metrics,
    graphql_probe,
    health_probe,
    measure_load,
    measure_rounds,
    rest_probe,
    time_slices,
    warm_up,
)
from bench.model import (
    HEALTH,
    Environment,
    ExplainStat,
    Figure,
    Results,
    StageTiming,
    Throughput,
)
from bench.report import compute_ratios, derive_notes, render_markdown, size_label, summary_lines
from bench.service import run_service
from bench.stats import summarize
from graph.settings import Settings
from resolvers import Database, ensure_indexes, open_client

__all__ = ["Options", "main", "parse_args"]

RESULTS = Path(__file__).resolve().parent / "results"
LARGE = 1_000_000
HEALTH_WARMUP = 20


@dataclass(frozen=True, slots=True)
class Options:
    sizes: tuple[int, ...]
    consolidated: int
    runs: int
    min_runs: int
    budget_s: float
    warmup: int
    health_runs: int
    stage_runs: int
    clients: int
    load_requests: int
    load_seconds: float
    batch: int
    days: int
    request_timeout_s: float
    overhead_size: int
    output: Path

    @property
    def base_label(self) -> str:
        """The instance growth is measured from, and the pipeline is sliced on."""
        return size_label(self.sizes[0])

    def settings(self) -> tuple[tuple[str, str], ...]:
        """How the run was configured, for the report header."""
        base = self.base_label
        sizes = self.sizes
        if 0 < self.overhead_size < sizes[0]:
            sizes = (self.overhead_size, *sizes)
        return (
            ("sizes", ", ".join(size_label(s) for s in sizes)),
            ("consolidated", f"{self.consolidated}x{base}"),
            (
                "runs",
                f"≤{self.runs} per figure, at least {self.min_runs}, "
                f"stopping after ~{self.budget_s:g} s per path and target",
            ),
            (
                "warm-up",
                f"{self.warmup} rounds on the smallest instance, {HEALTH_WARMUP} health "
                "requests; explain reads each target's documents before its timings",
            ),
            (
                "load",
                f"{self.clients} clients, ≤{self.load_requests} requests or "
                f"{self.load_seconds:g} s",
            ),
            (
                "service",
                "1 uvicorn worker, RATE_LIMIT_PER_MINUTE=1000000, MAX_IN_FLIGHT=1000000, "
                "MAX_IN_FLIGHT_PER_TOKEN=1000000, "
                f"REQUEST_TIMEOUT_MS={int(self.request_timeout_s * 1000)}",
            ),
        )


@dataclass(frozen=True, slots=True)
class Group:
    """What one metrics request asks for: one instance, or several summed."""

    label: str
    instances: tuple[BenchInstance, ...]

    @property
    def messages(self) -> int:
        return sum(i.messages for i in self.instances)

    @property
    def names(self) -> list[str]:
        return [i.ref.name for i in self.instances]


@dataclass(frozen=True, slots=True)
class Dataset:
    account_token: str
    groups: tuple[Group, ...]  # by messages, smallest first
    instances: tuple[BenchInstance, ...]  # in creation order


@dataclass(frozen=True, slots=True)
class Measured:
    figures: tuple[Figure, ...]
    explains: tuple[ExplainStat, ...]
    stages: tuple[StageTiming, ...]
    throughput: Throughput | None


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --- arguments -------------------------------------------------------------------------


def _sizes(text: str) -> tuple[int, ...]:
    sizes = tuple(sorted({int(part.replace("_", "")) for part in text.split(",") if part}))
    if not sizes or sizes[0] <= 0:
        raise argparse.ArgumentTypeError("sizes are positive integers, comma-separated")
    return sizes


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="Measure metrics latency and throughput against instance size. "
        "Uses MONGODB_URI (a fresh database, dropped afterwards) or an in-memory SecantusDB.",
    )
    add = parser.add_argument
    add("--sizes", type=_sizes, default=(10_000, 100_000), help="instance sizes (10000,100000)")
    add("--large", action="store_true", help=f"also an instance of {LARGE:,} messages (slow)")
    add("--consolidated", type=int, default=3, help="instances summed in one request (3)")
    add("--runs", type=int, default=50, help="most measured runs per figure (50)")
    add("--min-runs", type=int, default=3, help="fewest measured runs per figure (3)")
    add("--budget", type=float, default=30.0, help="seconds per path and target (30)")
    add("--warmup", type=int, default=2, help="discarded rounds on the smallest instance (2)")
    add("--health-runs", type=int, default=200, help="GET /health runs (200)")
    add("--stage-runs", type=int, default=2, help="runs per pipeline slice, 0 = skip (2)")
    add("--clients", type=int, default=16, help="concurrent clients for throughput (16)")
    add("--load-requests", type=int, default=1000, help="throughput request bound (1000)")
    add("--load-seconds", type=float, default=20.0, help="throughput time bound (20)")
    add("--batch", type=int, default=5_000, help="documents per insert_many (5000)")
    add("--days", type=int, default=180, help="days the messages spread over (180)")
    add("--request-timeout", type=float, default=1800.0, help="seconds per request (1800)")
    add(
        "--overhead-size",
        type=int,
        default=100,
        help="a tiny instance where the API overhead stands out of the database time; 0 = none",
    )
    add("--output", type=Path, default=RESULTS, help="report directory (bench/results)")
    args = parser.parse_args(argv)
    sizes = tuple(sorted({*args.sizes, LARGE})) if args.large else args.sizes
    return Options(
        sizes=sizes,
        consolidated=max(1, args.consolidated),
        runs=max(1, args.runs),
        min_runs=max(1, min(args.min_runs, args.runs)),
        budget_s=args.budget,
        warmup=max(0, args.warmup),
        health_runs=max(1, args.health_runs),
        stage_runs=max(0, args.stage_runs),
        clients=max(1, args.clients),
        load_requests=max(1, args.load_requests),
        load_seconds=args.load_seconds,
        batch=max(1, args.batch),
        days=max(1, args.days),
        request_timeout_s=args.request_timeout,
        overhead_size=max(0, args.overhead_size),
        output=args.output,
    )


# --- dataset -----------------------------------------------------------------------------


def _client(target: Target, options: Options) -> AsyncMongoClient[dict[str, Any]]:
    """The harness's own client: the driver path, explain, and the dataset."""
    return open_client(
        target.uri,
        server_selection_timeout_ms=10_000,
        socket_timeout_ms=int(options.request_timeout_s * 1000) + 5_000,
    )


def _plan(options: Options) -> tuple[list[tuple[str, int]], list[str], list[str]]:
    """(name, messages) of every instance to create, the single-instance request names,
    and the names summed by the consolidated request."""
    base = options.sizes[0]
    singles = [(f"bench-{size_label(size)}", size) for size in options.sizes]
    if 0 < options.overhead_size < base:
        singles.insert(0, (f"bench-{size_label(options.overhead_size)}", options.overhead_size))
    base_name = f"bench-{size_label(base)}"
    extras = [(f"{base_name}-{i}", base) for i in range(2, options.consolidated + 1)]
    consolidated = [base_name, *(name for name, _ in extras)] if extras else []
    return [*singles, *extras], [name for name, _ in singles], consolidated


async def _fill(db: Database, options: Options) -> Dataset:
    now = datetime.now(UTC)
    await ensure_indexes(db)
    account_id, token = await create_bench_account(db=db, now=now)
    plan, single_names, consolidated = _plan(options)
    created: dict[str, BenchInstance] = {}
    for seed, (name, count) in enumerate(plan):
        log(f"inserting {count:,} messages into {name} ...")
        instance = await create_filled_instance(
            db=db,
            account_id=account_id,
            name=name,
            messages=count,
            seed=seed,
            days=options.days,
            now=now,
            batch=options.batch,
            progress=log,
        )
        stat = instance.insert
        log(
            f"  {stat.insert_s:.1f} s insert ({stat.rate:,.0f}/s), {stat.generate_s:.1f} s generate"
        )
        created[name] = instance
    groups = [Group(size_label(created[n].messages), (created[n],)) for n in single_names]
    if consolidated:
        label = f"{len(consolidated)}x{size_label(options.sizes[0])}"
        groups.append(Group(label, tuple(created[n] for n in consolidated)))
    groups.sort(key=lambda g: g.messages)
    return Dataset(account_token=token, groups=tuple(groups), instances=tuple(created.values()))


async def prepare(target: Target, options: Options) -> Dataset:
    client = _client(target, options)
    async with client:
        return await _fill(client[target.database], options)


# --- measurements ------------------------------------------------------------------------


def _probes(http: httpx.AsyncClient, db: Database, group: Group, token: str) -> list[Probe]:
    refs = [i.ref for i in group.instances]
    expected = group.messages
    return [
        rest_probe(http, names=group.names, token=token, expected=expected),
        graphql_probe(http, names=group.names, token=token, expected=expected),
        driver_probe(db, refs=refs, expected=expected),
    ]


async def _health(http: httpx.AsyncClient, options: Options) -> Figure:
    probe = health_probe(http)
    await warm_up([probe], HEALTH_WARMUP)
    samples = await measure_rounds(
        [probe], runs=options.health_runs, min_runs=options.min_runs, budget_s=options.budget_s
    )
    return Figure("-", 0, HEALTH, summarize(samples[HEALTH]), instances=0)


async def _explain(db: Database, group: Group) -> ExplainStat:
    output = await explain_metrics(db, [i.ref for i in group.instances])
    return ExplainStat(
        target=group.label,
        messages=group.messages,
        docs_examined=docs_examined(output),
        keys_examined=keys_examined(output),
        plan_stages=plan_stages(output),
        cursor_ms=cursor_millis(output),
    )


async def _latency(probes: list[Probe], group: Group, options: Options) -> list[Figure]:
    samples = await measure_rounds(
        probes, runs=options.runs, min_runs=options.min_runs, budget_s=options.budget_s
    )
    return [
        Figure(group.label, group.messages, path, summarize(times), len(group.instances))
        for path, times in samples.items()
    ]


async def _throughput(probe: Probe, group: Group, options: Options) -> Throughput:
    load = await measure_load(
        probe,
        clients=options.clients,
        max_requests=options.load_requests,
        max_seconds=options.load_seconds,
    )
    return Throughput(
        target=group.label,
        path=probe.path,
        clients=options.clients,
        completed=load.completed,
        errors=load.errors,
        seconds=load.seconds,
        latency=summarize(load.latencies) if load.latencies else None,
        first_error=load.first_error,
    )


async def _measure_with(
    http: httpx.AsyncClient, db: Database, data: Dataset, options: Options
) -> Measured:
    token = data.account_token
    figures = [await _health(http, options)]
    log(f"health: median {figures[0].summary.median * 1000:.2f} ms")
    smallest = next(g for g in data.groups if len(g.instances) == 1)
    base = next(g for g in data.groups if g.label == options.base_label)
    log(f"warm-up: {options.warmup} rounds on {smallest.label}")
    await warm_up(_probes(http, db, smallest, token), options.warmup)
    explains = []
    for group in data.groups:
        log(f"{group.label}: explain, then latency ...")
        explains.append(await _explain(db, group))  # also reads every document once
        latest = await _latency(_probes(http, db, group, token), group, options)
        figures += latest
        log("  " + "; ".join(f"{f.path} {f.summary.median * 1000:,.1f} ms" for f in latest))
    stages: list[StageTiming] = []
    if options.stage_runs:
        log(f"pipeline slices on {base.label} ...")
        stages = await time_slices(db, [i.ref for i in base.instances], options.stage_runs)
    log(f"throughput: {options.clients} clients on {base.label} ...")
    rest = _probes(http, db, base, token)[0]
    throughput = await _throughput(rest, base, options)
    return Measured(tuple(figures), tuple(explains), tuple(stages), throughput)


async def measure(target: Target, base_url: str, data: Dataset, options: Options) -> Measured:
    client = _client(target, options)
    limits = httpx.Limits(max_connections=options.clients + 4)
    timeout = httpx.Timeout(options.request_timeout_s)
    async with (
        client,
        httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as http,
    ):
        return await _measure_with(http, client[target.database], data, options)


# --- the run -----------------------------------------------------------------------------


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _default_query_timeout_s() -> float | None:
    field = Settings.model_fields.get("request_timeout_ms")
    default = field.default if field is not None else None
    return default / 1000 if isinstance(default, int | float) else None


def environment(database: str) -> Environment:
    return Environment(
        date=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu_count=os.cpu_count() or 0,
        cpu_model=_cpu_model(),
        platform=platform.platform(),
        python=platform.python_version(),
        database=database,
    )


def run(options: Options) -> Results:
    started = time.perf_counter()
    with open_target(os.environ.get("MONGODB_URI")) as target:
        log(f"database: {target.description}")
        data = asyncio.run(prepare(target, options))
        timeout_ms = int(options.request_timeout_s * 1000)
        with run_service(
            uri=target.uri, database=target.database, request_timeout_ms=timeout_ms
        ) as service:
            log(f"service: {service.base_url}")
            try:
                measured = asyncio.run(measure(target, service.base_url, data, options))
            except MeasurementError:
                log(f"service log:\n{service.log_tail()}")
                raise
    return Results(
        environment=environment(target.description),
        settings=options.settings(),
        inserts=tuple(i.insert for i in data.instances),
        figures=measured.figures,
        explains=measured.explains,
        stages=measured.stages,
        throughput=measured.throughput,
        elapsed_s=time.perf_counter() - started,
        notes=tuple(
            derive_notes(
                figures=measured.figures,
                explains=measured.explains,
                stages=measured.stages,
                throughput=measured.throughput,
                base=options.base_label,
                default_timeout_s=_default_query_timeout_s(),
            )
        ),
        base_target=options.base_label,
    )


def write(results: Results, output: Path) -> Path:
    from bench.plot import plot_latency  # matplotlib only when writing

    output.mkdir(parents=True, exist_ok=True)
    ratios = compute_ratios(results.figures, results.base_target or None)
    report = output / "latest.md"
    report.write_text(render_markdown(results, ratios), encoding="utf-8")
    raw = {"results": asdict(results), "ratios": [asdict(r) for r in ratios]}
    (output / "latest.json").write_text(json.dumps(raw, indent=2, default=str), encoding="utf-8")
    plot_latency(results, output / "latency.png")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    results = run(options)
    report = write(results, options.output)
    print(f"report: {report}")
    print(f"plot: {options.output / 'latency.png'}")
    print(f"run time: {results.elapsed_s / 60:.1f} min")
    for line in summary_lines(
        results, compute_ratios(results.figures, results.base_target or None)
    ):
        print(f"  {line}")
    return 0
