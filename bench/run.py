"""``python -m bench``: seed (or reuse), serve, measure, report; ``--help`` lists the knobs."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from bench import harness
from bench.report import (
    BASE,
    FULL_SCAN,
    GRAPHQL,
    HEALTH,
    HEALTH_BESIDE,
    LARGE,
    REST,
    WRITES_TARGET,
    Results,
    Size,
    headline,
    render,
)
from bench.report import size_label as label
from bench.stats import Summary, summarize
from graph.embedded import EmbeddedDatabase

__all__ = ["main", "parse_args", "parse_sizes"]

ROOT = Path(__file__).resolve().parent.parent
FULL_SCAN_MAX, SEED = 100_000, 1
DATABASE = "one database per size, seeded once and reused; one `message-metrics serve` per size"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_sizes(text: str) -> tuple[int, ...]:
    """``1k,10k,1M`` (or plain numbers), ascending, without repeats."""
    units = {"k": 1_000, "m": 1_000_000}
    parts = [p.strip().lower().replace("_", "") for p in text.split(",") if p.strip()]
    try:
        sizes = {int(p[:-1]) * units[p[-1]] if p[-1] in units else int(p) for p in parts}
    except ValueError:
        raise argparse.ArgumentTypeError(f"not sizes: {text!r} (e.g. 1k,10k,1M)") from None
    if not sizes or min(sizes) <= 0:
        raise argparse.ArgumentTypeError(f"not sizes: {text!r} (e.g. 1k,10k,1M)")
    return tuple(sorted(sizes))


def _rates(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(","))


_OPTIONS = (  # flag, type, default, help
    ("--sizes", parse_sizes, "1k,10k,100k,1M", "messages per instance, one database each"),
    ("--data-dir", Path, ".data/bench", "where the database persists between runs"),
    ("--runs", int, 100, "rounds of REST, GraphQL and health per size at most"),
    ("--scan-runs", int, 10, "full-scan runs per size at most"),
    ("--min-runs", int, 3, "runs at least, past the budget"),
    ("--budget", float, 30.0, "seconds of rounds per size"),
    ("--clients", int, 16, "concurrent clients for throughput"),
    ("--load-seconds", float, 20.0, "throughput duration"),
    ("--rates", _rates, "100,200,400", "message writes/s, in turn"),
    ("--write-seconds", float, 20.0, "seconds per write rate"),
    ("--retryable-seconds", float, 60.0, f"then retryable writes at {WRITES_TARGET}/s (0: none)"),
    ("--build-timeout", float, 3600.0, "seconds to wait for the rollups"),
    ("--output", Path, "bench/results/latest.md", "the report"),
)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    for flag, kind, default, text in _OPTIONS:
        parser.add_argument(flag, type=kind, default=default, help=f"{text} ({default})")
    quick = {"action": "store_const", "const": "1k,10k", "help": "sizes 1k,10k"}
    parser.add_argument("--quick", dest="sizes", **quick)  # type: ignore[arg-type]
    args = parser.parse_args(argv)
    if isinstance(args.sizes, str):  # a const does not go through `type`
        args.sizes = parse_sizes(args.sizes)
    args.data_dir, args.output = ROOT / args.data_dir, ROOT / args.output
    return args


async def _size(args: Any, server: EmbeddedDatabase, client: Any, size: int, out: Any) -> Size:
    """Seed or reuse, serve, wait for the rollups, measure; on the largest size also
    throughput and the consumer under writes (into ``out``)."""
    log(f"{label(size)}: preparing the database")
    prep = await harness.prepare(client=client, size=size, seed=SEED, log=log)
    largest = size == args.sizes[-1]
    async with harness.service(uri=server.uri, database=prep.db.name) as svc:
        log(f"{label(size)}: {prep.seeding}; waiting for the rollups")
        build = await svc.wait_built(db_pid=_pid(server), timeout=args.build_timeout, log=log)
        log(f"{label(size)}: rollups {build.state} after {build.seconds or 0:.1f} s")
        if build.seconds is None and build.state not in ("absent", "off"):
            return Size(size, prep.seeding, build, {})  # not ready: nothing to measure
        token, name = prep.token, prep.ref.name
        query = {"query": harness.METRICS, "variables": {"instances": [name]}}
        calls = {
            HEALTH: svc.request("/health"),
            REST: svc.request(f"/metrics/{name}", token=token, total=size),
            GRAPHQL: svc.request("/graphql", token=token, graphql=query, total=size),
        }
        limits = {"min_runs": args.min_runs, "budget": args.budget}
        samples = await harness.rounds(calls, runs=args.runs, **limits)
        # issue 10's queries in rounds of their own (with health): a slow one must not
        # cut the rounds of the metrics figures
        extras = {HEALTH: calls[HEALTH]}
        for figure, text, variables in harness.extra_queries(instance=name) if largest else []:
            payload = {"query": text, "variables": variables}
            extras[figure] = svc.request("/graphql", token=token, graphql=payload)
        if len(extras) > 1:
            beside = await harness.rounds(extras, runs=args.runs, **limits)
            samples |= {HEALTH_BESIDE if f == HEALTH else f: times for f, times in beside.items()}
        if size <= FULL_SCAN_MAX:
            scan = {FULL_SCAN: harness.full_scan(prep.db, prep.ref, expected=size)}
            samples |= await harness.rounds(scan, runs=args.scan_runs, **limits)
        if largest:
            log(f"{label(size)}: {args.clients} clients for {args.load_seconds:g} s")
            load = {"messages": size, "clients": args.clients, "seconds": args.load_seconds}
            out["load"] = await harness.load(calls[REST], **load)
            log(f"{label(size)}: writes at {args.rates}/s")
            async with AsyncMongoClient[Any](server.uri, retryWrites=False) as plain:
                writing = harness.Writing(prep=prep, svc=svc, writer=plain[prep.db.name])
                found = await writing.rates(args.rates, seconds=args.write_seconds, log=log)
            if args.retryable_seconds > 0:
                writing.writer = prep.db  # the same counts of what was written so far
                found.append(await writing.hold(WRITES_TARGET, args.retryable_seconds, log=log))
            out["writes"] = found
    return Size(size, prep.seeding, build, {k: summarize(v) for k, v in samples.items()})


def _pid(server: EmbeddedDatabase) -> int:
    return server._process.pid  # type: ignore[union-attr]  # EmbeddedDatabase shows no pid


def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def _machine() -> str:
    lines = Path("/proc/cpuinfo").read_text().splitlines()
    model = next((ln.split(":")[1].strip() for ln in lines if ln.startswith("model name")), "?")
    memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{os.cpu_count()} CPUs ({model}), {memory:.0f} GB RAM, {platform.platform()}"


def _header(args: argparse.Namespace, server: str, started: datetime) -> list[tuple[str, str]]:
    git = ["git", "describe", "--always", "--dirty"]
    commit = subprocess.run(git, cwd=ROOT, capture_output=True, text=True, check=False).stdout
    versions = (
        f"message-metrics {version('message-metrics')} ({commit.strip() or '?'}), Python "
        f"{platform.python_version()}, PyMongo {version('pymongo')}, SecantusDB "
        f"{version('secantusdb')} (reports MongoDB {server})"
    )
    settings = (
        f"sizes {', '.join(map(label, args.sizes))}; rounds ≤ {args.runs} (full scan "
        f"≤ {args.scan_runs}, up to {label(FULL_SCAN_MAX)}), at least {args.min_runs}, "
        f"~{args.budget:g} s each; {args.clients} clients for {args.load_seconds:g} s; "
        f"writes {', '.join(map(str, args.rates))}/s for {args.write_seconds:g} s each, "
        f"then {WRITES_TARGET}/s retryable for {args.retryable_seconds:g} s; "
        f"service env {', '.join(f'{k}={v}' for k, v in harness.SERVICE_ENV.items())}"
    )
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    return [
        ("Date", f"{started:%Y-%m-%d %H:%M} UTC, run time {minutes:.1f} min"),
        ("Machine", _machine()),
        ("Versions", versions),
        (
            "Database",
            f"embedded SecantusDB on 127.0.0.1, data in `{_shown(args.data_dir)}`, {DATABASE}",
        ),
        ("Settings", settings),
    ]


async def _measure(args: argparse.Namespace, server: EmbeddedDatabase) -> Results:
    started = datetime.now(UTC)
    out: dict[str, Any] = {"load": None, "writes": []}
    async with AsyncMongoClient[Any](server.uri) as client:
        sizes = [await _size(args, server, client, size, out) for size in args.sizes]
        measured = {size.messages for size in sizes if size.latency}
        together = None
        if {BASE, LARGE} <= measured:
            together = await _together(args, server, client)
        build_info = await client.admin.command("buildInfo")
    shared = (HEALTH, HEALTH_BESIDE, REST, GRAPHQL, FULL_SCAN)
    extra = [f for f in sizes[-1].latency if f not in shared]
    header = _header(args, str(build_info.get("version")), started)
    return Results(header, sizes, out["load"], out["writes"], extra, together)


async def _together(
    args: argparse.Namespace, server: EmbeddedDatabase, client: Any
) -> dict[str, Summary] | None:
    """10k and 1M again, each by its own service as before, in the same rounds: the
    ratio of their latencies with the database in one state (each size's own phase
    follows its build, which leaves the embedded database slower for a while). Both
    build their rollups again: a service started on the rollups an earlier phase built
    may find its resume token gone from the oplog (the larger sizes' builds and writes
    since) and rebuild while measured, answering by the full scan meanwhile."""
    log("10k and 1M together")
    calls: dict[str, harness.Call] = {}
    services: list[harness.Service] = []
    async with contextlib.AsyncExitStack() as stack:
        for size in (BASE, LARGE):
            prep = await harness.prepare(client=client, size=size, seed=SEED, log=log)
            svc = await stack.enter_async_context(
                harness.service(uri=server.uri, database=prep.db.name)
            )
            await svc.wait_built(db_pid=_pid(server), timeout=args.build_timeout, log=log)
            services.append(svc)
            name = prep.ref.name
            query = {"query": harness.METRICS, "variables": {"instances": [name]}}
            calls[f"{label(size)} {REST}"] = svc.request(
                f"/metrics/{name}", token=prep.token, total=size
            )
            calls[f"{label(size)} {GRAPHQL}"] = svc.request(
                "/graphql", token=prep.token, graphql=query, total=size
            )
        found = await harness.rounds(
            calls, runs=args.runs, min_runs=args.min_runs, budget=args.budget
        )
        states = [(await svc.rollups())["state"] for svc in services]
    if states != ["ready", "ready"]:  # some answers may have come from the full scan
        log(f"10k and 1M together: not judged, rollups {states} after the rounds")
        return None
    return {figure: summarize(times) for figure, times in found.items()}


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    for stop in (signal.SIGINT, signal.SIGTERM):  # even when started in the background
        signal.signal(stop, signal.default_int_handler)  # stops the service and database
    clock = time.monotonic()
    with EmbeddedDatabase(data_dir=args.data_dir, startup_timeout=600) as server:
        results = asyncio.run(_measure(args, server))
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(render(results), encoding="utf-8")
    print(headline(results))
    log(f"report: {args.output} ({(time.monotonic() - clock) / 60:.1f} min)")
    return 0
